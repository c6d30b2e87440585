"""The `econsg` command line: run stages, inspect artifacts, check params, score, audit, query, render, edit, export."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from econsg.errors import ConfigError, EconsgError, refused_path
from econsg.progress import plain_console, report

app = typer.Typer(
    help="econsg: open-vocabulary 3D semantic Gaussian Splatting (econSG) as a staged DVC pipeline.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)
params_app = typer.Typer(help="Validate params files, print the defaults, explain a key.", no_args_is_help=True)
export_app = typer.Typer(help="Export trained Gaussians.", no_args_is_help=True)
app.add_typer(params_app, name="params")
app.add_typer(export_app, name="export")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read (its paths are taken from the current folder, as `dvc repro` takes them from the project's).")]
SemanticOption = Annotated[bool, typer.Option(
    "--semantic/--no-semantic",
    help="Write the semantic features as extra f_sem_* properties; --no-semantic writes the standard 3DGS ones alone, "
    "for viewers that read a fixed record per Gaussian (SIBR).")]


def report_error(error: EconsgError) -> None:
    """Print a user error on stderr without a traceback: config errors one `section.field: message` a line."""
    err = plain_console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(error, ConfigError):
        err.print("[bold red]error:[/] ", end="", markup=True)
        err.print(f"{error.source}: invalid params")
        for line in error.lines:
            err.print(line)
    else:
        err.print("[bold red]error:[/] ", end="", markup=True)
        err.print(str(error))


def _guard(func, *args, **kwargs):
    """Run a command's work; a user error (EconsgError) or a file the system refuses (a folder that cannot be
    created, no permission, a full disk) prints one line without a traceback and exits 1."""
    try:
        return func(*args, **kwargs)
    except EconsgError as error:
        report_error(error)
        raise typer.Exit(1) from None
    except OSError as error:
        report_error(refused_path(error))
        raise typer.Exit(1) from None


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help="Stage name: synth, ingest, extract, crr, fuse, autoencode, splat, evaluate.")],
    params: ParamsOption = Path("params.yaml"),
    overrides: Annotated[list[str] | None, typer.Option("--set", help="section.key=value override (repeatable).")] = None,
) -> None:
    """Run one stage directly (what `python -m stages.STAGE` and `dvc repro` run)."""
    from econsg.pipeline import interrupted_message, run_stage, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # a killed run still cleans up its temporary store
            seconds = _guard(run_stage, stage, params, tuple(overrides or ()))
    except KeyboardInterrupt as interrupt:
        report(interrupted_message(stage, interrupt))
        raise typer.Exit(130) from None
    report(f"{stage}: done in {seconds:.1f} s")


@app.command()
def smoke(
    params: ParamsOption = Path("params.yaml"),
    overrides: Annotated[list[str] | None, typer.Option("--set", help="section.key=value override (repeatable), e.g. ingest.downscale=4.")] = None,
    out: Annotated[Path | None, typer.Option(help="Keep the smoke run in this new (or empty) folder; default: a temporary folder, deleted after.")] = None,
) -> None:
    """Dry-run every stage from ingest to evaluate on your scene, with tiny random CLIP and SAM standing in for the weights and a few training steps, in a scratch folder: checks that the data, the params and this machine carry the pipeline through before you fetch weights or spend hours.

    Your stores are not touched; its figures mean nothing."""
    import shutil
    import tempfile

    from econsg.pipeline import run_smoke, sigterm_as_interrupt

    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        report_error(EconsgError(f"--out: {out} exists and is not an empty folder; name a new one"))
        raise typer.Exit(1)
    folder = out or Path(tempfile.mkdtemp(prefix="econsg-smoke-"))
    try:
        with sigterm_as_interrupt():
            run, seconds = _guard(run_smoke, params, folder.resolve(), tuple(overrides or ()), kept=out is not None)
    except KeyboardInterrupt:
        plain_console(stderr=True).print("smoke: interrupted")
        raise typer.Exit(130) from None
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
    table = Table("stage", "seconds", title=f"smoke run of {params}")
    for stage, took in seconds.items():
        table.add_row(stage, f"{took:.1f}")
    plain_console().print(table)
    models = ("tiny random CLIP and SAM stood in for the weights: the features, labels and figures mean nothing"
              if run.extract.backend == "openclip_sam" else "the synthetic teacher needs no weights; the figures are "
              "a few training steps'")
    plain_console().print(f"every stage ran; {models}"
                          + (f"; the run is kept in {out}" if out is not None else "; the scratch folder is deleted"))
    if run.extract.backend == "openclip_sam":  # what the real run still needs
        from econsg.features.openclip_sam import missing_weights

        missing = missing_weights(run.extract.openclip_sam)
        plain_console().print("the real run's weights: " + ("CLIP's and SAM's are in place" if not missing else
                              "still missing:\n" + "\n".join(f"- {line}" for line in missing)))


@params_app.command("check")
def params_check(path: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate a params file; errors print as `section.field: message` and exit 1."""
    from econsg.config import load_params

    _guard(load_params, path)
    plain_console().print(f"{path}: ok")


@params_app.command("defaults")
def params_defaults() -> None:
    """Print a params.yaml holding every default (the repository's params.yaml is this output)."""
    import yaml

    from econsg.config import Params

    print(PARAMS_HEADER + yaml.safe_dump(Params().model_dump(mode="json"), sort_keys=False, width=120), end="")


@params_app.command("explain")
def params_explain(
    key: Annotated[str, typer.Argument(help="A section (fuse), a field (fuse.voxel_size), or nothing for all.")] = "",
) -> None:
    """What each params key means, with its default: the descriptions of econsg/config/<section>.py."""
    from econsg.config import describe_params

    import json

    table = Table(show_lines=True)
    for column in ("key", "default", "meaning"):  # keys whole; defaults as a params file writes them (null, true)
        table.add_column(column, overflow="fold", no_wrap=column == "key")
    for name, default, description in _guard(describe_params, key):
        shown = default if isinstance(default, str) else json.dumps(default, default=str)
        table.add_row(name, _short(shown, 60), description)
    plain_console().print(table)


PARAMS_HEADER = (
    "# econsg params, keyed by stage. Every key is documented in econsg/config/<section>.py (`econsg params explain\n"
    "# KEY` prints it); `econsg params check` validates a file. Regenerate defaults with `econsg params defaults`.\n"
)


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="A Zarr store written by a stage.")]) -> None:
    """Show a store's arrays (shape, dtype, chunks, size), its attributes and its provenance."""
    from econsg.artifacts import describe_store, hash_store_content

    rows, provenance, attributes = _guard(describe_store, path)
    console = plain_console()
    cells = [{"array": row["name"], "dims": " ".join(row["dims"]), "shape": "x".join(map(str, row["shape"])),
              "dtype": row["dtype"], "chunks": "x".join(map(str, row["chunks"])),
              "shards": "x".join(map(str, row["shards"])) if row["shards"] else "-",
              "stored": _human_bytes(row["stored_bytes"])} for row in rows]
    whole = ("array", "shape", "dtype", "stored")  # names, shapes and sizes whole; the rest folds
    needed = sum(max([len(column), *(len(c[column]) for c in cells)]) + 3 for column in whole) + 3 * 8
    if console.width < needed:  # too narrow for the table without cutting a shape or a size: one block per array
        console.print(str(path))
        for c in cells:
            console.print(f"{c['array']}: {c['shape']} {c['dtype']}, {c['stored']}\n  dims {c['dims']}; chunks "
                          f"{c['chunks']}; shards {c['shards']}", soft_wrap=True)
    else:
        table = Table(title=str(path))
        for column in cells[0] if cells else ("array",):
            table.add_column(column, justify="right" if column == "stored" else "left", no_wrap=column in whole,
                             overflow="fold")
        for c in cells:
            table.add_row(*c.values())
        console.print(table)
    if attributes:
        attrs = Table(title="attributes", show_header=False)
        attrs.add_column("key", style="bold", no_wrap=True)
        attrs.add_column("value", overflow="fold")
        for key, value in attributes.items():
            attrs.add_row(key, _short(value))
        console.print(attrs)
    prov = Table(title="provenance (econsg)", show_header=False)
    prov.add_column("key", style="bold", overflow="fold")
    prov.add_column("value", overflow="fold")  # hashes whole, to compare with another store's
    if provenance is None:
        prov.add_row("-", "none: not written by econsg")
    else:
        for key, value in provenance.items():
            if key == "params" and isinstance(value, dict):
                for section, values in value.items():
                    prov.add_row(f"params.{section}", _short(values))
            elif key == "inputs" and isinstance(value, dict):
                for input_path, digest in value.items():
                    prov.add_row(f"input {input_path}", str(digest)[:16])
            elif key == "content_hash":
                found = hash_store_content(path)
                prov.add_row(key, f"{value} (" + ("the files match it" if found == value else
                                                  f"DAMAGED: the files now hash to {found}, changed since written") + ")")
            else:
                prov.add_row(key, _short(value))
    console.print(prov)


def _short(value: object, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@app.command()
def pipeline() -> None:
    """Print the demo dvc.yaml generated from the stage specs (econsg/pipeline.py)."""
    import yaml

    from econsg.pipeline import dvc_yaml

    print(DVC_HEADER + yaml.safe_dump(dvc_yaml(), sort_keys=False, width=120), end="")


DVC_HEADER = (
    "# The demo pipeline on the embedded scene, generated by `econsg pipeline > dvc.yaml` from econsg/pipeline.py;\n"
    "# tests/test_dvc.py checks that both agree. Paths are templated from params.yaml's `paths` section.\n"
)


KEY_METRICS = {
    "extract": ("views_per_second",),
    "crr": ("labelled_share", "raw_miou", "refined_miou", "refined_coverage"),
    "fuse": ("points", "point_label_accuracy", "raw_2d_accuracy_same_points", "agreement_labelled", "agreement_ignored"),
    "autoencode": ("latent_accuracy", "reconstruction_cosine", "train_seconds"),
    "splat": ("train_seconds", "num_gaussians", "test_psnr", "test_ssim"),
    "evaluate": ("miou", "macc", "closed_set_miou", "open_set_miou", "teacher_miou", "geometry_oracle_miou", "selection_miou",
                 "psnr", "ssim", "consistency", "render_fps", "query_latency_ms"),
}


@app.command()
def metrics(params: ParamsOption = Path("params.yaml")) -> None:
    """Print the key figures of every stage's metrics JSON as one table."""

    def work():
        import json

        from econsg.config import load_params

        p = load_params(params)
        table = Table(title=f"econsg metrics ({p.paths.metrics})")
        for column in ("stage", "metric", "value"):
            table.add_column(column)
        for stage, keys in KEY_METRICS.items():
            path = p.paths.metrics_file(stage)
            if not path.is_file():
                table.add_row(stage, "-", f"no {path} yet")
                continue
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise EconsgError(f"{path}: not a metrics JSON file ({error}); rerun `dvc repro -s {stage}`") from None
            if not isinstance(values, dict):
                raise EconsgError(f"{path}: expected a JSON object of metrics, got a {type(values).__name__}")
            benchmark = values.get("benchmark") if isinstance(values.get("benchmark"), dict) else {}
            rows = [(key, key in values, values.get(key)) for key in keys]
            rows += [(f"benchmark.{key}", True, value) for key, value in benchmark.items()  # a protocol's own figures
                     if not isinstance(value, (dict, list))]
            unlabelled = values.get("has_ground_truth") is False  # scores against labels the dataset lacks
            for key, present, value in rows:
                shown = ("n/a (no labels)" if not present and unlabelled else "missing" if not present
                         else "n/a" if value is None  # null: NaN, e.g. no open-set class
                         else f"{value:.3f}" if isinstance(value, float) else str(value))
                table.add_row(stage, key, shown)
        plain_console().print(table)

    _guard(work)


def _parse_views(views: str | None, available, option: str = "--views") -> list[int]:
    """The comma-separated view indices of `option` (all `available` when None), each checked against them."""
    allowed = [int(a) for a in available]
    if views is None:
        return allowed
    try:
        chosen = [int(x) for x in views.split(",") if x.strip()]
    except ValueError:
        raise EconsgError(f"{option}: {views!r} is not a comma-separated list of view indices") from None
    if not chosen:
        raise EconsgError(f"{option}: {views!r} names no view; expected comma-separated view indices, like 0,3")
    bad = [v for v in chosen if v not in set(allowed)]
    if bad:
        raise EconsgError(f"{option}: {bad} are not among the available views ({_shown_views(allowed)})")
    return chosen


def _shown_views(views: list[int]) -> str:
    """'42..47' for a run of consecutive view indices, else the list."""
    return f"{views[0]}..{views[-1]}" if views and views == list(range(views[0], views[-1] + 1)) else str(views)


def _held_out_position(view: int, held_out: list[int], plots: str | Path) -> int:
    """Where held-out view index `view` (the NNNN of <plots>/evaluate/view_NNNN.png) sits among `held_out`."""
    if view not in held_out:
        raise EconsgError(f"--view: {view} is not a held-out view; the held-out views are {_shown_views(held_out)} "
                          f"(the NNNN of {Path(plots) / 'evaluate' / 'view_NNNN.png'})")
    return held_out.index(view)


def _split_names(option: str | None) -> list[str]:
    """A comma-separated option as its non-empty, stripped names."""
    return [name.strip() for name in (option or "").split(",") if name.strip()]


@app.command()
def score(
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names to average over (default: the evaluation vocabulary's).")] = None,
    exclude: Annotated[str | None, typer.Option(help="Comma-separated class names to leave out of the means.")] = None,
    store: Annotated[Path | None, typer.Option(help="An evaluate.zarr (default: the params' evaluate artifact).")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Resample the held-out views this many times and print 90 % intervals of the means (0: off).")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the resampling.")] = 0,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Re-score a finished run from the label maps its evaluate artifact keeps: econsg and the 2D teacher, per class and mean."""

    def work():
        from econsg.artifacts import open_artifact
        from econsg.config import load_params
        from econsg.evaluation import rescore_evaluate

        path = store or load_params(params).paths.artifact("evaluate")
        group = open_artifact(path, "evaluate")
        if classes is not None and not _split_names(classes):
            raise EconsgError(f"--classes: {classes!r} names no class; expected comma-separated class names like bed,lamp")
        chosen = _split_names(classes) if classes is not None else None
        result = rescore_evaluate(group, chosen, _split_names(exclude), bootstrap=bootstrap, seed=seed)
        count = len(result["classes"])
        table = Table(title=f"{path}: {count} class{'' if count == 1 else 'es'} present")
        for column in ("class", "pixels", "IoU", "accuracy", "teacher IoU"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, row in result["per_class"].items():
            table.add_row(name, str(row["pixels"]), f"{row['iou']:.3f}", f"{row['acc']:.3f}", f"{row['teacher_iou']:.3f}")
        table.add_row("mean", "", f"{result['miou']:.3f}", f"{result['macc']:.3f}", f"{result['teacher_miou']:.3f}", style="bold")
        console = plain_console()
        console.print(table)
        if "bootstrap" in result:
            b = result["bootstrap"]
            views = group["gt_labels"].shape[0]
            scored = (f"{b['rounds']}" if b["scored"] == b["rounds"] else
                      f"the {b['scored']} of {b['rounds']} that hold a pixel of the classes")
            console.print(
                f"{b['coverage']:.0%} intervals over {scored} resamples of the {views} held-out views: "
                f"mIoU [{b['miou'][0]:.3f}, {b['miou'][1]:.3f}], teacher [{b['teacher_miou'][0]:.3f}, {b['teacher_miou'][1]:.3f}], "
                f"econsg - teacher [{b['over_teacher'][0]:+.3f}, {b['over_teacher'][1]:+.3f}] (paired)"
            )

    _guard(work)


@app.command()
def audit(
    views: Annotated[str | None, typer.Option(help="Comma-separated training view indices (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <plots>/audit).")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write per-view CRR audit panels (image, raw labels, confidence, masks, refined labels, changes, feature sources, multi-view agreement once fuse has run), a contact sheet and index.html."""

    def work():
        from econsg.audit import write_audit
        from econsg.config import load_params
        from econsg.progress import track
        from econsg.scene.store import open_scene
        from econsg.workspace import open_stage

        p = load_params(params)
        target = _output_folder(out, "--out") if out else Path(p.paths.plots) / "audit"  # a bad --out before any work
        scene = open_scene(p.paths.artifact("ingest"))
        chosen = list(dict.fromkeys(_parse_views(views, scene.train_indices)))  # a view given twice is drawn once
        paths = _written("--out", target, write_audit, scene, open_stage(p, "extract"), open_stage(p, "crr"), chosen,
                         target, track, _fuse_store(p), classes=_picture_classes(p))
        plain_console().print(f"wrote {len(paths)} panel{'' if len(paths) == 1 else 's'}, {target / 'contact_sheet.png'} "
                              f"and {target / 'index.html'}")

    _guard(work)


def _fuse_store(p):
    """fuse's store for the audit's agreement tile: None (with a note) before fuse has run or when its store predates
    the tile, so the crr panels never wait on fuse."""
    from econsg.errors import ArtifactError
    from econsg.workspace import open_stage

    if not p.paths.artifact("fuse").exists():
        return None
    try:
        return open_stage(p, "fuse")
    except ArtifactError as error:
        plain_console(stderr=True).print(f"note: no multi-view agreement tile ({error}); rerun fuse for it")
        return None


def _evaluate_names(p, key: str) -> list[str] | None:
    """A list of names evaluate stored (`class_names`, `eval_vocabulary`), None before evaluate has run. Read without
    evaluate's input check: names do not depend on the splats, so a rerun splat leaves them as they were."""
    from econsg.artifacts import open_artifact

    path = p.paths.artifact("evaluate")
    return list(open_artifact(path, "evaluate").attrs[key]) if (path / "zarr.json").is_file() else None


def _picture_classes(p) -> list[str]:
    """The class list a run's pictures colour by, as evaluate's do: its class names where evaluate has run, else the
    scene's classes, else the evaluation vocabulary the params name or extract's (names only, read unchecked)."""
    from econsg.artifacts import open_artifact

    evaluated = _evaluate_names(p, "class_names")
    if evaluated is not None:
        return evaluated
    classes = list(open_artifact(p.paths.artifact("ingest"), "ingest").attrs["class_names"])
    return classes or list(p.evaluate.vocabulary or open_artifact(p.paths.artifact("extract"), "extract").attrs["vocabulary"])


def _query_picture(title, rgb, features, texts, latents, canonical, temperature, level, classes):
    """One text: (render | relevancy against the canonical classes | mask above `level`, share of pixels masked);
    several: (render | segmentation by the texts, pixels a canonical class wins left unlabelled, with a key, None).
    A text that names one of the run's `classes` takes that class's colour in every picture."""
    import numpy as np

    from econsg import viz
    from econsg.query import relevancy, segment_texts

    if len(texts) == 1:
        rel = relevancy(features, latents[0], canonical, temperature).numpy()
        mask = rel > level
        colour = viz.named_palette(texts, classes)[0]
        tiles = [(title, rgb), (f"relevancy: {texts[0]}", viz.colour_scalar(rel)),
                 (f"mask > {level:g}", viz.overlay(rgb, np.where(mask[..., None], colour, 0).astype(np.uint8), 0.6))]
        return viz.with_legend(viz.panel(tiles), viz.ramp_key(f"relevancy (mask > {level:g})", "0", "1")), float(mask.mean())
    labels = segment_texts(features, latents, canonical).numpy()
    palette = viz.named_palette(texts, classes)
    shaded = np.where((labels >= 0)[..., None], viz.overlay(rgb, viz.colour_labels(labels, palette), 0.6), viz.to_uint8(rgb))
    tiles = [(title, rgb), ("segmentation (unshaded: none of the texts)", shaded)]
    return viz.with_legend(viz.panel(tiles), viz.legend(texts, palette, with_ignore=False)), None


@app.command()
def query(
    texts: Annotated[list[str], typer.Argument(help="One text (relevancy map + mask) or several (labelled segmentation).")],
    view: Annotated[int | None, typer.Option(help="A held-out view's index, as in plots/evaluate/view_NNNN.png; default: all.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Relevancy threshold for the mask (default: evaluate.relevancy_threshold); given, the file names carry it (bed_t0.6_view_0045.png).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <plots>/query).")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Segment held-out views for any text, using the semantic renders cached by the evaluate stage."""

    def work():
        import numpy as np
        import torch

        from econsg import viz
        from econsg.config import load_params
        from econsg.workspace import load_autoencoder, open_stage, text_query

        p = load_params(params)
        level = _relevancy_threshold(threshold, p)  # a bad --threshold or --out stops before any work
        target = _output_folder(out or Path(p.paths.plots) / "query", "--out", out)
        ev = open_stage(p, "evaluate")
        model = load_autoencoder(open_stage(p, "autoencode"))
        q = text_query(p, model, evaluated=True)
        vocabulary = list(ev.attrs["eval_vocabulary"])
        canonical = q.text_latents(vocabulary)
        latents = q.text_latents(texts)
        held_out = [int(v) for v in ev.attrs["test_views"]]
        positions = range(len(held_out)) if view is None else [_held_out_position(view, held_out, p.paths.plots)]
        slug = _file_slug(texts) + (_threshold_tag(threshold) if len(texts) == 1 else "")  # several texts: no mask
        written = []
        for i in positions:
            features = torch.from_numpy(np.asarray(ev["feature_maps"][i], np.float32))
            picture, coverage = _query_picture("render", ev["renders"][i], features, texts, latents, canonical,
                                               p.splat.temperature, level, list(ev.attrs["class_names"]))  # fmt: skip
            if coverage is not None:
                plain_console().print(f"view {held_out[i]}: {texts[0]!r} covers {coverage:.1%} of the pixels")
            written.append(_written("--out", target, viz.save_png, picture, target / f"{slug}_view_{held_out[i]:04d}.png"))
        plain_console().print(f"wrote {len(written)} pictures to {target}")

    _guard(work)


@app.command()
def edit(
    text: Annotated[str, typer.Argument(help="What to select, e.g. 'bed'.")],
    action: Annotated[str, typer.Option(help="remove | recolour | extract")] = "remove",
    colour: Annotated[str, typer.Option(help="r,g,b in [0,1] for recolour.")] = "1,0,1",
    threshold: Annotated[float | None, typer.Option(help="Relevancy threshold (default: evaluate.relevancy_threshold); given, the default file name carries it (bed_remove_t0.6.ply).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output PLY (default: <plots>/edit/<text>_<action>.ply).")] = None,
    view: Annotated[int | None, typer.Option(help="The held-out view rendered before/after, by its index as in plots/evaluate/view_NNNN.png; default: the first.")] = None,
    semantic: SemanticOption = True,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Select Gaussians by text (relevancy in 3D), then remove, recolour or extract them; writes a PLY and a before/after picture."""

    def work():
        import torch

        from econsg import viz
        from econsg.config import load_params
        from econsg.edit import apply_edit, select_gaussians, selection_summary
        from econsg.scene.store import open_scene
        from econsg.splat.ply import export_ply
        from econsg.splat.quality import stored_renderer
        from econsg.workspace import load_autoencoder, open_stage, text_query

        if action not in ("remove", "recolour", "extract"):
            raise EconsgError(f"--action: {action!r}; expected remove, recolour or extract")
        try:
            rgb = tuple(float(x) for x in colour.split(","))
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= x <= 1 for x in rgb):
            raise EconsgError(f"--colour: {colour!r}; expected three numbers in [0,1] like 1,0,1")
        p = load_params(params)
        level = _relevancy_threshold(threshold, p)  # a bad --threshold or --out stops before any work
        ply = (_ply_path(out, "--out") if out else
               Path(p.paths.plots) / "edit" / f"{_file_slug([text])}_{action}{_threshold_tag(threshold)}.ply")
        scene = open_scene(p.paths.artifact("ingest"))
        held_out = [int(v) for v in scene.test_indices]
        if view is not None:
            _held_out_position(view, held_out, p.paths.plots)  # refuses a training view
        shown = held_out[0] if view is None else view
        sp = open_stage(p, "splat")
        gaussians = _semantic_gaussians(p, sp)
        q = text_query(p, load_autoencoder(open_stage(p, "autoencode")), evaluated=True)
        vocabulary = _canonical_vocabulary(p, sp)
        selected = select_gaussians(gaussians["features"], q.text_latents([text])[0], q.text_latents(vocabulary),
                                    p.splat.temperature, level)
        edited = apply_edit(gaussians, selected, action, rgb)
        _written("--out", ply, export_ply, ply, edited, semantic=semantic)
        viewmat, K = scene.cameras(shown)
        draw = stored_renderer(sp)
        with torch.no_grad():
            before = draw(gaussians, viewmat, K, scene.width, scene.height, with_features=False).colors[0].clamp(0, 1).numpy()
            after = draw(edited, viewmat, K, scene.width, scene.height, with_features=False).colors[0].clamp(0, 1).numpy()
        summary = selection_summary(selected)
        picture = viz.save_png(viz.panel([(f"before (view {shown})", before),
                                          (f"after: {action} '{text}' ({summary['selected']} of {summary['total']})", after)]),
                               ply.with_name(f"{ply.stem}_before_after.png"))
        plain_console().print(f"selected {summary['selected']} of {summary['total']} Gaussians; wrote {ply} and {picture}")

    _guard(work)


def _threshold_tag(threshold: float | None) -> str:
    """A file-name tag for a threshold the user gave ('_t0.6'), so that the pictures and PLYs of another threshold do
    not overwrite the default's."""
    return "" if threshold is None else f"_t{threshold:g}"


def _file_slug(texts: list[str], limit: int = 60) -> str:
    """A file-name stem for user texts: the texts themselves when they are plain words ('bed', 'bed_lamp',
    'a-red-chair'), else a readable prefix and a hash of the exact texts, so that 'sofa/bed' and 'sofa bed', or two
    long texts that share their first words, never overwrite each other's files, and many texts never exceed a
    file-name length."""
    import hashlib

    readable = "_".join("".join(ch if ch.isalnum() else "-" for ch in t) for t in texts)
    if all(ch.isalnum() or ch == " " for t in texts for ch in t) and len(readable) <= limit:
        return readable  # spaces are the only characters replaced, so these names cannot collide
    return f"{readable[:limit]}-{hashlib.sha1(chr(0).join(texts).encode()).hexdigest()[:8]}"


def _ply_path(path: Path, option: str) -> Path:
    """An output PLY path as given, refused unless it names a .ply file (viewers pick the reader by the suffix, and
    `edit` writes its picture beside it under the same stem) in a folder that is not a file."""
    if path.suffix.lower() != ".ply":
        like = f", like {path.with_suffix('.ply').name}" if path.name not in ("", ".", "..") else ""
        raise EconsgError(f"{option}: {str(path)!r}; expected a file path ending in .ply{like}")
    _output_folder(path.parent, option, path)
    return path


def _output_folder(folder: Path, option: str, given: Path | None = None) -> Path:
    """`folder`, refused when it or a folder above it exists as a file (the write would fail on a path the user
    never named)."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise EconsgError(f"{option}: {given or folder}: {ancestor} is a file, not a folder")
    return folder


def _written(option: str, path: Path, write, *args, **kwargs):
    """`write(*args, **kwargs)` for the output `option` names (`path`): a write the system refuses (no permission, a
    full disk, a folder that cannot be made) is named by the option and its path, not by a temporary file's."""
    try:
        return write(*args, **kwargs)
    except OSError as error:
        raise EconsgError(f"{option}: {path}: {error.strerror or error}") from None


def _relevancy_threshold(threshold: float | None, p) -> float:
    """--threshold, or evaluate.relevancy_threshold when it is not given; refused outside (0, 1), where a relevancy
    selects everything or nothing."""
    if threshold is None:
        return p.evaluate.relevancy_threshold
    if not 0 < threshold < 1:
        raise EconsgError(f"--threshold: {threshold}; expected a relevancy between 0 and 1 (exclusive), like 0.5")
    return threshold


def _semantic_gaussians(p, splat_group, device: str = "cpu") -> dict:
    """The trained Gaussians of splat.zarr on `device`, refused when they carry no semantic feature f."""
    from econsg.splat.quality import load_gaussians

    gaussians = load_gaussians(splat_group, device)
    if "features" not in gaussians:
        raise EconsgError(f"{p.paths.artifact('splat')}: has no semantic features; train with the semantic pipeline")
    return gaussians


def _canonical_vocabulary(p, splat_group) -> list[str]:
    """The evaluation vocabulary where evaluate has run, else the one the splats were trained with."""
    evaluated = _evaluate_names(p, "eval_vocabulary")
    return evaluated if evaluated is not None else list(splat_group.attrs["vocabulary"])


@app.command("render")
def render_path(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts that label each frame (default: the evaluation vocabulary).")] = None,
    through: Annotated[str | None, typer.Option(help="Comma-separated view indices the camera passes through, in order (default: the held-out views, in the order of the shorter path: as listed or by heading).")] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames from one key view to the next.")] = 8,
    loop: Annotated[bool, typer.Option(help="Return from the last key view to the first.")] = False,
    fps: Annotated[float, typer.Option(min=0.1, max=50, help="Frame rate of the GIF (GIF players slow rates above 50 "
                                                               "to 10).")] = 8.0,
    threshold: Annotated[float | None, typer.Option(help="Relevancy threshold of a single text's mask (default: evaluate.relevancy_threshold).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <plots>/render/<texts>, or <plots>/render/vocabulary without texts).")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Fly the camera through the trained scene: novel views between key views, rendered in RGB and segmented by text (frames + GIF)."""

    def work():
        import numpy as np
        import torch

        from econsg import viz
        from econsg.artifacts import staged_folder
        from econsg.camera_path import interpolate_cameras, key_order
        from econsg.config import load_params
        from econsg.device import resolve_device
        from econsg.progress import track
        from econsg.scene.store import open_scene
        from econsg.splat.quality import stored_renderer
        from econsg.workspace import load_autoencoder, open_stage, text_query

        p = load_params(params)
        level = _relevancy_threshold(threshold, p)  # a bad --threshold or --out stops before any work
        target = _output_folder(out or Path(p.paths.plots) / "render" / (_file_slug(texts) if texts else "vocabulary"),
                                "--out", out)  # a render of other texts leaves this one's frames
        scene = open_scene(p.paths.artifact("ingest"))
        keys = _parse_views(through, scene.test_indices if through is None else range(scene.num_views), "--through")
        if len(keys) < 2:
            if through is None:
                raise EconsgError(f"--through: the scene has {len(keys)} held-out view(s) {keys}, and a path needs two "
                                  "key views; name them, e.g. --through 0,5")
            raise EconsgError(f"--through: the path needs at least two key views, got {keys}")
        device = resolve_device(p.device)  # gsplat on CUDA where there is one, the torch rasterizer otherwise
        sp = open_stage(p, "splat")
        gaussians = _semantic_gaussians(p, sp, device)
        vocabulary = _canonical_vocabulary(p, sp)
        chosen = list(texts) if texts else vocabulary
        q = text_query(p, load_autoencoder(open_stage(p, "autoencode")), device, evaluated=True)
        latents, canonical = q.text_latents(chosen).cpu(), q.text_latents(vocabulary).cpu()  # frames are labelled on the CPU
        if through is None:  # the held-out views in the order of the shorter path: listed, or by heading (a pan)
            keys = [keys[i] for i in key_order(scene.c2w[keys])]
        c2w, Ks = interpolate_cameras(scene.c2w[keys], scene.Ks[keys], frames, loop)
        draw = stored_renderer(sp, p.splat.backend)
        classes = _picture_classes(p)
        viewmats = torch.from_numpy(np.linalg.inv(c2w)).float().to(device)  # the whole path's cameras, once
        path_Ks = torch.from_numpy(Ks).float().to(device)
        digits = max(3, len(str(len(c2w) - 1)))  # names sort in path order however long the path
        gif = target / "path.gif"
        # the frames and the GIF are written beside the previous path's and replace them once all are done: a stopped
        # render leaves the previous path whole, and a shorter path no old frames
        with staged_folder(target / "frames") as staging:
            pictures = []
            for i in track(range(len(c2w)), "render path"):
                with torch.no_grad():
                    frame = draw(gaussians, viewmats[i : i + 1], path_Ks[i : i + 1], scene.width, scene.height)
                picture, _ = _query_picture(f"frame {i}", frame.colors[0].clamp(0, 1).cpu().numpy(),
                                            frame.features[0].cpu(), chosen, latents, canonical, p.splat.temperature,
                                            level, classes)  # fmt: skip
                pictures.append(_written("--out", target, viz.save_png, picture, staging / f"frame_{i:0{digits}d}.png"))
            _written("--out", target, viz.save_gif, pictures, staging / gif.name, fps,
                     keep=[tuple(c) for c in viz.named_palette(chosen, classes)])
            os.replace(staging / gif.name, gif)  # the frames follow as the block ends
        plain_console().print(f"rendered {len(pictures)} frames through views {keys}: {target / 'frames'} and {gif} "
                              f"({1000 / viz.gif_delay_ms(fps):.3g} fps: GIF delays are whole hundredths of a second)")

    _guard(work)


@export_app.command("ply")
def export_ply_command(
    out: Annotated[Path, typer.Option(help="Output PLY path.")] = Path("export/gaussians.ply"),
    semantic: SemanticOption = True,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the trained Gaussians as a standard 3DGS PLY (semantic features as extra f_sem_* properties unless --no-semantic)."""

    def work():
        from econsg.config import load_params
        from econsg.splat.ply import export_ply
        from econsg.splat.quality import load_gaussians
        from econsg.workspace import open_stage

        path = _ply_path(out, "--out")
        gaussians = load_gaussians(open_stage(load_params(params), "splat"))
        _written("--out", path, export_ply, path, gaussians, semantic=semantic)
        plain_console().print(f"wrote {len(gaussians['means'])} Gaussians to {out}")

    _guard(work)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EconsgError as error:  # errors raised outside a guarded command
        report_error(error)
        sys.exit(1)


if __name__ == "__main__":
    main()
