"""The layering of docs/architecture.md, read from the imports of every module (not run).

cli (``idou/``) → training → models / inference → geo, and the kernel (``idou.errors``,
``idou.version``) that every layer may import. A new import that crosses the layers the wrong
way fails here with the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"idou": "idou", "geo": "idou.geo", "inference": "idou.inference",
           "training": "idou.training", "models": "idou.models"}
KERNEL = ("idou.errors", "idou.version")

# what each layer may import of idou (the kernel is always allowed)
MAY_IMPORT = {
    "geo": ("idou.geo",),
    "models": ("idou.models",),
    "inference": ("idou.inference", "idou.geo"),
    "training": ("idou.training", "idou.inference", "idou.models", "idou.geo"),
    "cli": ("idou",),
}
# third-party packages a layer never imports (inference and geo run without the train extra)
NEVER = {
    "geo": ("torch", "torchvision", "timm", "albumentations", "mlflow", "onnx", "onnxruntime"),
    # inference reports progress through callbacks; the CLI draws the bars (rich)
    "inference": ("torch", "torchvision", "timm", "albumentations", "mlflow", "rich"),
    "models": ("albumentations", "mlflow"),
    "training": (),
    "cli": (),
}
# allowed exceptions, each with its reason: (module, imported package) -> why
EXCEPTIONS = {
    ("idou.inference.registry", "mlflow"): "the model registry is mlflow's; imported lazily, "
                                           "only for models:/ URIs, with the train extra",
}

# geo's rooms in the order data flows through them: a room imports only itself and earlier rooms
GEO_FLOW = ("files", "vector", "raster", "changes", "review")
# rooms beside the flow, and the rooms each may import besides itself
GEO_SIDE = {"scoring": ("files", "vector", "raster", "changes"),
            "synthetic": ("files", "vector", "raster")}
GEO_TOP = ("idou.geo", "idou.geo.errors")  # the only modules of geo outside a room
GEO_EXCEPTIONS = {
    ("idou.geo.changes.classify", "idou.geo.review.review_fields"):
        "the classes' Japanese names (異動区分) are the review's vocabulary",
    ("idou.geo.changes.parcel_join", "idou.geo.review.review_fields"):
        "the candidate parcels list the classes by their Japanese names",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join((package, *parts)), path))
    return found


def _layer(module: str) -> str:
    for name in ("geo", "models", "inference", "training"):
        if module == f"idou.{name}" or module.startswith(f"idou.{name}."):
            return name
    return "kernel" if module in KERNEL else "cli"


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from idou import errors` imports idou.errors; `from idou import __version__` idou
            names = [base] if base != "idou" else [
                "idou" if a.name.startswith("__") else f"idou.{a.name}" for a in node.names]
            found += [(node.lineno, name) for name in dict.fromkeys(names)]
    return found


def _violation(module: str, imported: str) -> str | None:
    layer = _layer(module)
    if layer == "kernel":
        return None if imported.partition(".")[0] != "idou" or imported in KERNEL else \
            "the kernel imports nothing of idou"
    top = imported.partition(".")[0]
    if top == "idou":
        if imported in KERNEL or any(imported == k or imported.startswith(k + ".")
                                     for k in KERNEL):
            return None
        allowed = MAY_IMPORT[layer]
        if imported == "idou" and layer != "cli":
            return "library code imports the kernel (idou.version, idou.errors), not idou itself"
        if not any(imported == a or imported.startswith(a + ".") for a in allowed):
            return f"{layer} may import only {', '.join(allowed)} and the kernel"
        return _room_violation(module, imported) if layer == "geo" else None
    if top in NEVER[layer] and (module, top) not in EXCEPTIONS:
        return f"{layer} never imports {top}"
    return None


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["idou", "geo"] else None


def _room_violation(module: str, imported: str) -> str | None:
    """geo's rooms follow the flow: files → vector → raster → changes → review."""
    room, other = _room(module), _room(imported)
    if room is None or other is None or room == other or (module, imported) in GEO_EXCEPTIONS:
        return None
    if other == "errors":
        return None
    allowed = GEO_SIDE.get(room) or GEO_FLOW[:GEO_FLOW.index(room)]
    if other in allowed:
        return None
    return (f"geo.{room} may import only geo.{', geo.'.join(allowed)} "
            f"(data flows {' → '.join(GEO_FLOW)})")


def test_every_import_follows_the_layering() -> None:
    problems = [f"{path.relative_to(ROOT)}:{line}: {module} imports {imported}: {why}"
                for module, path in _modules() for line, imported in _imports(module, path)
                if (why := _violation(module, imported))]
    assert not problems, "\n".join(problems)


def test_every_geo_module_lives_in_a_room() -> None:
    rooms = set(GEO_FLOW) | set(GEO_SIDE)
    homeless = [str(path.relative_to(ROOT)) for module, path in _modules()
                if module.startswith("idou.geo") and module not in GEO_TOP
                and _room(module) not in rooms]
    assert not homeless, f"put these in one of geo's rooms ({', '.join(sorted(rooms))}): " \
        + ", ".join(homeless)


def test_every_package_folder_is_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(project["tool"]["setuptools"]["packages"])
    packages = {module for module, path in _modules() if path.name == "__init__.py"}
    assert packages - listed == set(), "add these to pyproject.toml's packages list"
    # data folders are listed as packages too (geo/review/styles, models/default)
    assert {"idou.geo.review.styles", "idou.models.default"} <= listed


def test_reading_the_default_model_path_imports_no_torch() -> None:
    imported = {name.partition(".")[0] for _, name in
                _imports("idou.models", ROOT / "models" / "__init__.py")}
    assert "torch" not in imported


@pytest.mark.parametrize(("module", "imported", "why"), [
    ("idou.geo.review.harvest", "mlflow", "geo never imports mlflow"),
    ("idou.geo.raster.preflight", "idou.inference.contract", "geo may import only idou.geo"),
    ("idou.models.backbones", "idou.geo.errors", "models may import only idou.models"),
    ("idou.inference.detect", "idou", "not idou itself"),
    ("idou.inference.engine", "torch", "inference never imports torch"),
    ("idou.inference.batch", "rich.progress", "inference never imports rich"),
    ("idou.inference.detect", "idou.training.loop", "inference may import only"),
    ("idou.training.loop", "idou.cli", "training may import only"),
    ("idou.geo.raster.sources", "idou.geo.review.gpkg_output", "geo.raster may import only"),
    ("idou.geo.files.leftovers", "idou.geo.vector.parcels", "geo.files may import only"),
    ("idou.geo.changes.classify", "idou.geo.review.gpkg_output", "geo.changes may import only"),
    ("idou.geo.scoring.metrics", "idou.geo.review.harvest", "geo.scoring may import only"),
    ("idou.geo.synthetic.writer", "idou.geo.changes.classify", "geo.synthetic may import only"),
])
def test_the_rules_catch_the_edges_the_design_forbids(module: str, imported: str,
                                                      why: str) -> None:
    assert why in (_violation(module, imported) or "")


@pytest.mark.parametrize(("module", "imported"), [
    ("idou.geo.raster.align", "idou.errors"), ("idou.models.backbones", "idou.errors"),
    ("idou.inference.provenance", "idou.version"), ("idou.training.loop", "idou.inference"),
    ("idou.inference.registry", "mlflow"), ("idou.cli", "idou"),
    ("idou.geo.review.gpkg_output", "idou.geo.files.owned_outputs"),
    ("idou.geo.raster.preflight", "idou.geo.vector.vector_files"),
    ("idou.geo.changes.classify", "idou.geo.review.review_fields"),
    ("idou.geo.raster.align", "idou.geo.errors"), ("idou.inference.detect", "idou.geo.review"),
])
def test_the_rules_allow_what_the_design_allows(module: str, imported: str) -> None:
    assert _violation(module, imported) is None
