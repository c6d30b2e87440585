"""The benchmark scripts still import what they use: they run outside the test suite, so a renamed library
function broke `benchmarks/extract.py` without any test noticing (it imported a device helper that no longer
existed). Importing each module (their work is behind `__main__`) catches that in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert {"ablations", "extract", "fusion", "render"} <= {path.stem for path in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports_and_defines_main(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    assert callable(getattr(module, "main", None)), f"{path.name}: no main()"
