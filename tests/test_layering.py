"""The layering of docs/architecture.md, read from the imports of every module (not run).

cli (``idou/``) → training → models / inference → geo, and the kernel (``idou.errors``,
``idou.version``) that every layer may import. A new import that crosses the layers the wrong
way fails here with the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
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
    "inference": ("torch", "torchvision", "timm", "albumentations", "mlflow"),
    "models": ("albumentations", "mlflow"),
    "training": (),
    "cli": (),
}
# allowed exceptions, each with its reason: (module, imported package) -> why
EXCEPTIONS = {
    ("idou.inference.registry", "mlflow"): "the model registry is mlflow's; imported lazily, "
                                           "only for models:/ URIs, with the train extra",
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
        return None
    if top in NEVER[layer] and (module, top) not in EXCEPTIONS:
        return f"{layer} never imports {top}"
    return None


def test_every_import_follows_the_layering() -> None:
    problems = [f"{path.relative_to(ROOT)}:{line}: {module} imports {imported}: {why}"
                for module, path in _modules() for line, imported in _imports(module, path)
                if (why := _violation(module, imported))]
    assert not problems, "\n".join(problems)


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
    ("idou.inference.detect", "idou.training.loop", "inference may import only"),
    ("idou.training.loop", "idou.cli", "training may import only"),
])
def test_the_rules_catch_the_edges_the_design_forbids(module: str, imported: str,
                                                      why: str) -> None:
    assert why in (_violation(module, imported) or "")


@pytest.mark.parametrize(("module", "imported"), [
    ("idou.geo.raster.align", "idou.errors"), ("idou.models.backbones", "idou.errors"),
    ("idou.inference.provenance", "idou.version"), ("idou.training.loop", "idou.inference"),
    ("idou.inference.registry", "mlflow"), ("idou.cli", "idou"),
])
def test_the_rules_allow_what_the_design_allows(module: str, imported: str) -> None:
    assert _violation(module, imported) is None
