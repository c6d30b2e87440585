"""Ablations of econSG's components on the demo scene: prints a markdown table (not a test).

Each variant reuses the demo's upstream artifacts (copied) and reruns only the stages its switch
affects, with `--set` overrides and its own artifact/metrics folders:
  full          the method as configured in params.yaml
  no_crr        crr.enabled=false: raw labels and features go to fusion and supervision
  no_3d_init    splat.init_features=random: f starts random (feature distillation, Feature-3DGS style)
  no_ce         splat.lambda_2d=0: no cross-entropy term in the splat loss
  3d_init_only  splat.lambda_sem=0, lambda_2d=0: semantics from the 3D latent initialisation alone
  joint_geometry splat.feature_geometry_grad=true: the semantic terms also move and densify the geometry
  labelled_distill splat.distill_ignored=false: Dist only on the pixels crr labelled
  raw_latents   autoencode.unit_latents=false: latents keep E's lengths (the splats blend them unequally)
  own_features  crr.ignored_features=own: ignored pixels keep their own feature (METHOD.md), no mask pooling
  authors_loss  splat.dist_normalize=true, splat.ce_temperature=1: the authors' code's Dist (on F/|F|) and CE
                (raw cosines as logits, as the default has it too)
  sharp_ce      splat.ce_temperature=0.05: CE logits cos / 0.05, as sharp as the other softmaxes (the old default)
  uniform_ce    autoencode.ce_weights=uniform: every labelled fused point weighs alike in the autoencoder's CE
                terms (METHOD.md; the old default)

Run after `dvc repro`:  python benchmarks/ablations.py [--params params.yaml] [--out ablations] [--seeds 0 10 11]

With `--seeds`, every variant reruns once per seed (`--set seed=S`) from autoencode at the latest, the first stage
that draws random numbers (the autoencoder's initialisation and batches; then the splats' camera order, rotations
and densification), and each cell reads mean (min-max): a difference between two variants can be set against the
spread of training alone. With `--redraw-teacher` as well, each seed reruns from ingest instead: the initial points
and the synthetic teacher's degradations are drawn again too, so the spread includes the input's (the teacher's
mIoU on six held-out views moves by several points from one draw to the next), and `over_teacher` reads each run's
margin over its own teacher.
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
from econsg.pipeline import STAGE_ORDER

VARIANTS = {
    "full": ([], "splat"),
    "no_crr": (["crr.enabled=false"], "crr"),
    "no_3d_init": (["splat.init_features=random"], "splat"),
    "no_ce": (["splat.lambda_2d=0"], "splat"),
    "3d_init_only": (["splat.lambda_sem=0", "splat.lambda_2d=0"], "splat"),
    "joint_geometry": (["splat.feature_geometry_grad=true"], "splat"),
    "labelled_distill": (["splat.distill_ignored=false"], "splat"),
    "raw_latents": (["autoencode.unit_latents=false"], "autoencode"),
    "own_features": (["crr.ignored_features=own"], "crr"),
    "authors_loss": (["splat.dist_normalize=true", "splat.ce_temperature=1.0"], "splat"),
    "sharp_ce": (["splat.ce_temperature=0.05"], "splat"),
    "uniform_ce": (["autoencode.ce_weights=uniform"], "autoencode"),
}
# The first stage whose training draws on `seed`. ingest and extract also read it (the initial points, the
# teacher's noise) and fuse only to subsample with max_points: they make the input, not the training.
FIRST_SEEDED = "autoencode"
COLUMNS = ("miou", "macc", "closed_set_miou", "open_set_miou", "teacher_miou", "over_teacher", "geometry_oracle_miou",
           "consistency", "psnr")


def run_variant(overrides: list[str], first_stage: str, params_file: Path, root: Path) -> dict:
    """Copy the demo's artifacts upstream of `first_stage` into `root`, rerun the rest with `overrides`."""
    demo = load_params(params_file).paths
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for stage in STAGE_ORDER[1 : STAGE_ORDER.index(first_stage)]:
        target = artifacts / demo.artifact(stage).name
        if not target.exists():
            shutil.copytree(demo.artifact(stage), target)
    paths = [f"paths.artifacts={artifacts}", f"paths.metrics={root / 'metrics'}", f"paths.plots={root / 'plots'}",
             f"paths.checkpoints={root / 'checkpoints'}"]
    sets = [arg for item in overrides + paths for arg in ("--set", item)]
    start = time.perf_counter()
    for stage in STAGE_ORDER[STAGE_ORDER.index(first_stage) :]:
        subprocess.run([sys.executable, "-m", f"stages.{stage}", str(params_file), *sets], check=True)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    metrics["seconds"] = time.perf_counter() - start
    return metrics


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
    args = parser.parse_args()
    if args.redraw_teacher and args.seeds is None:
        parser.error("--redraw-teacher needs --seeds")
    first_seeded = "ingest" if args.redraw_teacher else FIRST_SEEDED
    rows: dict[str, list[dict]] = {}
    for name in args.variants:
        overrides, first = VARIANTS[name]
        if args.seeds is None:
            rows[name] = [run_variant(overrides, first, args.params, args.out / name)]
        else:
            first = min(first, first_seeded, key=STAGE_ORDER.index)
            rows[name] = [run_variant([*overrides, f"seed={seed}"], first, args.params, args.out / name / f"seed{seed}")
                          for seed in args.seeds]
    table = ablation_table(rows)
    print(table)
    (args.out / "ablations.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
