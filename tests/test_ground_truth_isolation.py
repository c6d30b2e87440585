"""Only ingest (the scene readers and store), the synthetic teacher and evaluation code may read ground-truth
labels. Every other module of econsg/ and stages/ is guarded, new ones included: crr, fuse, autoencode and splat
reach metrics through econsg.evaluation, which returns numbers only.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {  # every other module of econsg/ and stages/ is guarded, new ones included
    "econsg/artifacts.py",  # names the scene schema's arrays
    "econsg/evaluation.py",
    "econsg/features/teacher.py",  # the synthetic teacher
    "stages/evaluate.py",
    "stages/ingest.py",
    "stages/synth.py",
}
ALLOWED_FOLDERS = ("econsg/scene/",)  # readers, ingest, the scene store
ALLOWED_FUNCTIONS = {"stages/extract.py": {"synthetic_views"}}  # the synthetic teacher's entry, nothing else there
FORBIDDEN_NAMES = {"open_ground_truth", "GroundTruth", "gt_class", "gt_instance", "load_classes", "load_instances"}


def python_files():
    for path in sorted([*(ROOT / "econsg").rglob("*.py"), *(ROOT / "stages").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in ALLOWED and not rel.startswith(ALLOWED_FOLDERS):
            yield path


def names_used(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.split(".")[-1])
        elif isinstance(node, ast.keyword) and node.arg:
            found.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


def outside_allowed_functions(tree: ast.Module, allowed: set[str]) -> ast.Module:
    """The module without the bodies of its top-level functions named in `allowed`."""
    body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name in allowed)]
    return ast.Module(body=body, type_ignores=[])


def test_the_guard_covers_the_learning_stages():
    guarded = {path.relative_to(ROOT).as_posix() for path in python_files()}
    assert {"econsg/crr.py", "econsg/fusion.py", "econsg/autoencoder.py", "econsg/semantic.py", "econsg/query.py",
            "econsg/splat/train.py", "stages/crr.py", "stages/fuse.py", "stages/autoencode.py", "stages/splat.py",
            "stages/extract.py"} <= guarded
    assert not guarded & ALLOWED


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_does_not_touch_ground_truth(path):
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT).as_posix()
    leaked = names_used(outside_allowed_functions(tree, ALLOWED_FUNCTIONS.get(rel, set()))) & FORBIDDEN_NAMES
    assert not leaked, f"{rel} references ground truth: {sorted(leaked)}"


def test_the_guard_catches_a_leak():
    leaky = ast.parse("from econsg.scene.store import open_ground_truth\nx = group['gt_class']\n"
                      "def synthetic_views():\n    return open_ground_truth\n"
                      "def other():\n    return load_classes\n")
    assert names_used(leaky) & FORBIDDEN_NAMES == {"open_ground_truth", "gt_class", "load_classes"}
    assert names_used(outside_allowed_functions(leaky, {"synthetic_views"})) & FORBIDDEN_NAMES == {
        "open_ground_truth", "gt_class", "load_classes"}  # the import is outside the function
    inside_only = ast.parse("def synthetic_views():\n    return open_ground_truth\n")
    assert not names_used(outside_allowed_functions(inside_only, {"synthetic_views"})) & FORBIDDEN_NAMES
