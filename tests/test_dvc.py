"""dvc.yaml agrees with the stage specs in code, and the pipeline caches and reruns the way DVC promises."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from econsg.config import Params
from econsg.pipeline import STAGE_ORDER, STAGES, dvc_yaml
from tests.helpers import restamp

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dvc_yaml_matches_stage_specs():
    on_disk = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert on_disk == dvc_yaml(), "dvc.yaml drifted from econsg/pipeline.py; regenerate with `econsg pipeline > dvc.yaml`"
    assert list(on_disk["stages"]) == list(STAGE_ORDER)


def test_every_declared_param_key_and_code_path_exists():
    fields = set(Params.model_fields)
    for spec in STAGES.values():
        assert set(spec.params) <= fields, spec.name
        for path in spec.code:
            assert (ROOT / path).exists(), f"{spec.name}: {path} does not exist"
        assert (ROOT / "stages" / f"{spec.name}.py").is_file()


# Modules whose changes do not change what a stage computes, only how it is run, read, stored or reported (params'
# values are tracked by each stage's `params`): a stage's code deps need not list them, and the import walk below
# does not follow them (the CLI imports every stage's code).
INFRASTRUCTURE = {"econsg/__init__.py", "econsg/pipeline.py", "econsg/cli.py", "econsg/workspace.py", "econsg/artifacts.py",
                  "econsg/progress.py", "econsg/errors.py", "econsg/device.py", "econsg/scene/store.py", "econsg/scene/data.py"}


def econsg_imports(path: Path) -> set[Path]:
    """The econsg modules (files) that one Python file imports, `from econsg.x import y` naming a module y too."""
    import ast

    def module_file(name: str) -> Path | None:
        base = ROOT / name.replace(".", "/")
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "econsg":
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "econsg"]
        found |= {file for name in names if (file := module_file(name))}
    return found


def stage_code_closure(stage: str) -> set[str]:
    """Every econsg module a stage's script reaches through imports, not walking through INFRASTRUCTURE or config."""
    seen, todo = set(), [ROOT / "stages" / f"{stage}.py"]
    while todo:
        for module in econsg_imports(todo.pop()):
            rel = module.relative_to(ROOT).as_posix()
            if rel in seen:
                continue
            seen.add(rel)
            if rel not in INFRASTRUCTURE and not rel.startswith("econsg/config/"):
                todo.append(module)
    return {rel for rel in seen if rel not in INFRASTRUCTURE and not rel.startswith("econsg/config/")}


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_every_module_a_stage_computes_with_is_a_dvc_dependency(stage):
    """Editing a module a stage imports (its loss, its renderer, its metrics) must make `dvc repro` rerun it."""
    code = STAGES[stage].code
    covered = lambda rel: any(rel == dep or rel.startswith(dep.rstrip("/") + "/") for dep in code)  # noqa: E731
    missing = sorted(rel for rel in stage_code_closure(stage) if not covered(rel))
    assert not missing, f"{stage}: add {missing} to its code in econsg/pipeline.py, then `econsg pipeline > dvc.yaml`"


TINY = {
    "synth": {"width": 40, "height": 30, "num_views": 12, "test_every": 4, "num_objects": 2},
    "extract": {"synthetic": {"patch_size": 4}},
    "fuse": {"voxel_size": 0.15},
    "autoencode": {"iterations": 40, "batch_size": 256},
    "splat": {"iterations": 15, "checkpoint_every": 1000, "refine_start_iter": 5, "refine_every": 5, "refine_stop_iter": 11},
    "evaluate": {"timing_repeats": 1, "overlay_views": 1},
}


def deep_update(base: dict, overlay: dict) -> dict:
    for key, value in overlay.items():
        base[key] = deep_update(dict(base.get(key, {})), value) if isinstance(value, dict) else value
    return base


def dvc(workdir: Path, *args: str) -> str:
    # Python writes bytecode beside the code, as on a user's machine (this one's environment turns that off): a
    # __pycache__ that changed a code dependency's hash would make the second `dvc repro` rerun everything
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(workdir), "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(workdir.parent / "dvc_site_cache")}  # not /var/tmp/dvc: one folder per test project
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stage_process(workdir: Path, stage: str, overrides: list[str]) -> subprocess.CompletedProcess:
    """`python -m stages.<stage> params.yaml --set ...` in the tiny project, as dvc would run it; its exit status and output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(workdir)}
    sets = [arg for item in overrides for arg in ("--set", item)]
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "params.yaml", *sets], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


def run_stage(workdir: Path, stage: str, overrides: list[str]) -> None:
    """The stage run as `stage_process` does, required to succeed."""
    result = stage_process(workdir, stage, overrides)
    assert result.returncode == 0, f"stages.{stage} failed:\n{result.stderr}"


def stages_in(output: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, output))


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("project")
    for name in ("econsg", "stages", "dvc.yaml", ".gitignore", ".dvcignore"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, workdir / name)
    params = deep_update(Params().model_dump(mode="json"), TINY)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # a git checkout with the project's own .gitignore, as a user's clone is: dvc refuses an ignored dvc.lock
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    dvc(workdir, "init", "-q")
    first_run = dvc(workdir, "repro")
    return workdir, first_run


def tmp_params_with(workdir: Path, **sections) -> Path:
    """A copy of the project's params.yaml with `sections`' keys replaced, beside it (same paths)."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    path = workdir / "params_edited.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_cli_audit_score_query_render_edit_export_on_the_tiny_run(tiny_project, monkeypatch):
    from typer.testing import CliRunner

    from econsg.cli import app

    workdir, _ = tiny_project
    monkeypatch.chdir(workdir)
    runner = CliRunner()
    audit = runner.invoke(app, ["audit", "--views", "0,1"])
    assert audit.exit_code == 0, audit.stderr
    assert (workdir / "plots/audit/view_0001.png").is_file() and (workdir / "plots/audit/index.html").is_file()
    bad = runner.invoke(app, ["audit", "--views", "99"])
    assert bad.exit_code == 1 and "not among the available views" in bad.stderr
    again = runner.invoke(app, ["audit", "--views", "1"])  # view 0's panel, which the index no longer lists, goes
    assert again.exit_code == 0 and sorted(p.name for p in (workdir / "plots/audit").glob("view_*.png")) == ["view_0001.png"]
    from econsg.artifacts import open_artifact

    held_out = [int(v) for v in open_artifact(workdir / "artifacts/room/evaluate.zarr", "evaluate").attrs["test_views"]]
    query = runner.invoke(app, ["query", "a striped armchair", "--view", str(held_out[-1])])
    assert query.exit_code == 0, query.stderr
    assert [p.name for p in (workdir / "plots/query").glob("a-striped-armchair_*.png")] == [
        f"a-striped-armchair_view_{held_out[-1]:04d}.png"], "a query names its picture by the view index, as evaluate's plots do"
    training_view = runner.invoke(app, ["query", "bed", "--view", "0"])
    assert training_view.exit_code == 1 and "--view: 0 is not a held-out view" in training_view.stderr
    edited = tmp_params_with(workdir, extract={"templates": ["a {}."]})
    other_space = runner.invoke(app, ["query", "bed", "--params", str(edited)])
    assert other_space.exit_code == 1 and "built with extract.templates = " in other_space.stderr, other_space.stderr
    assert "the params say ['a {}.']" in other_space.stderr
    blank = runner.invoke(app, ["query", "wall", " "])
    assert blank.exit_code == 1 and "query text: got ' ', expected a non-empty text" in blank.stderr
    two_lines = runner.invoke(app, ["edit", "wall\nfloor"])
    assert two_lines.exit_code == 1 and "holds a line break" in two_lines.stderr and "Traceback" not in two_lines.stderr
    bracketed = runner.invoke(app, ["query", "bed [red]", "--view", str(held_out[-1])])
    assert bracketed.exit_code == 0 and "'bed [red]' covers" in bracketed.stdout, "user text is echoed as typed"
    several = runner.invoke(app, ["query", "wall", "floor", "bed"])
    assert several.exit_code == 0, several.stderr
    lower = runner.invoke(app, ["query", "a striped armchair", "--view", str(held_out[-1]), "--threshold", "0.3"])
    assert lower.exit_code == 0 and (workdir / f"plots/query/a-striped-armchair_t0.3_view_{held_out[-1]:04d}.png").is_file(), \
        "another threshold's mask is kept beside the default's"
    edit = runner.invoke(app, ["edit", "floor", "--action", "remove"])
    assert edit.exit_code == 0, edit.stderr
    assert (workdir / "plots/edit/floor_remove.ply").is_file() and (workdir / "plots/edit/floor_remove_before_after.png").is_file()
    edit = runner.invoke(app, ["edit", "floor", "--action", "remove", "--threshold", "0.5"])
    assert edit.exit_code == 0 and (workdir / "plots/edit/floor_remove_t0.5.ply").is_file(), edit.stderr
    wrong_view = runner.invoke(app, ["edit", "bed", "--view", "99"])
    assert wrong_view.exit_code == 1 and "--view: 99 is not a held-out view" in wrong_view.stderr
    assert not (workdir / "plots/edit/bed_remove.ply").exists(), "a refused edit writes nothing"
    wrong_colour = runner.invoke(app, ["edit", "bed", "--action", "recolour", "--colour", "1,0"])
    assert wrong_colour.exit_code == 1 and "--colour: '1,0'" in wrong_colour.stderr
    render = runner.invoke(app, ["render", "wall", "floor", "--frames", "2"])
    assert render.exit_code == 0, render.stderr
    from PIL import Image

    from econsg.config import load_params
    from econsg.scene.store import open_scene

    held_out = len(open_scene(load_params(Path("params.yaml")).paths.artifact("ingest")).test_indices)
    frames = sorted((workdir / "plots/render/wall_floor/frames").glob("frame_*.png"))
    assert len(frames) == (held_out - 1) * 2 + 1, "an open path through the held-out views: 2 frames a segment, plus the last key"
    with Image.open(workdir / "plots/render/wall_floor/path.gif") as gif:
        assert gif.n_frames == len(frames)
    from econsg import viz
    from econsg.errors import EconsgError

    gif_bytes = (workdir / "plots/render/wall_floor/path.gif").read_bytes()
    with monkeypatch.context() as stopped:  # a render stopped before its end leaves the previous path whole
        stopped.setattr(viz, "save_gif", lambda *a, **k: (_ for _ in ()).throw(EconsgError("stopped")))
        assert runner.invoke(app, ["render", "wall", "floor", "--through", "0,1", "--frames", "1"]).exit_code == 1
    assert sorted((workdir / "plots/render/wall_floor/frames").glob("frame_*.png")) == frames
    assert (workdir / "plots/render/wall_floor/path.gif").read_bytes() == gif_bytes
    other = runner.invoke(app, ["render", "floor", "--through", "0,1", "--frames", "1"])
    assert other.exit_code == 0, other.stderr
    assert len(list((workdir / "plots/render/floor/frames").glob("frame_*.png"))) == 2, "two keys, one frame a segment"
    assert (workdir / "plots/render/wall_floor/path.gif").read_bytes() == gif_bytes, "other texts, another folder"
    (workdir / "a_file").write_text("")
    for command in (["render", "floor", "--through", "0,1"], ["query", "floor"]):
        refused = runner.invoke(app, [*command, "--out", "a_file"])
        assert refused.exit_code == 1 and "--out: a_file: a_file is a file, not a folder" in refused.stderr, refused.stderr
    single = runner.invoke(app, ["render", "floor", "--through", "0,1", "--frames", "1", "--loop", "--out", "plots/render_floor"])
    assert single.exit_code == 0, single.stderr
    assert len(list((workdir / "plots/render_floor/frames").glob("frame_*.png"))) == 2, "a loop of two keys, one frame each"
    scored = runner.invoke(app, ["score", "--exclude", "wall", "--bootstrap", "50"])
    assert scored.exit_code == 0, scored.stderr
    assert "intervals over 50 resamples" in scored.stdout and "(paired)" in scored.stdout
    nothing = runner.invoke(app, ["score", "--classes", ","])
    assert nothing.exit_code == 1 and "--classes: ',' names no class" in nothing.stderr, "not every class, silently"
    negative = runner.invoke(app, ["score", "--bootstrap", "5", "--seed", "-1"])
    assert negative.exit_code == 2 and "Traceback" not in negative.stderr + negative.stdout
    import json

    from econsg.artifacts import open_artifact
    from econsg.evaluation import rescore_evaluate

    written = json.loads((workdir / "metrics/evaluate.json").read_text())
    again = rescore_evaluate(open_artifact(workdir / "artifacts/room/evaluate.zarr", "evaluate"))
    assert again["miou"] == pytest.approx(written["miou"]) and again["teacher_miou"] == pytest.approx(written["teacher_miou"])
    assert again["macc"] == pytest.approx(written["macc"]), "the kept label maps re-score to the metrics evaluate wrote"
    one_key = runner.invoke(app, ["render", "--through", "0"])
    assert one_key.exit_code == 1 and "at least two key views" in one_key.stderr
    from econsg.splat.ply import load_ply

    edited, _ = load_ply(workdir / "plots/edit/floor_remove.ply")
    exported = runner.invoke(app, ["export", "ply", "--out", "export/all.ply"])
    assert exported.exit_code == 0, exported.stderr
    everything, _ = load_ply(workdir / "export/all.ply")
    assert 0 < len(edited["means"]) < len(everything["means"])
    latent_dim = yaml.safe_load((workdir / "params.yaml").read_text())["autoencode"]["latent_dim"]
    assert "features" in everything and everything["features"].shape[1] == latent_dim


def readme_block(heading: str, language: str) -> str:
    """The first fenced `language` block under the README's `heading`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    start = section.index(f"```{language}\n") + len(f"```{language}\n")
    return section[start : section.index("```", start)]


def test_the_readmes_python_example_runs_on_the_tiny_run(tiny_project):
    workdir, _ = tiny_project
    example = readme_block("## From Python", "python")
    texts = re.search(r"texts = (\[.*\])", example).group(1)
    result = subprocess.run([sys.executable, "-c", example], cwd=workdir, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(workdir)})
    assert result.returncode == 0, result.stderr
    shares = dict(re.findall(r"^(.+): ([\d.]+)% of the view$", result.stdout, flags=re.MULTILINE))
    assert list(shares) == ast.literal_eval(texts)  # one line per text, in order
    assert 50.0 <= sum(float(share) for share in shares.values()) <= 100.05  # most pixels, each at most once


def test_pipeline_runs_skips_and_reruns_only_dependants(tiny_project):
    tiny_project, first = tiny_project
    assert stages_in(first, r"Running stage '(\w+)'") == set(STAGE_ORDER)
    metrics = yaml.safe_load((tiny_project / "metrics" / "evaluate.json").read_text())
    for key in ("miou", "macc", "psnr", "ssim", "teacher_miou", "geometry_oracle_miou", "consistency", "render_fps"):
        assert key in metrics
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["psnr"] > 5.0
    # the tiny run segments (0.56 against its teacher's 0.65 when written): a constant label map scores 0.09 here
    assert metrics["miou"] > 0.5 * metrics["teacher_miou"] > 0
    from econsg.artifacts import open_artifact

    predicted = open_artifact(tiny_project / "artifacts" / "room" / "evaluate.zarr", "evaluate")["pred_labels"][:]
    assert len(np.unique(predicted[predicted >= 0])) >= 3, "several classes segmented, not one everywhere"
    assert 0.0 <= metrics["geometry_oracle_miou"] <= 1.0
    assert set(metrics["geometry_oracle_per_class_iou"]) == set(metrics["per_class_iou"])
    # the 3D selections by text (what `econsg edit` picks) are scored for every class some Gaussian carries
    assert 0.0 <= metrics["selection_miou"] <= 1.0 and metrics["selection_per_class_iou"]
    assert metrics["selection_miou"] == pytest.approx(np.mean(list(metrics["selection_per_class_iou"].values())))
    # an open-set class counts as present only where the held-out ground truth holds it (per_class_iou lists those)
    assert metrics["open_set_classes_present"] == [c for c in metrics["open_set_classes"] if c in metrics["per_class_iou"]]

    second = dvc(tiny_project, "repro")
    assert not stages_in(second, r"Running stage '(\w+)'")
    assert stages_in(second, r"Stage '(\w+)' didn't change, skipping") == set(STAGE_ORDER)

    # a code change that leaves crr's output as it was reruns crr alone: the times and git revision a rerun
    # writes are in each store's run record, which .dvcignore keeps out of the store's DVC hash
    crr_code = tiny_project / "stages" / "crr.py"  # crr's code alone
    crr_code.write_text(crr_code.read_text() + "\n# an edit that changes nothing crr computes\n")
    unchanged = dvc(tiny_project, "repro")
    assert stages_in(unchanged, r"Running stage '(\w+)'") == {"crr"}
    assert stages_in(unchanged, r"Stage '(\w+)' didn't change, skipping") == set(STAGE_ORDER) - {"crr"}
    splat_code = tiny_project / "stages" / "splat.py"  # splat trains again from scratch (its code digest changed),
    splat_code.write_text(splat_code.read_text() + "\n# an edit that changes nothing splat computes\n")
    retrained = dvc(tiny_project, "repro")  # to the same Gaussians: its training time must not rerun evaluate
    assert stages_in(retrained, r"Running stage '(\w+)'") == {"splat"}

    params_path = tiny_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    original = yaml.safe_dump(params, sort_keys=False)
    params["crr"]["tau1"] = 0.6
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    # a dry run schedules the changed stage only (its dependants wait for its new outputs): never extract
    assert stages_in(dvc(tiny_project, "repro", "--dry"), r"Running stage '(\w+)'") == {"crr"}

    params_path.write_text(original)
    params = yaml.safe_load(original)
    params["autoencode"]["latent_dim"] = 8
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(tiny_project, "repro")
    assert stages_in(rerun, r"Running stage '(\w+)'") == {"autoencode", "splat", "evaluate"}
    assert stages_in(rerun, r"Stage '(\w+)' didn't change, skipping") == {"synth", "ingest", "extract", "crr", "fuse"}

    # a setting of the backend not in use: extract reruns to the same store, and only evaluate (which reads the extract
    # section for its text encoder) follows
    params["extract"]["openclip_sam"]["points_per_side"] = 16
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    unused = dvc(tiny_project, "repro")
    assert stages_in(unused, r"Running stage '(\w+)'") == {"extract", "evaluate"}


def test_same_params_and_seed_give_identical_artifacts(tiny_project):
    """Rerun extract..splat into a second folder: every store's content hash matches the first run."""
    from econsg.artifacts import read_provenance

    workdir, _ = tiny_project
    second = workdir / "second"
    second.mkdir(exist_ok=True)
    shutil.copytree(workdir / "artifacts" / "room" / "scene.zarr", second / "scene.zarr", dirs_exist_ok=True)
    sets = [f"paths.artifacts={second}", f"paths.metrics={workdir / 'm2'}", f"paths.plots={workdir / 'p2'}",
            f"paths.checkpoints={workdir / 'c2'}"]
    for stage in ("extract", "crr", "fuse", "autoencode", "splat"):
        run_stage(workdir, stage, sets)
        first_hash = read_provenance(workdir / "artifacts" / "room" / f"{stage}.zarr").content_hash
        assert read_provenance(second / f"{stage}.zarr").content_hash == first_hash, stage


def test_dvc_plots_show_draws_the_per_class_iou_and_evaluate_pictures(tiny_project):
    """`dvc plots show`: per-class IoU as sorted bars with the values evaluate wrote, its PNGs as images."""
    import json

    workdir, _ = tiny_project
    out = dvc(workdir, "plots", "show", "--json", "-o", str(workdir / "dvc_plots"))  # stdout, then any warnings
    shown = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]["data"]
    bars = shown["plots/evaluate/per_class_iou.json"][0]
    assert bars["type"] == "vega" and bars["content"]["title"]["text"] == "held-out IoU per class"
    values = {row["class"]: row["iou"] for row in bars["content"]["data"]["values"]}
    written = json.loads((workdir / "metrics" / "evaluate.json").read_text())["per_class_iou"]
    assert values == pytest.approx(written)
    images = {name for name, entries in shown.items() if entries[0]["type"] == "image"}
    assert "plots/evaluate/confusion.png" in images
    assert any(name.startswith("plots/evaluate/view_") for name in images), "the held-out view panels"
    for curve, x in (("autoencode_curve.csv", "iteration"), ("splat_curve.csv", "step")):
        # without axes DVC drew the last column (the learning rate, `sem`) against the row number, not the step
        content = shown[f"plots/{curve}"][0]["content"]
        ys = {layer["encoding"]["y"]["field"] for layer in content["layer"] if "y" in layer.get("encoding", {})}
        assert content["encoding"]["x"]["field"] == x and ys == {"loss"}, curve
        with (workdir / "plots" / curve).open() as f:
            first = dict(zip(f.readline().strip().split(","), f.readline().strip().split(",")))
        point = content["data"]["values"][0]
        assert float(point[x]) == float(first[x]) and float(point["loss"]) == float(first["loss"]), curve


def rerun_stage(workdir: Path, name: str, stage: str, setting: str) -> Path:
    """`stage` rerun with one `section.key=value` on copies of the tiny run's upstream stores; returns their folder."""
    other = upstream_copies(workdir, name, stage)
    run_stage(workdir, stage, [*elsewhere(other), setting])
    return other


def upstream_copies(workdir: Path, name: str, stage: str) -> Path:
    """Copies of the tiny run's stores upstream of `stage` in the folder `name`; returns it."""
    other = workdir / name
    paths = Params().paths
    for upstream in STAGE_ORDER[1 : STAGE_ORDER.index(stage)]:
        store = paths.artifact(upstream).name
        shutil.copytree(workdir / "artifacts" / "room" / store, other / store, dirs_exist_ok=True)
    return other


def elsewhere(other: Path) -> list[str]:
    """The overrides that put a run's stores, metrics, plots and checkpoints in `other`, leaving the tiny project's
    own as they are for the tests after it (DVC would rerun a stage whose plots changed)."""
    return [f"paths.artifacts={other}", f"paths.metrics={other / 'metrics'}", f"paths.plots={other / 'plots'}",
            f"paths.checkpoints={other / 'checkpoints'}"]


def test_fuse_keeps_the_features_of_pixels_crr_ignored(tiny_project):
    """Default fuse lifts ignored pixels' features too (points crr could not label stay, unlabelled);
    features_from_ignored=false fuses labelled pixels only, so every point it keeps has a label."""
    import zarr

    workdir, _ = tiny_project
    other = rerun_stage(workdir, "labelled_only", "fuse", "fuse.features_from_ignored=false")
    default = zarr.open_group(workdir / "artifacts" / "room" / "fuse.zarr", mode="r")["label"][...]
    labelled_only = zarr.open_group(other / "fuse.zarr", mode="r")["label"][...]
    assert (labelled_only >= 0).all()
    assert (default < 0).any() and len(default) > len(labelled_only)
    assert (default >= 0).sum() == len(labelled_only)  # the same labelled voxels, plus the unlabelled ones
    metrics = yaml.safe_load((workdir / "metrics" / "fuse.json").read_text())
    assert metrics["labelled_points"] == int((default >= 0).sum())


def test_evaluate_labels_the_pixels_a_word_the_scene_lacks_explains_with_that_word(tiny_project):
    """A distractor in evaluate.vocabulary takes the pixels it explains best: a wrong label, which the label maps keep
    (they index it after the scene's classes) where it read as unlabelled before. Adding a word moves a pixel only
    to that word; the scores and the open-set classes stay the scene's."""
    from econsg.artifacts import open_artifact

    workdir, _ = tiny_project
    classes = list(open_artifact(workdir / "artifacts/room/scene.zarr", "ingest").attrs["class_names"])
    default = open_artifact(workdir / "artifacts/room/evaluate.zarr", "evaluate")
    distractor = "a striped armchair"
    vocabulary = [*default.attrs["eval_vocabulary"], distractor]
    other = rerun_stage(workdir, "distractor", "evaluate", f"evaluate.vocabulary=[{', '.join(vocabulary)}]")
    evaluated = open_artifact(other / "evaluate.zarr", "evaluate")
    assert list(evaluated.attrs["class_names"]) == [*classes, distractor]
    before, after = default["pred_labels"][:], evaluated["pred_labels"][:]
    moved = before != after
    assert moved.any(), "the distractor explains some pixels best"
    assert (after[moved] == len(classes)).all(), "each to the distractor's own id, none to unlabelled"
    metrics = yaml.safe_load((other / "metrics" / "evaluate.json").read_text())
    assert distractor not in metrics["open_set_classes"] and distractor not in metrics["per_class_iou"]


def test_evaluate_refuses_a_scene_class_in_another_case_and_warns_of_a_vocabulary_naming_no_class(tiny_project):
    """'Wall' embeds as 'wall' but names no ground-truth class: refused before any work, the store left as it was; a
    vocabulary of words the scene lacks scores nothing, which evaluate says."""
    workdir, _ = tiny_project
    other = rerun_stage(workdir, "no_class_named", "evaluate", "evaluate.vocabulary=[mug, teapot]")
    assert yaml.safe_load((other / "metrics" / "evaluate.json").read_text())["miou"] is None
    sets = [*elsewhere(other), "evaluate.vocabulary=[Wall, floor]"]
    before = (other / "evaluate.zarr" / "zarr.json").read_bytes()
    refused = stage_process(workdir, "evaluate", sets)
    assert refused.returncode == 1 and "evaluate.vocabulary: 'Wall' for 'wall'" in refused.stderr, refused.stderr
    assert (other / "evaluate.zarr" / "zarr.json").read_bytes() == before
    warned = stage_process(workdir, "evaluate", [*elsewhere(other), "evaluate.vocabulary=[mug, teapot]"])
    assert warned.returncode == 0 and "names none of the scene's classes" in warned.stderr + warned.stdout


def test_a_broken_view_of_an_upstream_store_is_named_with_its_store(tiny_project):
    """A label out of the vocabulary in extract.zarr (or a feature source past its table in crr.zarr) stops crr (fuse)
    naming the store, the view and the stage to rerun, and the previous store stays."""
    import zarr

    from econsg.artifacts import read_provenance

    workdir, _ = tiny_project
    broken = workdir / "broken"
    paths = Params().paths
    for upstream in ("ingest", "extract", "crr"):
        store = paths.artifact(upstream).name
        shutil.copytree(workdir / "artifacts" / "room" / store, broken / store, dirs_exist_ok=True)
    train = np.flatnonzero(zarr.open_group(broken / "scene.zarr", mode="r")["is_train"][:])
    sets = elsewhere(broken)
    labels = zarr.open_group(broken / "extract.zarr", mode="r+")["labels"]
    good = labels[int(train[1])]
    labels[int(train[1])] = np.where(good >= 0, 40, good).astype(good.dtype)
    restamp(broken / "extract.zarr")
    kept = read_provenance(broken / "crr.zarr").content_hash
    result = stage_process(workdir, "crr", sets)
    assert result.returncode == 1 and re.search(rf"extract.zarr: view {train[1]} \(\S+\): labels: .*rerun extract", result.stderr)
    assert read_provenance(broken / "crr.zarr").content_hash == kept, "the previous crr.zarr stays"
    labels[int(train[1])] = good
    restamp(broken / "extract.zarr", readers=(broken / "crr.zarr",))
    sources = zarr.open_group(broken / "crr.zarr", mode="r+")["feature_source"]
    sources[int(train[0]), 0, 0] = 10**6
    restamp(broken / "crr.zarr")
    result = stage_process(workdir, "fuse", sets)
    assert result.returncode == 1 and re.search(rf"crr.zarr: view {train[0]} \(\S+\): feature_source: rows up to 1000000",
                                                result.stderr), result.stderr


def test_fuse_min_labelled_share_unnames_mostly_ignored_points_only(tiny_project):
    """fuse.min_labelled_share: a point whose voxel crr mostly ignored loses its label; nothing else changes."""
    import zarr

    workdir, _ = tiny_project
    other = rerun_stage(workdir, "strict_labels", "fuse", "fuse.min_labelled_share=0.5")
    default = zarr.open_group(workdir / "artifacts" / "room" / "fuse.zarr", mode="r")
    strict = zarr.open_group(other / "fuse.zarr", mode="r")
    np.testing.assert_array_equal(strict["xyz"][...], default["xyz"][...])
    np.testing.assert_array_equal(strict["labelled_share"][...], default["labelled_share"][...])
    share, label, strict_label = default["labelled_share"][...], default["label"][...], strict["label"][...]
    assert ((share > 0) & (share < 0.5) & (label >= 0)).any(), "the tiny scene has mostly-ignored labelled points"
    np.testing.assert_array_equal(strict_label, np.where(share < 0.5, -1, label))


def test_fuse_max_points_scores_the_points_it_keeps(tiny_project):
    """fuse.max_points subsamples the fused points; its point scores count the pixels of the points it stores."""
    import json

    workdir, _ = tiny_project
    other = rerun_stage(workdir, "few_points", "fuse", "fuse.max_points=40")
    full = json.loads((workdir / "metrics" / "fuse.json").read_text())
    few = json.loads((other / "metrics" / "fuse.json").read_text())
    assert few["points"] == 40 < full["points"]
    assert 0 < few["scored_samples"] < full["scored_samples"] * 40 / full["points"] * 4, "about the kept points' share"


def test_fuse_agreement_scores_training_pixels_and_can_weigh_splats_2d_terms(tiny_project):
    """fuse writes each training pixel's multi-view agreement (a share, NaN only where no depth sample fell and on the
    held-out views); splat.pixel_weights=agreement changes what the semantic features learn, never the geometry."""
    import zarr

    workdir, _ = tiny_project
    run = workdir / "artifacts" / "room"
    scene, fuse = zarr.open_group(run / "scene.zarr", mode="r"), zarr.open_group(run / "fuse.zarr", mode="r")
    agreement, is_train = fuse["agreement"][...].astype(np.float32), scene["is_train"][...]
    assert np.isnan(agreement[~is_train]).all()
    train = agreement[is_train]
    sampled = scene["depth"][...][is_train] > 0
    assert np.isfinite(train[sampled]).all() and np.isnan(train[~sampled]).all()
    assert train[sampled].min() > 0 and train[sampled].max() <= 1 and (train[sampled] < 1).any()
    metrics = yaml.safe_load((workdir / "metrics" / "fuse.json").read_text())
    assert 0 < metrics["agreement_ignored"] < 1 and 0 < metrics["agreement_labelled"] <= 1

    from econsg.cli import _fuse_store

    stale = workdir / "stale_fuse"
    shutil.copytree(run / "fuse.zarr", stale / "fuse.zarr")
    shutil.rmtree(stale / "fuse.zarr" / "agreement")  # a store written before fuse scored agreement
    assert _fuse_store(Params(paths={"artifacts": str(run)})) is not None
    assert _fuse_store(Params(paths={"artifacts": str(stale)})) is None, "the audit draws crr's tiles without it"
    assert _fuse_store(Params(paths={"artifacts": str(workdir / "no_run")})) is None

    other = rerun_stage(workdir, "agreement_weights", "splat", "splat.pixel_weights=agreement")
    default, weighted = zarr.open_group(run / "splat.zarr", mode="r"), zarr.open_group(other / "splat.zarr", mode="r")
    np.testing.assert_array_equal(weighted["means"][...], default["means"][...])
    assert not np.allclose(weighted["features"][...], default["features"][...])


def test_splat_says_when_no_step_of_the_run_densifies(tiny_project):
    """The tiny run densifies first at step 10: cut to 8 steps, splat still trains, and says that nothing densified."""
    workdir, _ = tiny_project
    other = upstream_copies(workdir, "no_densification", "splat")
    result = stage_process(workdir, "splat", [*elsewhere(other), "splat.iterations=8"])
    assert result.returncode == 0, result.stderr
    assert "no step densifies or prunes: the first would be step 10" in result.stderr
    assert (other / "splat.zarr").is_dir()


def test_crr_that_labels_nothing_fails_naming_tau1_and_keeps_the_previous_store(tiny_project):
    """crr.tau1 above every confidence leaves no label to train on: crr stops with an error that names the
    parameter and the highest confidence, before any later stage trains on ignore alone, and the previous
    crr.zarr is untouched."""
    from econsg.artifacts import read_provenance

    workdir, _ = tiny_project
    other = workdir / "nothing_labelled"
    for store in ("scene", "extract", "crr"):
        shutil.copytree(workdir / "artifacts" / "room" / f"{store}.zarr", other / f"{store}.zarr", dirs_exist_ok=True)
    before = read_provenance(other / "crr.zarr").content_hash
    result = stage_process(workdir, "crr", [*elsewhere(other),
                                            "crr.tau1_mode=absolute", "crr.tau1=1.0"])
    assert result.returncode == 1, result.stderr
    assert "no pixel of any training view keeps a label" in result.stderr and "crr.tau1=1.0" in result.stderr
    assert "the teacher's confidence reaches at most" in result.stderr
    assert read_provenance(other / "crr.zarr").content_hash == before
    assert not (other / "metrics" / "crr.json").exists()


@pytest.mark.parametrize("array", ["features", "confidence"])
def test_crr_refuses_extract_values_holding_nan_or_inf_naming_the_view_and_keeps_the_previous_store(tiny_project, array):
    """One inf in extract's features would turn crr's mask-class means, fuse's points and every latent into NaN
    without an error: crr stops at the view that holds it. A NaN confidence made tau1 NaN ('relative') or was left
    out of the quantile."""
    import zarr

    from econsg.artifacts import read_provenance

    workdir, _ = tiny_project
    other = workdir / f"inf_{array}"
    for store in ("scene", "extract", "crr"):
        shutil.copytree(workdir / "artifacts" / "room" / f"{store}.zarr", other / f"{store}.zarr", dirs_exist_ok=True)
    before = read_provenance(other / "crr.zarr").content_hash
    values = zarr.open_group(other / "extract.zarr", mode="r+")[array]
    from econsg.scene.store import open_scene

    view = int(open_scene(other / "scene.zarr").train_indices[1])
    values[(view,) + (0,) * (values.ndim - 1)] = np.inf if array == "features" else np.nan
    restamp(other / "extract.zarr")
    result = stage_process(workdir, "crr", elsewhere(other))
    assert result.returncode == 1, result.stderr
    assert f"extract.zarr: '{array}' of view {view} (" in result.stderr and "hold NaN or inf" in result.stderr
    assert read_provenance(other / "crr.zarr").content_hash == before


@pytest.mark.parametrize("stage", ["splat", "evaluate"])
def test_gsplat_on_a_cpu_is_refused_before_any_input_is_read(tiny_project, stage):
    """It failed at the first render, naming `backend` (not splat.backend) and offering 'gsplat' back as a choice."""
    workdir, _ = tiny_project
    other = workdir / f"gsplat_on_cpu_{stage}"  # empty: a stage that read an input first would say it is missing
    result = stage_process(workdir, stage, [*elsewhere(other), "splat.backend=gsplat", "device=cpu"])
    assert result.returncode == 1 and "splat.backend: 'gsplat' needs a CUDA device" in result.stderr, result.stderr


def test_autoencode_refuses_fused_points_without_labels_before_training(tiny_project):
    """The paper's autoencoder loss has CE terms on the fused labels: with none, autoencode stops at once with an
    error naming fuse.zarr's label array, instead of training on reconstruction alone and failing at its metrics."""
    import zarr

    workdir, _ = tiny_project
    other = workdir / "unlabelled_points"
    for store in ("scene", "extract", "crr", "fuse"):
        shutil.copytree(workdir / "artifacts" / "room" / f"{store}.zarr", other / f"{store}.zarr", dirs_exist_ok=True)
    label = zarr.open_group(other / "fuse.zarr", mode="r+")["label"]
    label[...] = -1
    restamp(other / "fuse.zarr")
    result = stage_process(workdir, "autoencode", elsewhere(other))
    assert result.returncode == 1, result.stderr
    assert "fuse.zarr: label: no fused point carries a class label" in result.stderr
    assert "autoencoder" not in result.stderr.split("error:")[0], "it stops before the training loop"
    assert not (other / "autoencode.zarr").exists()


def test_random_initial_features_ablation_trains_the_same_geometry(tiny_project):
    """splat.init_features=random (the feature-distillation ablation) draws its features from their own generator:
    the Gaussians' geometry and colours train exactly as in the full method (semantic gradients stop at f), so
    the ablation's figures differ by semantics alone; the features do differ."""
    import zarr

    workdir, _ = tiny_project
    other = rerun_stage(workdir, "random_init", "splat", "splat.init_features=random")
    default = zarr.open_group(workdir / "artifacts" / "room" / "splat.zarr", mode="r")
    ablation = zarr.open_group(other / "splat.zarr", mode="r")
    for name in ("means", "quats", "scales", "opacities", "sh0"):
        np.testing.assert_array_equal(ablation[name][...], default[name][...], err_msg=name)
    assert not np.allclose(ablation["features"][...], default["features"][...])


def test_the_semantic_gradient_benchmark_takes_each_term_alone_on_the_tiny_run(tiny_project, monkeypatch):
    """benchmarks/semantic_gradients.py: one norm per term and view, each term built as splat builds it with the
    other's weight at 0, so a term whose own weight is 0 pulls on f not at all."""
    import math

    from econsg.config import load_params
    from tests.helpers import load_benchmark

    workdir, _ = tiny_project
    monkeypatch.chdir(workdir)
    with load_benchmark(ROOT / "benchmarks" / "semantic_gradients.py") as module:
        norms = module.term_gradients(load_params(workdir / "params.yaml"), [0, 1], [1.0, 0.05])
        no_ce = module.term_gradients(load_params(workdir / "params.yaml", ["splat.lambda_2d=0"]), [0], [1.0])
    assert set(norms) == {"Dist", "CE T=1", "CE T=0.05"}
    assert all(len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values) for values in norms.values())
    assert no_ce["CE T=1"] == [0.0] and no_ce["Dist"] == norms["Dist"][:1]


def test_evaluate_scores_a_scene_without_labels_on_what_needs_none(tiny_project):
    """Ground truth removed from scene.zarr: evaluate still writes RGB quality, consistency, FPS and latency,
    no segmentation scores, and `econsg score` says there is nothing to score against."""
    import json

    from typer.testing import CliRunner

    from econsg.cli import app

    workdir, _ = tiny_project
    unlabelled = workdir / "unlabelled"
    for store in ("scene", "extract", "autoencode", "splat"):
        shutil.copytree(workdir / "artifacts" / "room" / f"{store}.zarr", unlabelled / f"{store}.zarr", dirs_exist_ok=True)
    for array in ("gt_class", "gt_instance"):
        shutil.rmtree(unlabelled / "scene.zarr" / array)
    restamp(unlabelled / "scene.zarr", readers=tuple(unlabelled / f"{s}.zarr" for s in ("extract", "autoencode", "splat")))
    run_stage(workdir, "evaluate", elsewhere(unlabelled))
    metrics = json.loads((unlabelled / "metrics" / "evaluate.json").read_text())
    assert metrics["has_ground_truth"] is False
    assert metrics["psnr"] > 5.0 and 0.0 <= metrics["consistency"] <= 1.0 and metrics["render_fps"] > 0
    assert not {"miou", "teacher_miou", "per_class_iou"} & set(metrics)
    scored = CliRunner().invoke(app, ["score", "--store", str(unlabelled / "evaluate.zarr")])
    assert scored.exit_code == 1 and "no ground-truth label maps" in scored.stderr
