"""Only ingest, the synthetic teacher and evaluation code may read ground-truth labels.

crr, fuse, autoencode and splat (library and stage modules) must not reach them; their metrics go
through econsg.evaluation, which returns numbers only.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUARDED = [
    "econsg/crr.py",
    "econsg/fusion.py",
    "econsg/autoencoder.py",
    "econsg/semantic.py",
    "econsg/splat",
    "econsg/render",
    "stages/crr.py",
    "stages/fuse.py",
    "stages/autoencode.py",
    "stages/splat.py",
]
FORBIDDEN_NAMES = {"open_ground_truth", "GroundTruth", "gt_class", "gt_instance", "load_classes", "load_instances"}


def python_files():
    for entry in GUARDED:
        path = ROOT / entry
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


def names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_does_not_touch_ground_truth(path):
    assert path.is_file(), f"{path} is listed as guarded but does not exist"
    leaked = names_used(path) & FORBIDDEN_NAMES
    assert not leaked, f"{path.relative_to(ROOT)} references ground truth: {sorted(leaked)}"


def test_the_guard_catches_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from econsg.scene.store import open_ground_truth\nx = group['gt_class']\n")
    assert names_used(leaky) & FORBIDDEN_NAMES == {"open_ground_truth", "gt_class"}
