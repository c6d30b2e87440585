"""pipelines/<dataset>/: a DVC subproject; params validate, every per-scene stage agrees with
econsg.pipeline.STAGES for every run (the paths its command writes are the outs dvc.yaml declares), and the
files match their generator."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from econsg.config import Params, apply_overrides, load_params, parse_params
from econsg.pipeline import STAGE_ORDER, STAGES

ROOT = Path(__file__).resolve().parents[1]
DATASETS = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/dvc.yaml"))
ITEM = re.compile(r"\$\{item\.(\w+)\}")
REQUIRED = {"lerf_ovs": ("label",)}  # what a benchmark's protocol reads in each scene's folder (LangSplat's labels)


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _substitute(value, run: dict):
    if isinstance(value, str):
        return ITEM.sub(lambda m: str(run[m.group(1)]), value)
    if isinstance(value, list):
        return [_substitute(v, run) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, run): _substitute(v, run) for k, v in value.items()}
    return value


def _names(entries) -> list[str]:
    """dvc.yaml outs / metrics / plots entries (plain paths or {path: options}) as paths."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_the_five_benchmark_pipelines_exist():
    assert set(DATASETS) >= {"replica", "replica_semantic", "scannet", "ovs3d", "lerf_ovs"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_params_validate(dataset):
    params = load_params(ROOT / "pipelines" / dataset / "params.yaml")
    assert params.extract.backend == "openclip_sam"  # real scenes: the synthetic teacher needs the demo's truth
    raw = _load(ROOT / "pipelines" / dataset / "params.yaml")
    declared = {key for name in STAGE_ORDER[1:] for key in STAGES[name].params}
    assert declared <= set(raw), "every params key a stage declares must be in the file for DVC"


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_run_of_every_stage_matches_the_stage_specs(dataset):
    folder = ROOT / "pipelines" / dataset
    dvc = _load(folder / "dvc.yaml")
    scenes = _load(folder / "scenes.yaml")
    runs = scenes["runs"]
    assert dvc["vars"] == ["scenes.yaml"]
    assert sorted({r["scene"] for r in runs.values()}) == sorted(scenes["scenes"])
    assert set(dvc["stages"]) == set(STAGE_ORDER[1:]) | {"summary"}
    params_file = "params.yaml"  # the stages run in the subproject's folder
    base = _load(folder / params_file)
    for name in STAGE_ORDER[1:]:
        entry = dvc["stages"][name]
        assert entry["foreach"] == "${runs}"
        spec = STAGES[name]
        for run in runs.values():
            stage = _substitute(entry["do"], run)
            assert "wdir" not in stage, "stages run in pipelines/<dataset>/, inside their subproject"
            words = shlex.split(stage["cmd"])
            assert words[:4] == ["python", "-m", f"stages.{name}", params_file]
            assert words[4::2] == ["--set"] * len(words[4::2])
            params = parse_params(apply_overrides(base, words[5::2], params_file), params_file)
            assert params.paths.data == f"../../data/{dataset}/{run['scene']}"
            for key in ("artifacts", "metrics", "plots", "checkpoints"):
                assert getattr(params.paths, key) == f"{key}/{run['path']}", "outputs stay inside the subproject"
            where = f"{dataset}: {name}@{run['scene']} {run['setting']}"
            assert stage["params"] == [{params_file: list(spec.params)}], where
            data_deps = [spec.resolve(d, params) for d in spec.deps]
            assert stage["deps"][: len(data_deps)] == data_deps, where
            if name in ("ingest", "evaluate"):  # evaluate reads a benchmark's label files (LERF-OVS, 3D-OVS) itself
                assert params.paths.data in stage["deps"], where
            # what the protocol reads in the scene's folder: ingest's deps, so that DVC stops a run lacking it at once
            required = [f"{params.paths.data}/{item}" for item in REQUIRED.get(dataset, ())] if name == "ingest" else []
            assert stage["deps"][len(data_deps) : len(data_deps) + len(required)] == required, where
            # the code as files: DVC applies no .dvcignore outside the subproject, so a folder would hash __pycache__
            code = [d.removeprefix("../../") for d in stage["deps"][len(data_deps) + len(required) :]]
            assert all((ROOT / c).is_file() and c.endswith(".py") for c in code), where
            expected = {f.relative_to(ROOT).as_posix() for c in spec.code
                        for f in ((ROOT / c).rglob("*.py") if (ROOT / c).is_dir() else [ROOT / c])}
            assert set(code) == expected and len(code) == len(expected), where
            assert stage["outs"] == [spec.resolve(o, params) for o in spec.outs], where
            assert _names(stage.get("metrics")) == [spec.resolve(m, params) for m in spec.metrics], where
            assert _names(stage.get("plots")) == [spec.resolve(p, params) for p in spec.plots], where


@pytest.mark.parametrize("dataset", DATASETS)
def test_summary_reads_every_runs_evaluate_metrics(dataset):
    folder = ROOT / "pipelines" / dataset
    runs = _load(folder / "scenes.yaml")["runs"]
    summary = _load(folder / "dvc.yaml")["stages"]["summary"]
    evaluate = _load(folder / "dvc.yaml")["stages"]["evaluate"]["do"]
    expected = [_names(_substitute(evaluate["metrics"], run))[0] for run in runs.values()]
    assert summary["deps"][: len(expected)] == expected
    words = shlex.split(summary["cmd"])
    assert words[:4] == ["python", "-m", "econsg.summary", dataset] and words[4 : 4 + len(expected)] == expected
    assert words[-2:] == ["--out", "metrics"]
    assert _names(summary["metrics"]) == ["metrics/summary.json"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_benchmark_is_a_dvc_subproject_the_root_does_not_collect(dataset):
    """A .dvc/ of its own: the root's `dvc repro` skips the folder (its ~100 foreach stages cost the root's
    no-op repro 1.5 s when they were root stages); every path its stages write is inside it."""
    folder = ROOT / "pipelines" / dataset
    assert (folder / ".dvc" / "config").is_file() and (folder / ".dvc" / ".gitignore").is_file()
    do = [entry["do"] for name, entry in _load(folder / "dvc.yaml")["stages"].items() if name != "summary"]
    written = [path for stage in do for path in _names(stage["outs"]) + _names(stage.get("metrics")) + _names(stage.get("plots"))]
    assert written and not [path for path in written if path.startswith("..")]


def test_each_benchmark_keeps_the_stores_run_records_out_of_their_dvc_hash(tmp_path):
    """DVC reads a subproject's own .dvcignore, not the root's: without one, a rerun writing the same data would rerun
    every later stage of a benchmark (its store's run record holds times)."""
    from econsg.artifacts import RUN_RECORD

    dataset = DATASETS[0]
    store = _names(next(entry["do"] for name, entry in _load(ROOT / "pipelines" / dataset / "dvc.yaml")["stages"].items()
                        if name == "crr")["outs"])[0]
    record = store.replace("${item.path}", "room_0/sparse") + f"/{RUN_RECORD}/zarr.json"
    found = subprocess.run([str(Path(sys.executable).with_name("dvc")), "check-ignore", "-d", record],
                           cwd=ROOT / "pipelines" / dataset, capture_output=True, text=True,
                           env={**os.environ, "DVC_SITE_CACHE_DIR": str(tmp_path)})  # not /var/tmp/dvc
    assert found.returncode == 0 and f"{RUN_RECORD}/" in found.stdout, found.stdout + found.stderr
    for other in DATASETS:
        assert f"{RUN_RECORD}/" in (ROOT / "pipelines" / other / ".dvcignore").read_text().splitlines()


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_runs_evaluate_pictures_are_a_plot(dataset):
    """As at the root, `dvc plots show` draws each run's per-class IoU bars and evaluate PNGs, titled by run."""
    folder = ROOT / "pipelines" / dataset
    plots = {path: options for entry in _load(folder / "dvc.yaml")["plots"] for path, options in entry.items()}
    paths = [run["path"] for run in _load(folder / "scenes.yaml")["runs"].values()]
    assert set(plots) == {f"plots/{path}/evaluate" for path in paths}
    assert {(o["template"], o["x"], o["y"]) for o in plots.values()} == {("bar_horizontal_sorted", "iou", "class")}
    assert all(options["title"].startswith(f"{path}: ") for path in paths for options in [plots[f"plots/{path}/evaluate"]])


def _generate_module():
    spec = importlib.util.spec_from_file_location("pipelines_generate", ROOT / "pipelines" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(generate)
    return generate


def test_generated_files_are_up_to_date():
    generate = _generate_module()
    for dataset in generate.DATASETS:
        for rel, text in generate.files(dataset).items():
            assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `python pipelines/generate.py`"


def test_regenerating_keeps_a_subprojects_own_dvc_config(tmp_path, monkeypatch):
    """`dvc remote add` writes into pipelines/<dataset>/.dvc/config: generate.py seeds that file once, then leaves it."""
    generate = _generate_module()
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main([]) == 0
    config = tmp_path / "pipelines" / "replica" / ".dvc" / "config"
    assert "analytics = false" in config.read_text()
    config.write_text(config.read_text() + "['remote \"store\"']\n    url = /mnt/store\n")
    assert generate.main([]) == 0 and "/mnt/store" in config.read_text()
    assert generate.main(["--check"]) == 0
    (tmp_path / "pipelines" / "replica" / "params.yaml").write_text("stale\n")
    assert generate.main(["--check"]) == 1


def _git_ignored(paths: list[str]) -> set[str]:
    """Those of `paths` (relative to the repository, existing or not) that its .gitignore files ignore."""
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths),
                            capture_output=True, text=True, check=False)
    return set(result.stdout.split())


def _written(stages: list[dict], prefix: str) -> tuple[list[str], list[str]]:
    """(paths DVC caches, paths with cache: false) of the stage entries, prefixed to be repository-relative."""
    cached, uncached = [], []
    for stage in stages:
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            (uncached if options.get("cache") is False else cached).append(f"{prefix}{path}")
    return cached, uncached


@pytest.mark.parametrize("dataset", ["(root)", *DATASETS])
def test_git_keeps_metrics_and_curves_and_ignores_what_dvc_caches(dataset):
    """cache: false metrics and curves are git's to keep, so `dvc exp show` and `dvc metrics diff` read them from
    every commit and experiment (with them ignored, exp show printed '!' for each); cached outputs are DVC's."""
    if dataset == "(root)":
        paths = Params().paths
        text = (ROOT / "dvc.yaml").read_text()
        for key in ("data", "artifacts", "metrics", "plots"):
            text = text.replace("${paths.%s}" % key, getattr(paths, key))
        stages, prefix = list(yaml.safe_load(text)["stages"].values()), ""
    else:
        folder = ROOT / "pipelines" / dataset
        entries = _load(folder / "dvc.yaml")["stages"]
        runs = _load(folder / "scenes.yaml")["runs"].values()
        stages = [_substitute(entry["do"], run) for entry in entries.values() if "foreach" in entry for run in runs]
        stages += [entry for entry in entries.values() if "foreach" not in entry]
        prefix = f"pipelines/{dataset}/"
    cached, uncached = _written(stages, prefix)
    assert cached and uncached
    ignored = _git_ignored(cached + uncached)
    assert not ignored & set(uncached), f"git ignores cache: false outputs: {sorted(ignored & set(uncached))[:3]}"
    assert set(cached) <= ignored, f"cached outputs git would track: {sorted(set(cached) - ignored)[:3]}"
