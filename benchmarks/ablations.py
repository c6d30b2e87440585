"""Ablations of econSG's components on the demo scene: prints a markdown table (not a test).

Each variant reuses the demo's upstream artifacts (copied) and reruns only the stages its switch
affects, with the stages' `--set` overrides and its own artifact/metrics folders:
  full          the method as configured in params.yaml
  no_crr        crr.enabled=false: raw labels and features go to fusion and supervision
  no_3d_init    splat.init_features=random: f starts random (feature distillation, Feature-3DGS style)
  no_ce         splat.lambda_2d=0: no cross-entropy term in the splat loss
  3d_init_only  splat.lambda_sem=0, lambda_2d=0: semantics from the 3D latent initialisation alone
  joint_geometry splat.feature_geometry_grad=true: the semantic terms also move and densify the geometry
  labelled_distill splat.distill_pixels=labelled: Dist only on the pixels crr labelled
  all_distill   splat.distill_pixels=all: Dist on every pixel (METHOD.md's sum over u), the ignored pixels that keep
                their own feature too
  raw_latents   autoencode.unit_latents=false: latents keep E's lengths (the splats blend them unequally)
  own_features  crr.ignored_features=own: ignored pixels keep their own feature (METHOD.md), no mask pooling (so,
                with the default splat.distill_pixels, Dist runs over the labelled pixels alone)
  authors_loss  splat.dist_normalize=true, splat.ce_temperature=1: the authors' code's Dist (on F/|F|) and CE
                (raw cosines as logits, as the default has it too)
  sharp_ce      splat.ce_temperature=0.05: CE logits cos / 0.05, as sharp as the other softmaxes (the old default)
  uniform_ce    autoencode.ce_weights=uniform: every labelled fused point weighs alike in the autoencoder's CE
                terms (METHOD.md; the old default)
  label_support_ce autoencode.ce_weights=label_support: a fused point's CE weight is the share of its samples that
                carry its label (labelled_share x vote_share), not only the share that carry any
  agreement_weights splat.pixel_weights=agreement: Dist and CE weigh each pixel by the multi-view agreement of its
                crr decision (fuse's `agreement`)
  labelled_fusion fuse.features_from_ignored=false: a voxel's feature averages its labelled samples only (METHOD.md
                is silent), so the points crr left unlabelled in every view carry no feature and are dropped

Run after `dvc repro`:  python benchmarks/ablations.py [--params params.yaml] [--out ablations] [--seeds 0 10 11]
                                                  [--reseed-from splat] [--set ingest.sparse_views=10 ...]

With `--seeds`, every variant reruns once per seed (override `seed=S`) from autoencode at the latest, the first stage
whose training draws on the seed (the autoencoder's initialisation and batches; then the splats' camera order, rotations
and densification; ingest's initial points and the synthetic teacher read it too, see `--redraw-teacher`), and each cell reads mean (min-max): a difference between two variants can be set against the
spread of training alone. `--reseed-from splat` gives the seed to splat and evaluate only: the autoencoder keeps the
params' seed, so the spread is the splats' own (on the demo it is the autoencoder's draw that moves the mIoU;
docs/results.md). Stages a variant reruns before that stage run under the params' seed. With `--redraw-teacher`
instead, each seed reruns from ingest: the initial points and the synthetic teacher's degradations are drawn again
too, so the spread includes the input's (the teacher's mIoU on six held-out views moves by several points from one
draw to the next), and `over_teacher` reads each run's margin over its own teacher.

With `--set SECTION.KEY=VALUE`, every variant runs under that setting as well, e.g. the paper's sparse-view
setting (`--set ingest.sparse_views=10`): the stages from the setting's own up to the variants' first are run once
under it into `OUT/base`, and the variants copy their upstream artifacts from there instead of the demo's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from econsg.config import load_params
from econsg.pipeline import STAGE_ORDER, STAGES

VARIANTS = {
    "full": ([], "splat"),
    "no_crr": (["crr.enabled=false"], "crr"),
    "no_3d_init": (["splat.init_features=random"], "splat"),
    "no_ce": (["splat.lambda_2d=0"], "splat"),
    "3d_init_only": (["splat.lambda_sem=0", "splat.lambda_2d=0"], "splat"),
    "joint_geometry": (["splat.feature_geometry_grad=true"], "splat"),
    "labelled_distill": (["splat.distill_pixels=labelled"], "splat"),
    "all_distill": (["splat.distill_pixels=all"], "splat"),
    "raw_latents": (["autoencode.unit_latents=false"], "autoencode"),
    "own_features": (["crr.ignored_features=own"], "crr"),
    "authors_loss": (["splat.dist_normalize=true", "splat.ce_temperature=1.0"], "splat"),
    "sharp_ce": (["splat.ce_temperature=0.05"], "splat"),
    "uniform_ce": (["autoencode.ce_weights=uniform"], "autoencode"),
    "label_support_ce": (["autoencode.ce_weights=label_support"], "autoencode"),
    "agreement_weights": (["splat.pixel_weights=agreement"], "splat"),
    "labelled_fusion": (["fuse.features_from_ignored=false"], "fuse"),
}
# The first stage whose training draws on `seed`. ingest and extract also read it (the initial points, the
# teacher's noise) and fuse only to subsample with max_points: they make the input, not the training.
FIRST_SEEDED = "autoencode"
COLUMNS = ("miou", "macc", "closed_set_miou", "open_set_miou", "teacher_miou", "over_teacher", "geometry_oracle_miou",
           "selection_miou", "consistency", "psnr")


def run_stages(stages: list[str], overrides: list[str], params_file: Path, root: Path, source: Path | None = None,
               reseed: tuple[int, str] | None = None, quiet: bool = False) -> None:
    """Copy `source`'s artifacts of the stages upstream of `stages` into `root` (afresh: a copy left by an earlier
    invocation would be stale once the source has been rerun), then run `stages` there with
    `overrides`. Stages from synth or ingest on have nothing upstream to copy and need no `source`. With
    `reseed` = (seed, stage), that stage and the ones after it also run with `seed=seed`. `quiet` captures the
    stages' output; a failed stage's is then in the CalledProcessError raised."""
    demo = load_params(params_file).paths
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    upstream = STAGE_ORDER[1 : STAGE_ORDER.index(stages[0])]
    if upstream and source is None:
        raise ValueError(f"run_stages from {stages[0]}: the artifacts of {', '.join(upstream)} need a source folder")
    for stage in upstream:
        target = artifacts / demo.artifact(stage).name
        origin = source / target.name
        if origin.resolve() == target.resolve():
            continue  # the run's own artifacts, from an earlier call
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(origin, target)
    paths = [f"paths.artifacts={artifacts}", f"paths.metrics={root / 'metrics'}", f"paths.plots={root / 'plots'}",
             f"paths.checkpoints={root / 'checkpoints'}"]
    for stage in stages:
        seeded = reseed is not None and STAGE_ORDER.index(stage) >= STAGE_ORDER.index(reseed[1])
        reseeding = [f"seed={reseed[0]}"] if seeded else []
        sets = [arg for item in overrides + reseeding + paths for arg in ("--set", item)]
        subprocess.run([sys.executable, "-m", f"stages.{stage}", str(params_file), *sets], check=True,
                       capture_output=quiet, text=True)


def run_variant(overrides: list[str], first_stage: str, params_file: Path, root: Path, source: Path,
                reseed: tuple[int, str] | None = None) -> dict:
    """Rerun `first_stage` and every stage after it in `root` with `overrides` (and `reseed`, see `run_stages`),
    upstream copied from `source`."""
    start = time.perf_counter()
    run_stages(list(STAGE_ORDER[STAGE_ORDER.index(first_stage) :]), overrides, params_file, root, source, reseed)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text(encoding="utf-8"))
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def setting_stage(settings: list[str], params_file: Path) -> str:
    """The first stage a `--set` setting changes: the first whose params (`econsg.pipeline.STAGES`, what dvc.yaml
    tracks) hold the setting's section (`ingest.sparse_views=10` -> ingest, `device=cuda` -> extract). Refuses what is
    not a stage's own parameter (paths, seed: use --seeds; synth: it redraws the demo's dataset, which the variants
    share) and any bad key or value, before anything runs."""
    load_params(params_file, settings)  # a bad key or value raises ConfigError naming it
    sections = {item.split("=", 1)[0].split(".", 1)[0]: item for item in settings}
    for section, item in sections.items():
        if section == "seed" or not any(section in STAGES[stage].params for stage in STAGE_ORDER[1:]):
            raise SystemExit(f"--set {item}: expected a stage's parameter ({', '.join(STAGE_ORDER[1:])}.KEY=VALUE, or "
                             "device=VALUE); training seeds go in --seeds")
    return next(stage for stage in STAGE_ORDER if sections.keys() & set(STAGES[stage].params))


def cell(values: list) -> str:
    """One table cell: the value, or mean (min-max) over seeds; non-numbers as they are."""
    if not all(isinstance(v, (int, float)) for v in values):
        return str(values[0])
    if len(values) == 1:
        return f"{values[0]:.3f}"
    low, high = min(values), max(values)
    joint = " to " if low < 0 else "-"  # "-0.020 to -0.010", not "-0.020--0.010"
    return f"{statistics.fmean(values):.3f} ({low:.3f}{joint}{high:.3f})"


def difference(a: dict, b: dict, key_a: str, key_b: str):
    """a[key_a] - b[key_b] where both are numbers (a run without ground truth has no mIoU), else None."""
    x, y = a.get(key_a), b.get(key_b)
    return x - y if isinstance(x, (int, float)) and isinstance(y, (int, float)) else None


def ablation_table(rows: dict[str, list[dict]]) -> str:
    """Markdown table, a row per variant. `over_teacher` is each run's mIoU minus its own teacher's; with a `full`
    row, `miou_vs_full` is each variant's mIoU minus the full method's on the same seed (runs are paired by
    position), so a variant is measurably worse where the whole range is below 0."""
    full = rows.get("full")
    columns = COLUMNS + (("miou_vs_full",) if full else ())
    lines = ["| variant | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, runs in rows.items():
        runs = [{**run, "over_teacher": difference(run, run, "miou", "teacher_miou"),
                 **({"miou_vs_full": difference(run, paired, "miou", "miou")} if full else {})}
                for run, paired in zip(runs, full or runs, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cell([run.get(c) for run in runs]) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("ablations"))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="training seeds per variant (default: params.yaml's seed, one run)")
    parser.add_argument("--redraw-teacher", action="store_true",
                        help="with --seeds: rerun from ingest, so each seed also redraws the initial points and the teacher")
    parser.add_argument("--reseed-from", choices=[FIRST_SEEDED, "splat"], default=FIRST_SEEDED,
                        help="with --seeds: the first stage that takes the seed (splat: the autoencoder keeps the params' seed)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting every variant runs under, e.g. ingest.sparse_views=10 (repeatable)")
    args = parser.parse_args()
    if (args.redraw_teacher or args.reseed_from != FIRST_SEEDED) and args.seeds is None:
        parser.error("--redraw-teacher and --reseed-from need --seeds")
    if args.redraw_teacher and args.reseed_from != FIRST_SEEDED:
        parser.error("--redraw-teacher reseeds from ingest: leave --reseed-from out")
    first_seeded = "ingest" if args.redraw_teacher else args.reseed_from
    firsts = {name: VARIANTS[name][1] for name in args.variants}
    if args.seeds is not None:  # each seed reruns from the first seeded stage at the latest
        firsts = {name: min(first, first_seeded, key=STAGE_ORDER.index) for name, first in firsts.items()}
    source = Path(load_params(args.params).paths.artifacts)
    if args.settings:
        # The stages from the setting's up to the last variant's first stage are the same for every variant: run them
        # once, under the setting, into a base that the variants copy their upstream artifacts from.
        start = STAGE_ORDER.index(setting_stage(args.settings, args.params))
        until = max(STAGE_ORDER.index(first) for first in firsts.values())
        if start < until:
            run_stages(list(STAGE_ORDER[start:until]), args.settings, args.params, args.out / "base", source)
            source = args.out / "base" / "artifacts"
    rows: dict[str, list[dict]] = {}
    for name in args.variants:
        overrides = [*args.settings, *VARIANTS[name][0]]  # the variant's own switch wins over a setting
        if args.seeds is None:
            rows[name] = [run_variant(overrides, firsts[name], args.params, args.out / name, source)]
        else:
            rows[name] = [run_variant(overrides, firsts[name], args.params, args.out / name / f"seed{seed}", source,
                                      reseed=(seed, first_seeded)) for seed in args.seeds]
    table = ablation_table(rows)
    print(table)
    (args.out / "ablations.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
