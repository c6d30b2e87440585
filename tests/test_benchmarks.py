"""The benchmark scripts still import what they use: they run outside the test suite, so a renamed library
function broke `benchmarks/extract.py` without any test noticing (it imported a device helper that no longer
existed). Importing each module (their work is behind `__main__`) catches that in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from econsg.config import load_params
from econsg.pipeline import STAGE_ORDER
from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
ABLATIONS = ROOT / "benchmarks" / "ablations.py"


def test_there_are_benchmarks():
    assert {"ablations", "extract", "fusion", "render"} <= {path.stem for path in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports_and_defines_main(path):
    with load_benchmark(path) as module:
        assert callable(getattr(module, "main", None)), f"{path.name}: no main()"


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_help_prints_and_runs_nothing(path, monkeypatch, capsys):
    """`--help` explains a benchmark; before it was parsed by every one, `fusion.py --help` ran the benchmark."""
    monkeypatch.setattr("sys.argv", [str(path), "--help"])
    with load_benchmark(path) as module, pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


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


def test_reseeding_from_a_stage_gives_the_seed_to_that_stage_and_the_ones_after_it_only(tmp_path, monkeypatch):
    params_file = ROOT / "params.yaml"
    source = tmp_path / "source"
    for stage in STAGE_ORDER[1:]:
        (source / load_params(params_file).paths.artifact(stage).name).mkdir(parents=True)
    with load_benchmark(ABLATIONS) as module:
        calls = []
        monkeypatch.setattr(module.subprocess, "run", lambda command, **kwargs: calls.append(command))
        module.run_stages(["crr", "fuse", "autoencode", "splat", "evaluate"], ["crr.enabled=false"], params_file,
                          tmp_path / "run", source, reseed=(10, "splat"))
    seeds = {command[2].removeprefix("stages."): [a for a in command if a.startswith("seed=")] for command in calls}
    assert seeds == {"crr": [], "fuse": [], "autoencode": [], "splat": ["seed=10"], "evaluate": ["seed=10"]}
    assert all("crr.enabled=false" in command for command in calls)
    assert (tmp_path / "run" / "artifacts" / "extract.zarr").is_dir()  # upstream of crr, copied


def test_without_reseeding_no_stage_gets_a_seed(tmp_path, monkeypatch):
    """benchmarks/scenes.py and ablations.py without --seeds run every stage with the params' own seed (this path
    once raised a TypeError before the first stage ran)."""
    with load_benchmark(ABLATIONS) as module:
        calls = []
        monkeypatch.setattr(module.subprocess, "run", lambda command, **kwargs: calls.append(command))
        module.run_stages(list(STAGE_ORDER), ["synth.seed=3"], ROOT / "params.yaml", tmp_path / "run")
    assert [command[2] for command in calls] == [f"stages.{stage}" for stage in STAGE_ORDER]
    assert not any(a.startswith("seed=") for command in calls for a in command)


def test_an_ablation_setting_reruns_from_the_stage_it_names_and_refuses_what_is_not_a_stage_parameter():
    from econsg.errors import EconsgError

    params_file = ROOT / "params.yaml"
    with load_benchmark(ABLATIONS) as module:
        assert module.setting_stage(["ingest.sparse_views=10"], params_file) == "ingest"
        assert module.setting_stage(["splat.iterations=10", "fuse.voxel_size=0.05"], params_file) == "fuse"
        assert module.setting_stage(["device=cpu"], params_file) == "extract", "the first stage that reads device"
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


def test_the_centred_query_compares_directions_from_the_middle_of_the_training_texts():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]])  # the third text sits near the middle of the first two
    features = torch.tensor([[0.9, 0.2], [0.3, 0.7], [1.0, 1.0]])
    centre = text[:2].mean(dim=0)
    with load_benchmark(ROOT / "benchmarks" / "query_space.py") as module:
        centred = module.segment_centred(features, text, centre)
        plain = module.segment_latent(features, text)
    assert plain.tolist() == [0, 2, 2]  # uncentred, the middle text also wins (0.3, 0.7), nearer text 1
    assert centred.tolist() == [0, 1, 2]  # from m, (0.3, 0.7) points along text 1 - m; (1, 1) along text 2 - m


def scene_run(miou, teacher, per_class, open_set=float("nan")):
    """A scene's evaluate metrics as benchmarks/scenes.py reads them; per_class maps a class to (IoU, teacher IoU)."""
    return {"miou": miou, "closed_set_miou": miou, "open_set_miou": open_set, "teacher_miou": teacher,
            "geometry_oracle_miou": 0.9, "psnr": 28.0,
            "geometry_oracle_per_class_iou": {name: 0.9 for name in per_class},
            "per_class": {name: {"iou": iou, "teacher_iou": t, "pixels": 10, "acc": iou} for name, (iou, t) in per_class.items()}}


def test_the_scene_tables_name_the_classes_below_the_teacher_and_average_only_the_scenes_that_have_a_value():
    runs = {3: scene_run(0.8, 0.6, {"wall": (0.95, 0.85), "lamp": (0.10, 0.32), "shelf": (0.77, 0.92)}, open_set=0.6),
            5: scene_run(0.7, 0.6, {"wall": (0.90, 0.80), "lamp": (0.55, 0.50)})}  # scene 5: no open-set class
    with load_benchmark(ROOT / "benchmarks" / "scenes.py") as module:
        scenes, classes = module.scene_table(runs), module.class_table(runs)
    header, _, three, five, mean = scenes.splitlines()
    assert three.endswith("| lamp 0.10 < 0.32, shelf 0.77 < 0.92 |")  # the furthest below the teacher first
    assert five.endswith("| none |") and "| nan |" in five
    # open_set_miou (the third column) averages scene 3 alone; over_teacher reads each scene's own margin
    assert mean.split(" | ")[1:6] == ["0.750 (0.700-0.800)", "0.750 (0.700-0.800)", "0.600", "0.600 (0.600-0.600)",
                                      "0.150 (0.100-0.200)"]
    rows = classes.splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| lamp", "| shelf", "| wall"]  # worst econsg IoU first
    assert rows[0] == "| lamp | 2 | 0.325 (0.100-0.550) | 0.410 (0.320-0.500) | 0.900 (0.900-0.900) |"


def test_the_scene_benchmark_refuses_the_settings_each_scene_sets_itself():
    from econsg.errors import EconsgError

    params_file = ROOT / "params.yaml"
    with load_benchmark(ROOT / "benchmarks" / "scenes.py") as module:
        module.check_settings(["synth.num_objects=4", "splat.iterations=100"], params_file)  # synth's others are fine
        for bad in (["synth.seed=2"], ["seed=3"], ["paths.data=/tmp/x"]):
            with pytest.raises(SystemExit, match="use --scenes"):
                module.check_settings(bad, params_file)
        with pytest.raises(EconsgError, match="num_object"):
            module.check_settings(["synth.num_object=4"], params_file)


def test_settings_sweep_tells_a_clear_error_from_a_crash():
    """benchmarks/settings.py counts only crashes as bugs: a stage that stops with econsg's one-line `error:` message
    is a clear error, one that dies with a traceback (even after such a line) is a crash."""
    import subprocess

    cmd = ["python", "-m", "stages.crr", "params.yaml"]
    clear = subprocess.CalledProcessError(1, cmd, stderr="crr: refining\nerror: crr: no pixel keeps a label; lower crr.tau1\n")
    crash = subprocess.CalledProcessError(1, cmd, stderr="error: first\nTraceback (most recent call last):\n  ...\nIndexError: boom\n")
    silent = subprocess.CalledProcessError(-9, cmd, stderr="")
    with load_benchmark(ROOT / "benchmarks" / "settings.py") as module:
        assert module.outcome(clear) == "clear error at crr: error: crr: no pixel keeps a label; lower crr.tau1"
        assert module.outcome(crash) == "CRASH at crr: IndexError: boom"
        assert module.outcome(silent) == "CRASH at crr: exit -9"
        # a params error: the details that name the field, not the first line's long list of --set
        details = "synth: num_objects (9) exceeds what the room holds (7) (got {" + "'key': 1, " * 100 + "})"
        long = subprocess.CalledProcessError(1, cmd, stderr="error: params.yaml " + "--set x=1 " * 100 + ": invalid params\n"
                                             f"  {details}\n")
        row = module.outcome(long)
        assert row.startswith("clear error at crr: synth: num_objects (9) exceeds what the room holds (7)")
        assert "--set" not in row and row.endswith("...")
        assert len(row) == len("clear error at crr: ") + module.MESSAGE_CHARS + len("...")


def test_the_units_benchmark_puts_the_same_room_in_other_units(tmp_path):
    import numpy as np

    from econsg.scene.ingest import write_scene
    from econsg.scene.readers import read_scene
    from econsg.scene.store import open_scene
    from tests.helpers import write_tiny_blender

    root = write_tiny_blender(tmp_path / "data")
    with load_benchmark(ROOT / "benchmarks" / "units.py") as module:
        small = module.rescale_blender(root, 0.1, tmp_path / "small")
    options = dict(params={}, downscale=1, sparse_views=None, max_init_points=1000, init_voxel_size="auto",
                   rng=np.random.default_rng(0))
    metric = open_scene(write_scene(read_scene(root), tmp_path / "metric.zarr", **options))
    scaled = open_scene(write_scene(read_scene(small), tmp_path / "scaled.zarr", **options))
    np.testing.assert_allclose(scaled.c2w[:, :3, 3], metric.c2w[:, :3, 3] * 0.1, atol=1e-12)
    np.testing.assert_allclose(scaled.c2w[:, :3, :3], metric.c2w[:, :3, :3])
    np.testing.assert_allclose(scaled.depth(0), metric.depth(0) * 0.1, rtol=1e-6)
    assert scaled.median_depth == pytest.approx(metric.median_depth * 0.1)


def test_ablation_runs_copy_their_upstream_artifacts_afresh(tmp_path, monkeypatch):
    """A variant folder left by an earlier invocation must not keep its copy of a source that was rerun since."""
    with load_benchmark(ABLATIONS) as module:
        monkeypatch.setattr(module.subprocess, "run", lambda *args, **kwargs: None)  # the stages themselves are not run
        params = load_params(ROOT / "params.yaml").paths
        source = tmp_path / "source"
        for stage in STAGE_ORDER[1 : STAGE_ORDER.index("crr")]:
            (source / params.artifact(stage).name).mkdir(parents=True)
        marker = source / params.artifact("extract").name / "marker"
        marker.write_text("v1")
        module.run_stages(["crr"], [], ROOT / "params.yaml", tmp_path / "variant", source)
        marker.write_text("v2")  # the source reruns
        module.run_stages(["crr"], [], ROOT / "params.yaml", tmp_path / "variant", source)
        copied = tmp_path / "variant" / "artifacts" / params.artifact("extract").name / "marker"
        assert copied.read_text() == "v2"
        own = tmp_path / "variant" / "artifacts"
        module.run_stages(["crr"], [], ROOT / "params.yaml", tmp_path / "variant", own)  # its own: left as it is
        assert copied.read_text() == "v2"
