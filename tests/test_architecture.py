"""The import direction of DESIGN.md section 4: nothing imports upward, layer-1 modules never import
each other. Checked statically on the source, so it fails the moment someone adds such an import."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cvlm"

# Layer-1 units never import each other; other layers may use their own layer and the ones below.
# Layer of each top-level unit of cvlm (a module or a subpackage). metrics and data are pure helpers
# that layer-1 code (diffusion training, generator training) needs, so they sit in layer 0.
LAYERS: dict[str, int] = {
    "__init__": 0,
    "findings": 0,
    "xray": 0,
    "outputs": 0,
    "metrics": 0,
    "data": 0,
    "bundled": 0,
    "environment": 0,
    "threads": 0,
    "safeio": 0,
    "phantoms": 1,
    "labeler": 1,
    "prompts": 1,
    "generators": 1,
    "diffusion": 1,
    "frames": 1,
    "prepare": 2,
    "counterfactual": 2,
    "cyclic": 2,
    "baselines": 2,
    "scoring": 2,
    "readout": 2,
    "validate": 2,
    "explain": 3,
    "evaluate": 3,
    "report": 3,
    "compare": 3,
    "demo": 3,
    "cli": 4,
    "webui": 4,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(source: str, rel: Path) -> set[str]:
    """cvlm units imported by a module whose path relative to src/cvlm is ``rel``."""
    units = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "cvlm":
            # ``from cvlm import labeler``: a name that is a module or subpackage is that unit; anything
            # else (``__version__``) is an attribute of the package's __init__.
            names = [f"cvlm.{a.name if _is_unit(a.name) else '__init__'}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level >= len(rel.parts):
            # A relative import that climbs out of its subpackage reaches another unit.
            names = [f"cvlm.{node.module}"] if node.module else [f"cvlm.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            # importlib.import_module("cvlm.labeler") / __import__("cvlm.labeler") with a literal name.
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cvlm" and len(parts) > 1:
                units.add(parts[1])
    return units


def _is_unit(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return (
        name in ("import_module", "__import__")
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _violations(unit: str, imported: set[str]) -> list[str]:
    found = []
    for other in sorted(imported - {unit}):
        if other not in LAYERS:
            found.append(f"unknown unit cvlm.{other}")
        elif LAYERS[unit] == 1 and LAYERS[other] != 0:
            found.append(f"layer-1 {unit} imports cvlm.{other} (layer {LAYERS[other]})")
        elif LAYERS[other] > LAYERS[unit]:
            found.append(f"{unit} (layer {LAYERS[unit]}) imports cvlm.{other} (layer {LAYERS[other]})")
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_unit_has_a_layer():
    missing = {_unit(p) for p in SOURCES} - set(LAYERS)
    assert not missing, f"add these modules to LAYERS in {__file__}: {sorted(missing)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_downward(path):
    rel = path.relative_to(SRC)
    assert not _violations(_unit(path), _imported_units(path.read_text(encoding="utf-8"), rel))


def test_checker_catches_upward_and_sideways_imports():
    probe = (
        "from cvlm.explain import explain\nimport cvlm.labeler.rules\nfrom ..findings import ABNORMALITIES\n"
    )
    imported = _imported_units(probe, Path("phantoms/probe.py"))
    assert imported == {"explain", "labeler", "findings"}
    assert len(_violations("phantoms", imported)) == 2


@pytest.mark.parametrize(
    ("unit", "rel", "probe", "culprit"),
    [
        ("phantoms", "phantoms/world.py", "from cvlm import labeler\n", "labeler"),
        ("prompts", "prompts.py", "from cvlm import findings, scoring\n", "scoring"),
        ("phantoms", "phantoms/world.py", "from .. import generators\n", "generators"),
        (
            "diffusion",
            "diffusion/train.py",
            "import importlib\nimportlib.import_module('cvlm.explain')\n",
            "explain",
        ),
        ("metrics", "metrics.py", "import cvlm.prepare as p\n", "prepare"),
    ],
)
def test_checker_catches_every_import_form(unit, rel, probe, culprit):
    # Each form once slipped through or could: the probe must be reported, naming the culprit.
    found = _violations(unit, _imported_units(probe, Path(rel)))
    assert any(culprit in v for v in found), f"{probe!r} in {rel}: violations {found}"
