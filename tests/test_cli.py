import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from econsg.cli import app
from tests.helpers import write_tiny_blender

runner = CliRunner()


def test_params_check_reports_section_field_on_stderr(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("crr:\n  tau_one: 0.4\nsplat:\n  iterations: 0\n")
    result = runner.invoke(app, ["params", "check", str(bad)])
    assert result.exit_code == 1
    assert "crr.tau_one: unknown key" in result.stderr
    assert "splat.iterations:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_params_defaults_round_trip_through_check(tmp_path):
    result = runner.invoke(app, ["params", "defaults"])
    assert result.exit_code == 0
    path = tmp_path / "params.yaml"
    path.write_text(result.stdout)
    checked = runner.invoke(app, ["params", "check", str(path)])
    assert checked.exit_code == 0, checked.stderr
    from econsg.config import Params

    assert yaml.safe_load(result.stdout) == Params().model_dump(mode="json"), "every default, not a file check fills in"


def test_run_ingest_and_inspect(tmp_path, monkeypatch):
    data = write_tiny_blender(tmp_path / "data")
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  data: {data}\n  artifacts: {tmp_path / 'artifacts'}\n")
    result = runner.invoke(app, ["run", "ingest", "--params", str(params)])
    assert result.exit_code == 0, result.stderr
    store = tmp_path / "artifacts" / "scene.zarr"
    shown = runner.invoke(app, ["inspect", str(store)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for word in ("images", "4x12x16x3", "uint8", "schema_version", "median_depth", "class_names"):
        assert word in shown.stdout
    assert re.search(r"│ stage\s+│ ingest\s+│", shown.stdout), "the provenance names the stage that wrote the store"
    assert "the files match it" in shown.stdout and "DAMAGED" not in shown.stdout
    # a narrow terminal cut shapes and sizes without a mark (12x8x10x51 for 12x8x10x512): one block per array there
    narrow = runner.invoke(app, ["inspect", str(store)], env={"COLUMNS": "40"})
    assert narrow.exit_code == 0 and "images: 4x12x16x3 uint8, " in narrow.stdout and "dims view y x rgb;" in narrow.stdout
    next(p for p in (store / "images").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    damaged = runner.invoke(app, ["inspect", str(store)], env={"COLUMNS": "200"})
    assert damaged.exit_code == 0 and "DAMAGED: the files now hash to" in damaged.stdout


def test_user_errors_have_no_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  data: {tmp_path / 'missing'}\n  artifacts: {tmp_path / 'a'}\n")
    result = runner.invoke(app, ["run", "ingest", "--params", str(params)])
    assert result.exit_code == 1
    assert "dataset folder does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = runner.invoke(app, ["run", "nonsense", "--params", str(params)])
    assert unknown.exit_code == 1 and "unknown stage 'nonsense'" in unknown.stderr
    missing = runner.invoke(app, ["inspect", str(tmp_path / "none.zarr")])
    assert missing.exit_code == 1 and "none.zarr: does not exist; expected a store a stage wrote" in missing.stderr
    (tmp_path / "plain").mkdir()
    folder = runner.invoke(app, ["inspect", str(tmp_path / "plain")])
    assert folder.exit_code == 1 and "not a Zarr v3 store" in folder.stderr


def test_metrics_table_reads_stage_json(tmp_path):
    import json

    metrics = tmp_path / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "crr.json").write_text(json.dumps({"raw_miou": 0.61234, "refined_miou": 0.75}))
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  metrics: {metrics}\n")
    result = runner.invoke(app, ["metrics", "--params", str(params)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "0.612" in result.stdout and "0.750" in result.stdout
    assert "no " in result.stdout and "evaluate.json yet" in result.stdout
    # a protocol's own figures (LERF-OVS has no top-level mIoU) are shown beside the paper's keys
    (metrics / "evaluate.json").write_text(json.dumps({"psnr": 30.0, "benchmark": {
        "protocol": "lerf", "miou": 0.0884, "localization_accuracy": 0.5, "per_frame": {"a": 1}}}))
    lerf = runner.invoke(app, ["metrics", "--params", str(params)], env={"COLUMNS": "200"}).stdout
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lerf.splitlines() if line.count("│") == 4]
    assert ["evaluate", "benchmark.miou", "0.088"] in cells and ["evaluate", "benchmark.protocol", "lerf"] in cells
    assert ["evaluate", "benchmark.localization_accuracy", "0.500"] in cells and "per_frame" not in lerf
    assert ["evaluate", "miou", "missing"] in cells


def test_params_check_names_a_folder_given_for_the_file(tmp_path):
    result = runner.invoke(app, ["params", "check", str(tmp_path)])
    assert result.exit_code == 1 and f"{tmp_path} is a folder; expected a params YAML file" in result.stderr
    missing = tmp_path / "params.yaml"  # a first run outside the repository: say how to write one
    result = runner.invoke(app, ["params", "check", str(missing)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and f"with `econsg params defaults > {missing}`" in " ".join(result.stderr.split())


def test_params_explain_prints_a_keys_meaning_and_refuses_an_unknown_one():
    shown = runner.invoke(app, ["params", "explain", "fuse.voxel_size"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "fuse.voxel_size" in shown.stdout and "0.08" in shown.stdout
    nullable = runner.invoke(app, ["params", "explain", "fuse.max_depth"], env={"COLUMNS": "200"})
    assert "│ null " in nullable.stdout, "defaults as a params file writes them, not Python's None"
    assert "fuse.min_views" not in shown.stdout  # one field only
    section = runner.invoke(app, ["params", "explain", "extract.synthetic"], env={"COLUMNS": "200"})
    assert section.exit_code == 0 and "extract.synthetic.patch_size" in section.stdout
    unknown = runner.invoke(app, ["params", "explain", "fuze"])
    assert unknown.exit_code == 1 and "'fuze': no such params key" in unknown.stderr and "fuse" in unknown.stderr
    field = runner.invoke(app, ["params", "explain", "fuse.voxel"])
    assert field.exit_code == 1 and "expected one of the fields of fuse:" in field.stderr and "voxel_size" in field.stderr
    replaced = runner.invoke(app, ["params", "explain", "splat.distill_ignored"])
    assert replaced.exit_code == 1 and "replaced by splat.distill_pixels" in replaced.stderr


@pytest.mark.parametrize("command", [["query", "bed"], ["edit", "bed"], ["render", "bed"]])
def test_a_threshold_outside_0_1_is_refused_before_any_work(tmp_path, command):
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  artifacts: {tmp_path / 'none'}\n")  # no run here: the threshold must stop it first
    result = runner.invoke(app, [*command, "--threshold", "1.5", "--params", str(params)])
    assert result.exit_code == 1 and "--threshold: 1.5; expected a relevancy between 0 and 1" in result.stderr


def test_a_path_the_system_refuses_is_one_line_without_a_traceback(tmp_path, capsys):
    import typer

    from econsg.cli import _guard

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(typer.Exit):
        _guard(lambda: (blocker / "plots").mkdir())  # a folder under a file: NotADirectoryError
    err = capsys.readouterr().err
    assert f"error: {blocker / 'plots'}: Not a directory" in err and "Traceback" not in err


def test_a_stage_run_by_dvc_reports_a_refused_path_in_one_line(tmp_path):
    import subprocess
    import sys

    data = write_tiny_blender(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "stages.ingest", "--set", f"paths.data={data}",
                             "--set", f"paths.artifacts={blocker / 'artifacts'}"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {blocker / 'artifacts'}: cannot write there (Not a directory)" in result.stderr


def test_inspect_refuses_an_array_or_a_broken_store_in_one_line(tmp_path):
    import zarr

    zarr.create_array(store=str(tmp_path / "array.zarr"), shape=(3,), dtype="float32")
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    for path, message in ((tmp_path / "array.zarr", "not a Zarr group"), (broken, "not a Zarr group")):
        result = runner.invoke(app, ["inspect", str(path)])
        assert result.exit_code == 1 and message in result.stderr and str(path) in result.stderr
        assert isinstance(result.exception, SystemExit)  # not zarr's error escaping as a traceback


def test_inspect_shows_unnamed_dimensions_and_text_with_brackets_as_given(tmp_path):
    import zarr

    store = tmp_path / "[bold]run" / "foreign.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("maps", shape=(2, 3), dtype="int16", dimension_names=["view", None])
    group.attrs.update({"note": "labels in [/data] folder", "econsg": "another tool's"})
    result = runner.invoke(app, ["inspect", str(store)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "view -" in result.stdout and "labels in [/data] folder" in result.stdout and "[bold]run" in result.stdout
    assert "none: not written by econsg" in result.stdout


@pytest.fixture
def scratch_folder(tmp_path, monkeypatch):
    """A folder holding the default params.yaml, the current one while the test runs: a stage run without --params
    reads and writes there, not in the checkout (and runs from any folder pytest is started in)."""
    result = runner.invoke(app, ["params", "defaults"])
    (tmp_path / "params.yaml").write_text(result.stdout, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_invalid_override_is_echoed_as_typed(scratch_folder):
    bad = runner.invoke(app, ["run", "crr", "--set", "evaluate.vocabulary=[bed, tv]", "--set", "fuse.voxel_size=-1"])
    assert bad.exit_code == 1 and "--set evaluate.vocabulary=[bed, tv] --set fuse.voxel_size=-1: invalid params" in bad.stderr


def metrics_of(tmp_path, crr_json: str):
    """`econsg metrics` on a metrics folder holding crr.json alone; its result and the folder."""
    metrics = tmp_path / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "crr.json").write_text(crr_json)
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  metrics: {metrics}\n")
    return runner.invoke(app, ["metrics", "--params", str(params)], env={"COLUMNS": "200"}), metrics


def test_metrics_refuses_a_truncated_metrics_file_naming_it(tmp_path):
    result, metrics = metrics_of(tmp_path, '{"raw_miou": 0.6')
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"{metrics / 'crr.json'}: not a metrics JSON file" in result.stderr


def test_file_slugs_of_texts_never_collide_and_stay_short():
    from econsg.cli import _file_slug

    assert _file_slug(["bed"]) == "bed" and _file_slug(["bed", "lamp"]) == "bed_lamp"
    assert _file_slug(["a red chair"]) == "a-red-chair"
    assert len({_file_slug(["sofa/bed"]), _file_slug(["sofa bed"]), _file_slug(["sofa-bed"]), _file_slug(["sofa", "bed"]),
                _file_slug(["sofa_bed"])}) == 5
    long_a, long_b = "a photo of a red wooden chair", "a photo of a red wooden table"
    assert _file_slug([long_a]) != _file_slug([long_b])
    many = _file_slug([long_a] * 11)
    assert len(many) <= 80 and "/" not in many


@pytest.mark.parametrize("command, message", [
    (["edit", "bed", "--out", "result.png"], "expected a file path ending in .ply, like result.ply"),
    (["export", "ply", "--out", "gaussians"], "expected a file path ending in .ply, like gaussians.ply"),
    (["export", "ply", "--out", "."], "'.'; expected a file path ending in .ply"),  # no name to suggest one from
    (["export", "ply", "--out", ""], "expected a file path ending in .ply"),
    (["export", "ply", "--out", "params.yaml/g.ply"], "params.yaml/g.ply: params.yaml is a file, not a folder"),
    (["audit", "--out", "params.yaml"], "--out: params.yaml: params.yaml is a file, not a folder"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, command, message):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  artifacts: {tmp_path / 'none'}\n")  # no run here: the path must stop it first
    result = runner.invoke(app, [*command, "--params", str(params)])
    assert result.exit_code == 1 and "--out:" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and params.read_text().startswith("paths:")


def test_a_write_the_system_refuses_is_named_by_the_option_and_its_path_not_a_temporary_file():
    from econsg.cli import _written
    from econsg.errors import EconsgError

    def full_disk():
        raise OSError(28, "No space left on device", "/elsewhere/.g.ply.tmp-1454")

    with pytest.raises(EconsgError, match=r"^--out: out/g.ply: No space left on device$"):
        _written("--out", Path("out/g.ply"), full_disk)


def test_an_empty_view_list_is_refused():
    from econsg.cli import _parse_views
    from econsg.errors import EconsgError

    assert _parse_views("1,2", [0, 1, 2]) == [1, 2] and _parse_views(None, [0, 1]) == [0, 1]
    with pytest.raises(EconsgError, match="--views: '' names no view"):
        _parse_views("", [0, 1, 2])


def test_an_interrupted_run_says_so_and_exits_130(monkeypatch):
    import econsg.pipeline

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(econsg.pipeline, "run_stage", interrupted)
    result = runner.invoke(app, ["run", "crr"])
    assert result.exit_code == 130 and "crr: interrupted; its previous artifact, if any, is kept" in result.stderr


@pytest.mark.parametrize("moved_in", [False, True])
def test_an_interrupt_after_the_new_store_moved_in_says_so(scratch_folder, tmp_path, monkeypatch, moved_in):
    """A stage moves its store in, then writes its metrics: interrupted between the two, it must not claim the previous
    store is kept, but say the figures may be the previous run's."""
    import stages.crr

    store = tmp_path / "crr.zarr"
    store.mkdir()  # the previous run's

    def run(params):
        if moved_in:  # as ArtifactWriter does: the new folder renamed over the old one
            new = tmp_path / "new"
            new.mkdir()
            new.replace(store)
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.crr, "run", run)
    result = runner.invoke(app, ["run", "crr", "--set", f"paths.artifacts={tmp_path}"])
    assert result.exit_code == 130
    if moved_in:
        assert f"crr: interrupted after its new {store} was in place" in result.stderr and "is kept" not in result.stderr
    else:
        assert "crr: interrupted; its previous artifact, if any, is kept" in result.stderr


def test_metrics_tells_a_null_figure_from_a_missing_one(tmp_path):
    result, _ = metrics_of(tmp_path, '{"raw_miou": 0.6, "refined_miou": null}')
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in result.stdout.splitlines() if "│ crr" in line}
    assert rows == {"labelled_share": "missing", "raw_miou": "0.600", "refined_miou": "n/a", "refined_coverage": "missing"}
    # a scene without labels has no scores against them: said so, not "missing"
    result, _ = metrics_of(tmp_path / "unlabelled", '{"has_ground_truth": false, "labelled_share": 0.7}')
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in result.stdout.splitlines() if "│ crr" in line}
    assert rows == {"labelled_share": "0.700", "raw_miou": "n/a (no labels)", "refined_miou": "n/a (no labels)",
                    "refined_coverage": "n/a (no labels)"}


def test_smoke_settings_shorten_training_keep_the_run_s_densification_choice_and_write_only_their_folder(tmp_path):
    from econsg.config import load_params
    from econsg.pipeline import smoke_settings

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    for run_overrides, densifies in ((("ingest.downscale=2",), True), (("splat.refine_stop_iter=0",), False)):
        run = load_params(params, run_overrides)
        smoke = load_params(params, smoke_settings(run, tmp_path, run_overrides))
        assert smoke.splat.iterations == 20 and smoke.autoencode.iterations == 20
        assert smoke.extract.openclip_sam.stand_in and smoke.paths.data == run.paths.data
        assert (smoke.splat.refine_stop_iter > 0) == densifies, run_overrides
        assert smoke.ingest.downscale == run.ingest.downscale, "the run's own settings stay"
        assert all(Path(getattr(smoke.paths, key)).parent == tmp_path for key in ("artifacts", "metrics", "plots", "checkpoints"))


def test_a_single_texts_mask_takes_its_class_colour_as_in_every_other_picture(monkeypatch):
    """It was always red (close to the wall's colour), while evaluate, audit and a several-text query coloured it by
    its class."""
    import numpy as np
    import torch

    from econsg import cli, viz

    drawn = []
    overlay = viz.overlay
    monkeypatch.setattr(viz, "overlay", lambda rgb, colours, alpha: drawn.append(colours) or overlay(rgb, colours, alpha))
    latents = torch.eye(3)[:2]  # 'bed' and the canonical 'object'
    features = latents[0].expand(4, 5, 3).clone()  # every pixel is the bed's
    classes = ["wall", "floor", "bed"]
    picture, share = cli._query_picture("render", np.zeros((4, 5, 3), np.uint8), features, ["bed"], latents[:1],
                                        latents[1:], 1.0, 0.5, classes)  # fmt: skip
    assert share == 1.0
    (mask,) = drawn
    assert np.unique(mask.reshape(-1, 3), axis=0).tolist() == [viz.named_palette(["bed"], classes)[0].tolist()]


def test_a_folder_the_stage_cannot_write_is_refused_before_any_work(scratch_folder, tmp_path, monkeypatch):
    """An unwritable metrics folder used to fail crr after its new store had replaced the old one, leaving the store
    and its metrics from two runs; splat's checkpoint folder failed only at the first save, its training lost."""
    import stages.splat

    ran = []
    monkeypatch.setattr(stages.splat, "run", lambda params: ran.append(params))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    for setting, folder in ((f"paths.metrics={blocker}", blocker), (f"paths.checkpoints={blocker}", blocker / "splat")):
        result = runner.invoke(app, ["run", "splat", "--set", f"paths.artifacts={tmp_path / 'artifacts'}", "--set", setting])
        assert result.exit_code == 1 and f"{folder}: cannot write there" in result.stderr, result.stderr
    assert not ran


def test_a_second_run_of_a_stage_is_refused_at_once(scratch_folder, tmp_path, monkeypatch):
    """The store's lock is taken before the stage's work, not only while it writes: a second run into the same folder
    is refused before it computes anything, instead of after (or silently replacing the first run's store)."""
    import fcntl

    import stages.crr

    ran = []
    monkeypatch.setattr(stages.crr, "run", lambda params: ran.append(params))
    with open(tmp_path / ".crr.zarr.lock", "w", encoding="utf-8") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, ["run", "crr", "--set", f"paths.artifacts={tmp_path}"])
    assert result.exit_code == 1 and "another run of the crr stage is writing it now" in result.stderr
    assert not ran
    assert runner.invoke(app, ["run", "crr", "--set", f"paths.artifacts={tmp_path}"]).exit_code == 0 and len(ran) == 1
