"""Nothing unpickles and no XML parser resolves entities: checked in the source and at run time.

The source check parses every module of the product (``ast``, not a text search, so comments
and docstrings do not count) and refuses: ``pickle``/``cPickle``/``dill``/``cloudpickle``/
``joblib``/``shelve``/``marshal`` loads, ``pandas.read_pickle``, ``torch.load`` without
``weights_only=True``, ``numpy.load(..., allow_pickle=True)``, ``yaml.load`` without a safe
loader, and the standard library's or lxml's XML parsers (``defusedxml`` is the one allowed).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, idou_env

PRODUCT = ("idou", "geo", "inference", "training", "models", "scripts", "benchmarks")
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
              ("_pickle", "load"), ("_pickle", "loads"), ("cPickle", "load"),
              ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
              ("cloudpickle", "loads"), ("joblib", "load"), ("shelve", "open"),
              ("marshal", "load"), ("marshal", "loads"), ("pandas", "read_pickle"),
              ("numpy", "load"), ("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
              ("yaml", "full_load")}
# Calls that parse XML idou itself made or ships (never a user's file): (file, call prefix).
TRUSTED_XML = {("geo/review/qgis_project.py", "ET.fromstring(ET.tostring(srs))"),  # its own element
               ("geo/review/qgis_project.py", "ET.fromstring(load_qml(layer)"),  # packaged styles
               ("geo/review/qgis_styles.py", "minidom.parseString(body")}  # QML it generated
XML_PARSERS = {"parse", "fromstring", "iterparse", "XML", "XMLParser", "parseString",
               "XMLPullParser", "fromstringlist", "make_parser"}


def _sources() -> list[Path]:
    files = []
    for top in PRODUCT:
        folder = REPO / top
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name → dotted origin for every import in a module (any nesting level)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _origin(func: ast.expr, names: dict[str, str]) -> str | None:
    """Dotted origin of a called name or attribute chain (``ET.fromstring`` → xml...)."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    base = names.get(func.id, func.id)
    return ".".join([base, *reversed(parts)])


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_calls(path: Path, root: Path = REPO) -> list[str]:
    """``file:line: call`` (relative to ``root``) for every unsafe load or XML parse."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = _imports(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        origin = _origin(node.func, names)
        if origin is None:
            continue
        head, _, last = origin.rpartition(".")
        top = head.split(".")[0]
        bad = False
        if (top, last) in UNPICKLERS or (head, last) in UNPICKLERS:
            if top == "torch":
                bad = _kw(node, "weights_only") is not True
            elif top == "numpy":
                bad = _kw(node, "allow_pickle") not in (None, False)
            elif top == "yaml" and last == "load":
                loader = _kw(node, "Loader")
                bad = loader is None or "Safe" not in ast.unparse(
                    next(k.value for k in node.keywords if k.arg == "Loader"))
            else:
                bad = True
        elif top in ("xml", "lxml") and last in XML_PARSERS:
            bad = True
        call = ast.unparse(node)
        rel = path.relative_to(root).as_posix()
        if bad and not any(rel == f and call.startswith(c) for f, c in TRUSTED_XML):
            found.append(f"{rel}:{node.lineno}: {call[:80]}")
    return found


def test_the_checker_finds_what_it_must(tmp_path: Path) -> None:
    """The checker itself can fail: each unsafe form is caught, the safe forms are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle, torch, joblib, yaml\nimport numpy as np\nimport pandas as pd\n"
        "import xml.etree.ElementTree as ET\nfrom xml.dom import minidom\n"
        "import defusedxml.ElementTree as SafeET\nfrom pickle import loads as l\n"
        "pickle.load(f)\nl(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "joblib.load(p)\nnp.load(p, allow_pickle=True)\npd.read_pickle(p)\nyaml.load(s)\n"
        "ET.fromstring(s)\nminidom.parseString(s)\n"
        "torch.load(p, weights_only=True)\nnp.load(p)\nSafeET.fromstring(s)\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\npickle.dumps(x)\n")
    found = [line.split(": ", 1)[1] for line in unsafe_calls(sample, tmp_path)]
    assert found == ["pickle.load(f)", "l(b)", "torch.load(p)",
                     "torch.load(p, weights_only=False)", "joblib.load(p)",
                     "np.load(p, allow_pickle=True)", "pd.read_pickle(p)", "yaml.load(s)",
                     "ET.fromstring(s)", "minidom.parseString(s)"]


def test_no_product_module_unpickles_or_parses_xml_unsafely() -> None:
    files = _sources()
    assert len(files) > 30  # the product is there
    found = [hit for path in files for hit in unsafe_calls(path)]
    assert found == [], "unsafe loading:\n" + "\n".join(found)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/nonexistent")


def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    """``idou export`` of a pickle (as an attacker would hand over a 'checkpoint'): exit 2,
    one sentence, and the payload never ran."""
    pytest.importorskip("torch")
    import pickle

    global MARKER
    MARKER = tmp_path / "PAYLOAD_RAN"
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(pickle.dumps({"model": _Payload()}))
    run = subprocess.run([sys.executable, "-m", "idou.cli", "export", str(checkpoint), "-o",
                          str(tmp_path / "model.onnx")], cwd=tmp_path, env=idou_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "last.ckpt" in run.stderr
    assert not MARKER.exists()
    assert not (tmp_path / "model.onnx").exists()
