"""The benchmark scripts still import what they use: they run outside the test suite, so a renamed library
function broke `benchmarks/extract.py` without any test noticing (it imported a device helper that no longer
existed). Importing each module (their work is behind `__main__`) catches that in seconds."""

from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from econsg.config import load_params
from econsg.pipeline import STAGE_ORDER

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
ABLATIONS = ROOT / "benchmarks" / "ablations.py"


def test_there_are_benchmarks():
    assert {"ablations", "extract", "fusion", "render"} <= {path.stem for path in BENCHMARKS}


@contextmanager
def load_benchmark(path: Path):
    """The benchmark script as a module, registered in sys.modules while in use (dataclasses resolve their module
    through it)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports_and_defines_main(path):
    with load_benchmark(path) as module:
        assert callable(getattr(module, "main", None)), f"{path.name}: no main()"


def test_ablation_table_pairs_each_variant_with_the_full_method_by_seed():
    run = lambda miou: {"miou": miou, "teacher_miou": 0.5}  # noqa: E731
    with load_benchmark(ABLATIONS) as module:
        # seed by seed the variant is 0.02 below full, though its range overlaps full's
        table = module.ablation_table({"full": [run(0.70), run(0.80)], "no_ce": [run(0.68), run(0.78)]})
    header, _, full, no_ce = table.splitlines()
    assert header.endswith("| miou_vs_full |")
    assert no_ce.startswith("| no_ce | 0.730 (0.680-0.780) |")
    assert no_ce.endswith("| -0.020 (-0.020 to -0.020) |") and full.endswith("| 0.000 (0.000-0.000) |")


def test_every_ablation_is_a_real_alternative_rerun_from_the_stage_it_changes():
    params_file = ROOT / "params.yaml"
    defaults = load_params(params_file).model_dump()
    with load_benchmark(ABLATIONS) as module:
        variants = dict(module.VARIANTS)
    for name, (overrides, first_stage) in variants.items():
        changed = load_params(params_file, overrides).model_dump()  # a bad key or value raises ConfigError
        sections = {item.split(".", 1)[0] for item in overrides}
        assert name == "full" or any(changed[s] != defaults[s] for s in sections), f"{name}: changes nothing"
        assert all(STAGE_ORDER.index(first_stage) <= STAGE_ORDER.index(s) for s in sections), (
            f"{name}: reruns from {first_stage}, after a stage it changes ({sorted(sections)})"
        )


def test_an_ablation_setting_reruns_from_the_stage_it_names_and_refuses_what_is_not_a_stage_parameter():
    from econsg.errors import EconsgError

    params_file = ROOT / "params.yaml"
    with load_benchmark(ABLATIONS) as module:
        assert module.setting_stage(["ingest.sparse_views=10"], params_file) == "ingest"
        assert module.setting_stage(["splat.iterations=10", "fuse.voxel_size=0.05"], params_file) == "fuse"
        for bad in (["seed=3"], ["paths.artifacts=/tmp/x"], ["synth.seed=2"]):
            with pytest.raises(SystemExit, match="expected a stage's parameter"):
                module.setting_stage(bad, params_file)
        with pytest.raises(EconsgError, match="sparse_view"):
            module.setting_stage(["ingest.sparse_view=10"], params_file)  # a misspelt key, before anything runs


def test_the_decoded_query_compares_the_decoded_render_with_the_text_in_the_teachers_space():
    class Decoder:  # G(z) = z @ W: latent axis 0 decodes to text 1's direction, latent axis 1 to text 0's
        W = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

        def decode(self, latents):
            return latents @ self.W

    text = torch.eye(3)
    features = torch.tensor([[[2.0, 0.1], [0.1, 3.0]], [[1.0, 1.5], [-1.0, -0.2]]])  # [2, 2, d=2]
    with load_benchmark(ROOT / "benchmarks" / "query_space.py") as module:
        labels = module.segment_decoded(Decoder(), features, text)
    assert labels.shape == (2, 2)
    assert labels.tolist() == [[1, 0], [0, 2]]  # the last decodes to (-0.2, -1, 0): text 2 (cosine 0) beats texts 0 and 1 (negative)
