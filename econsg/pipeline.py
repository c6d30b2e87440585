"""The demo pipeline's stages: what each reads, which params keys it depends on, what it writes.

This is the one source of truth for stage inputs and outputs; `dvc.yaml` templates the same paths
from params.yaml and `tests/test_dvc.py` checks that both agree, and that a stage's `code` lists every econsg module
it computes with (what its script imports, short of the I/O and config modules), so that editing one reruns it.
"""

from __future__ import annotations

import hashlib
import importlib
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from econsg.artifacts import store_lock
from econsg.config import Params, load_params
from econsg.config.base import Section
from econsg.errors import EconsgError, refused_path
from econsg.progress import report

STAGE_ORDER = ("synth", "ingest", "extract", "crr", "fuse", "autoencode", "splat", "evaluate")


@dataclass(frozen=True)
class StageSpec:
    """A DVC stage. Paths are templates over the `paths` section: `{data}`, `{artifacts}`, `{metrics}`, `{plots}`."""

    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    code: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()

    def resolve(self, template: str, params: Params) -> str:
        p = params.paths
        return template.format(data=p.data, artifacts=p.artifacts, metrics=p.metrics, plots=p.plots)


def code_digest(stage: str, root: Path | None = None) -> str:
    """sha256 over the source files of a stage's `code` deps (every .py below each path, by path): it changes when
    an edit would make DVC rerun the stage, so that splat's checkpoints do not resume a run of other code."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in STAGES[stage].code:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f"{file.relative_to(root).as_posix()}:".encode() + file.read_bytes())
    return digest.hexdigest()


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "synth",
            params=("synth",),
            deps=(),
            code=("stages/synth.py", "econsg/scene/synthetic.py"),
            outs=("{data}",),
        ),
        StageSpec(
            "ingest",
            params=("ingest", "seed"),
            deps=("{data}",),
            code=("stages/ingest.py", "econsg/scene", "econsg/fusion.py"),
            outs=("{artifacts}/scene.zarr",),
        ),
        StageSpec(
            "extract",
            params=("extract", "seed", "device"),
            deps=("{artifacts}/scene.zarr",),
            code=("stages/extract.py", "econsg/features", "econsg/config/extract.py"),  # `auto` temperatures resolve there
            outs=("{artifacts}/extract.zarr",),
            metrics=("{metrics}/extract.json",),
        ),
        StageSpec(
            "crr",
            params=("crr",),
            deps=("{artifacts}/extract.zarr", "{artifacts}/scene.zarr"),
            code=("stages/crr.py", "econsg/crr.py", "econsg/features/base.py", "econsg/evaluation.py", "econsg/metrics.py",
                  "econsg/fusion.py"),
            outs=("{artifacts}/crr.zarr",),
            metrics=("{metrics}/crr.json",),
        ),
        StageSpec(
            "fuse",
            params=("fuse", "seed"),
            deps=("{artifacts}/scene.zarr", "{artifacts}/extract.zarr", "{artifacts}/crr.zarr"),
            code=("stages/fuse.py", "econsg/fusion.py", "econsg/features/base.py", "econsg/evaluation.py",
                  "econsg/metrics.py", "econsg/scene/scale.py"),
            outs=("{artifacts}/fuse.zarr",),
            metrics=("{metrics}/fuse.json",),
        ),
        StageSpec(
            "autoencode",
            params=("autoencode", "seed", "device"),
            deps=("{artifacts}/scene.zarr", "{artifacts}/extract.zarr", "{artifacts}/crr.zarr", "{artifacts}/fuse.zarr"),
            code=("stages/autoencode.py", "econsg/autoencoder.py", "econsg/crr.py", "econsg/features/base.py"),
            outs=("{artifacts}/autoencode.zarr",),
            metrics=("{metrics}/autoencode.json",),
            plots=("{plots}/autoencode_curve.csv",),
        ),
        StageSpec(
            "splat",
            params=("splat", "seed", "device"),
            deps=(
                "{artifacts}/scene.zarr",
                "{artifacts}/crr.zarr",
                "{artifacts}/fuse.zarr",
                "{artifacts}/autoencode.zarr",
            ),
            code=("stages/splat.py", "econsg/splat", "econsg/render", "econsg/semantic.py", "econsg/scene/scale.py"),
            outs=("{artifacts}/splat.zarr",),
            metrics=("{metrics}/splat.json",),
            plots=("{plots}/splat_curve.csv",),
        ),
        StageSpec(
            "evaluate",
            params=("evaluate", "extract", "splat", "device"),  # splat: its relevancy temperature and render backend
            deps=(
                "{data}",  # a benchmark's own label files (LERF-OVS's label/, 3D-OVS's segmentations/), which no store holds
                "{artifacts}/scene.zarr",
                "{artifacts}/extract.zarr",
                "{artifacts}/autoencode.zarr",
                "{artifacts}/splat.zarr",
            ),
            code=("stages/evaluate.py", "econsg/evaluation.py", "econsg/metrics.py", "econsg/protocol_eval.py", "econsg/protocols.py",
                  "econsg/splat/gaussians.py", "econsg/splat/quality.py", "econsg/render", "econsg/semantic.py", "econsg/query.py",
                  "econsg/edit.py", "econsg/autoencoder.py", "econsg/features", "econsg/fusion.py", "econsg/viz.py",
                  "econsg/scene/readers", "econsg/scene/ingest.py"),
            outs=("{artifacts}/evaluate.zarr", "{plots}/evaluate"),
            metrics=("{metrics}/evaluate.json",),
        ),
    )
}


SMOKE_SETTINGS = (
    "extract.openclip_sam.stand_in=true",
    # the stand-in SAM's random masks fail every quality filter of a real run: without these it made none, and
    # crr's mask votes and the mask-crop paths went unrun
    "extract.openclip_sam.points_per_side=4",
    "extract.openclip_sam.pred_iou_thresh=0",
    "extract.openclip_sam.stability_score_thresh=0",
    "extract.openclip_sam.box_nms_thresh=1",
    "extract.openclip_sam.min_mask_region_area=4",
    "autoencode.iterations=20",
    "splat.iterations=20",
    "evaluate.timing_repeats=1",
)
SMOKE_DENSIFICATION = ("splat.refine_start_iter=5", "splat.refine_every=5", "splat.refine_stop_iter=15")
"""What `econsg smoke` changes in a run's params, beside the folders: tiny random CLIP and SAM for the weights, with
SAM's mask filters open so that the random model's masks are kept, and a few steps of each training, which densify
once (SMOKE_DENSIFICATION) unless the run's params switch it off."""
SMOKE_FOLDERS = ("artifacts", "metrics", "plots", "checkpoints")


def smoke_settings(params: Params, folder: Path, overrides: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The overrides of a smoke run of `params` (already loaded with the caller's `overrides`) in `folder`: the
    caller's overrides, then SMOKE_SETTINGS, then its stores, metrics, plots and checkpoints in `folder` (the data
    read where the params say). An override of those folders is refused: the run's own would be written."""
    if moved := [item for item in overrides if item.split("=", 1)[0] in {f"paths.{key}" for key in SMOKE_FOLDERS}]:
        raise EconsgError(f"--set {moved[0]}: a smoke run writes into its own folder (--out), never the run's; "
                          "only paths.data may be set")
    densify = SMOKE_DENSIFICATION if params.splat.refine_stop_iter else ()  # 0: densification off, as in the run
    return (*overrides, *SMOKE_SETTINGS, *densify, *(f"paths.{key}={folder / key}" for key in SMOKE_FOLDERS))


def run_smoke(params_path: str | Path, folder: Path, overrides: tuple[str, ...] = (), kept: bool = False
              ) -> tuple[Params, dict[str, float]]:
    """`econsg smoke`: the run's params (with `overrides`) checked as they are, then every stage from ingest on with
    `smoke_settings` in `folder`; returns those params and each stage's seconds. A stage's error says which failed
    (and that the run is `kept`)."""
    run = load_params(params_path, overrides)
    settings = smoke_settings(run, folder, overrides)
    if run.evaluate.protocol == "lerf":  # evaluate would find them missing only after every other stage
        from econsg.protocol_eval import lerf_labels_folder
        from econsg.scene.readers.lerf import read_lerf_labels

        read_lerf_labels(lerf_labels_folder(run))
    seconds = {}
    for stage in STAGE_ORDER[STAGE_ORDER.index("ingest"):]:
        report(f"smoke: {stage}")
        try:
            seconds[stage] = run_stage(stage, params_path, settings)
        except (EconsgError, OSError) as error:  # a system error too: a full scratch folder (TMPDIR, --out)
            notes = ([] if stage == "ingest" else ["the stages before it ran"]) + (
                [f"the run is kept in {folder}"] if kept else [])
            where = f" ({'; '.join(notes)})" if notes else ""
            cause = refused_path(error) if isinstance(error, OSError) else error
            raise EconsgError(f"smoke: {stage} failed{where}: {cause}") from error
    return run, seconds


def run_stage(name: str, params_path: str | Path = "params.yaml", overrides: tuple[str, ...] = ()) -> float:
    """Validate params (with `section.key=value` overrides), then run `stages/<name>.py: run(params)`; returns seconds."""
    if name not in STAGES:
        raise EconsgError(f"unknown stage {name!r}; stages are {', '.join(STAGE_ORDER)}")
    params = load_params(params_path, overrides)
    module = importlib.import_module(f"stages.{name}")
    output = Path(STAGES[name].resolve(STAGES[name].outs[0], params))
    check_writable(stage_folders(name, params))
    with store_lock(output, name) if output.suffix == ".zarr" else nullcontext():  # a second run is refused at once
        before = folder_identity(output)
        start = time.perf_counter()
        try:
            module.run(params)
        except KeyboardInterrupt:
            raise StageInterrupted(name, output, replaced=folder_identity(output) != before) from None
        return time.perf_counter() - start


def stage_folders(name: str, params: Params) -> list[Path]:
    """The folders a stage writes into: those holding its outputs, metrics and plots, and splat's checkpoints."""
    spec = STAGES[name]
    folders = {Path(spec.resolve(template, params)).parent for template in (*spec.outs, *spec.metrics, *spec.plots)}
    if name == "splat":
        folders.add(params.paths.checkpoint_folder("splat"))
    return sorted(folders)


def check_writable(folders: list[Path]) -> None:
    """Make each folder and write a file into it, before a stage's work: a folder it cannot write would otherwise fail
    it after the work (splat's first checkpoint, the metrics after the store), or between its store and its metrics."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise EconsgError(f"{folder}: cannot write there ({error.strerror or error}); the stage writes into it (see "
                              "the paths section of params.yaml): make it writable, or free space") from None


class StageInterrupted(KeyboardInterrupt):
    """A stage stopped by Ctrl-C or SIGTERM, and whether its output had already been replaced: a stage moves its new
    store in, then writes its metrics and pictures, so an interrupt between the two leaves the new store beside the
    previous run's figures."""

    def __init__(self, stage: str, output: Path, replaced: bool):
        self.stage, self.output, self.replaced = stage, output, replaced
        super().__init__(interrupted_message(stage, self))


def interrupted_message(stage: str, interrupt: KeyboardInterrupt) -> str:
    """What an interrupted stage left, in one line."""
    if isinstance(interrupt, StageInterrupted) and interrupt.replaced:
        return (f"{stage}: interrupted after its new {interrupt.output} was in place; its metrics and pictures may "
                "still be the previous run's: run the stage again (`dvc repro` reruns it)")
    return f"{stage}: interrupted; its previous artifact, if any, is kept"


def folder_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of a stage's output folder, None if absent: a store moved in replaces the
    folder, so the identity changes even when the content is the same."""
    try:
        status = path.stat()
    except OSError:  # absent, or a path the stage will refuse itself, naming it
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns


def stage_main(name: str) -> None:
    """Entry point of `python -m stages.<name> [params.yaml]`: user errors print one message, exit 1."""
    from econsg.cli import report_error

    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}")
    parser.add_argument("params", nargs="?", default="params.yaml", help="params file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value override")
    args = parser.parse_args()
    try:
        with sigterm_as_interrupt():
            seconds = run_stage(name, args.params, tuple(args.overrides))
    except EconsgError as error:
        report_error(error)
        raise SystemExit(1) from None
    except OSError as error:
        report_error(refused_path(error))
        raise SystemExit(1) from None
    except KeyboardInterrupt as interrupt:
        report(interrupted_message(name, interrupt))
        raise SystemExit(130) from None
    report(f"{name}: done in {seconds:.1f} s")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (how DVC, a scheduler or `docker stop` ends a run) into KeyboardInterrupt while the block runs:
    Python exits on SIGTERM without unwinding, so a writer's cleanup (its temporary store removed, the previous
    artifact kept) would not run. Only in the main thread, where signal handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stage_params(params: Params, name: str) -> dict:
    """The params values a stage declares, as it reads them (recorded in its artifact's provenance): a section's
    `settings_read`, a shared key's value."""
    data = params.model_dump(mode="json")
    return {key: value.settings_read() if isinstance(value := getattr(params, key), Section) else data[key]
            for key in STAGES[name].params}


# What `dvc plots show` draws beyond the stages' curves: evaluate's folder, where per_class_iou.json becomes sorted
# bars (x and y name its fields) and the PNGs (confusion matrix, held-out view panels) are shown as images.
EVALUATE_PLOTS = "{plots}/evaluate"
EVALUATE_PLOTS_DEFINITION = {"template": "bar_horizontal_sorted", "x": "iou", "y": "class", "title": "held-out IoU per class"}


# The stages' curves as `dvc plots show` draws them: without x and y, DVC plots the CSV's last column (alphabetical:
# autoencode's learning rate, splat's `sem`) against the row number. Other columns: `dvc plots show FILE -x X -y Y`.
CURVE_PLOT_DEFINITIONS = {
    "{plots}/autoencode_curve.csv": {"x": "iteration", "y": "loss", "title": "autoencode: training loss"},
    "{plots}/splat_curve.csv": {"x": "step", "y": "loss", "title": "splat: training loss"},
}


def plot_output(path: str, resolve) -> dict:
    """A stage's plots entry for the plot file template `path` (resolved by `resolve`): uncached, with its axes."""
    return {resolve(path): {"cache": False, **CURVE_PLOT_DEFINITIONS.get(path, {})}}


def template(path: str) -> str:
    """A StageSpec path with its `{key}` placeholders as dvc.yaml's `${paths.key}` interpolations."""
    return path.format(**{key: "${paths.%s}" % key for key in ("data", "artifacts", "metrics", "plots")})


def dvc_stage(spec: StageSpec) -> dict:
    """The dvc.yaml entry of a stage, with paths templated from params.yaml's `paths` section."""
    entry: dict = {"cmd": f"python -m stages.{spec.name}"}
    entry["deps"] = [template(d) for d in spec.deps] + list(spec.code)
    entry["params"] = list(spec.params)
    entry["outs"] = [template(o) for o in spec.outs]
    if spec.metrics:
        entry["metrics"] = [{template(m): {"cache": False}} for m in spec.metrics]
    if spec.plots:
        entry["plots"] = [plot_output(p, template) for p in spec.plots]
    return entry


def dvc_yaml(stages: tuple[str, ...] = STAGE_ORDER) -> dict:
    """The whole demo dvc.yaml as a mapping (`econsg pipeline` prints it)."""
    body: dict = {"stages": {name: dvc_stage(STAGES[name]) for name in stages}}
    if "evaluate" in stages:
        body["plots"] = [{template(EVALUATE_PLOTS): dict(EVALUATE_PLOTS_DEFINITION)}]
    return body
