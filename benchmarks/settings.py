"""The whole pipeline on a small room under many settings: each must run to the end or stop with a clear error.

A researcher changes params the demo never runs with: another image size, more objects, no open-set class, a tiny
latent, sparse views, a custom evaluation vocabulary. Each setting below runs every stage, synth to evaluate, on a
48 x 36 room of 12 views with short training (`SMALL`), in its own folder `OUT/NAME/`. The table gives, per setting,
`ran` with its held-out mIoU, teacher mIoU and PSNR (short training: read them as a sign of life, not accuracy),
`clear error` with the stage and the message a user would see, or `CRASH` with the stage and the traceback's last
line. Only a crash is a bug: a setting that cannot work (more objects than the room holds) must stop with a
message that names the field.

Run:  python benchmarks/settings.py [--only NAME ...] [--out settings] [--params params.yaml] [--set KEY=VALUE ...]
(about 20 s a setting, 10-12 minutes for all on a 2-core CPU). `--set` applies to every setting, after `SMALL`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from econsg.config import load_params
from econsg.pipeline import STAGE_ORDER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import run_stages  # noqa: E402

SMALL = [
    "synth.width=48", "synth.height=36", "synth.num_views=12", "synth.test_every=4", "synth.num_objects=3",
    "extract.synthetic.patch_size=4", "fuse.voxel_size=0.15", "autoencode.iterations=40", "autoencode.batch_size=256",
    "splat.iterations=20", "splat.checkpoint_every=1000", "splat.refine_start_iter=5", "splat.refine_every=5",
    "splat.refine_stop_iter=15", "splat.sh_degree_interval=5", "evaluate.timing_repeats=1", "evaluate.overlay_views=1",
]  # fmt: skip  (sh_degree_interval: the SH degree grows within the 20 steps, so sh_0 and sh_3 differ from the default)

SETTINGS: dict[str, list[str]] = {
    "small": [],
    "odd_size": ["synth.width=50", "synth.height=37"],  # not a multiple of the teacher's patch
    "too_many_objects": ["synth.num_objects=9"],  # more than the room holds: a clear error
    "one_object": ["synth.num_objects=1"],
    "no_open_set": ["extract.open_set_classes=[]"],
    "two_open_set": ["extract.open_set_classes=[plant,tv]"],
    "latent_2": ["autoencode.latent_dim=2"],
    "sh_0": ["splat.sh_degree=0"],
    "sh_3": ["splat.sh_degree=3"],
    "no_crr": ["crr.enabled=false"],
    "random_init": ["splat.init_features=random"],
    "no_semantic_terms": ["splat.lambda_sem=0", "splat.lambda_2d=0"],
    "few_fused_points": ["fuse.max_points=50"],
    "sparse_3": ["ingest.sparse_views=3"],
    "stride_spread": ["ingest.frame_stride=2", "ingest.sparse_views=3", "ingest.sparse_selection=spread"],
    "downscale_2": ["ingest.downscale=2"],
    "four_views": ["synth.num_views=4", "synth.test_every=2"],
    "eval_vocabulary": ["evaluate.vocabulary=[wall,floor,ceiling,table,chair,sofa,lamp,cabinet,bed,plant,tv,shelf,mug]"],
    "tau1_unreachable": ["crr.tau1_mode=absolute", "crr.tau1=0.99"],  # no pixel keeps a label: a clear error
    "tau1_relative": ["crr.tau1_mode=relative"],
    "authors_autoencoder": ["autoencode.loss=authors", "autoencode.ce_weights=uniform"],
    "l2_all_agreement": ["splat.semantic_dist=l2", "splat.distill_pixels=all", "splat.pixel_weights=agreement"],
    "labelled_geometry_grad": ["splat.distill_pixels=labelled", "splat.feature_geometry_grad=true"],
    "wide_fov": ["synth.fov_deg=110"],
    "other_seed": ["seed=123", "synth.seed=123"],
    "fuse_from_points": ["fuse.source=points"],
    "auto_lengths": ["ingest.init_voxel_size=auto", "fuse.voxel_size=auto", "splat.near_plane=auto"],
    "fuse_strict": ["fuse.min_labelled_share=0.9", "fuse.min_views=3"],
    "own_features": ["crr.ignored_features=own", "crr.min_votes=1000"],
    "authors_threshold": ["extract.confidence=cosine", "crr.tau1_mode=relative", "crr.tau1=0.5", "crr.tau2=0"],
    "directions_raw_latents": ["splat.dist_normalize=true", "autoencode.unit_latents=false"],
}

MESSAGE_CHARS = 240  # a row's message is cut after this many characters


def outcome(error: subprocess.CalledProcessError) -> str:
    """A failed stage's row: 'clear error' with the message the user sees, or 'CRASH' with the traceback's last line."""
    stage = next(arg.removeprefix("stages.") for arg in error.cmd if str(arg).startswith("stages."))
    lines = [line.strip() for line in (error.stderr or "").splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if first is not None and not any(line.startswith("Traceback") for line in lines):
        # a params error lists its details, each naming the field, below a first line that repeats every --set
        message = " ".join(lines[first + 1 :]) or lines[first]
        return f"clear error at {stage}: {message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS] + '...'}"
    return f"CRASH at {stage}: {lines[-1] if lines else f'exit {error.returncode}'}"


def run_setting(overrides: list[str], params_file: Path, root: Path) -> str:
    """Every stage with `overrides` in `root`; the row's outcome."""
    try:
        run_stages(list(STAGE_ORDER), [*overrides, f"paths.data={root / 'data'}"], params_file, root, quiet=True)
    except subprocess.CalledProcessError as error:
        return outcome(error)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text(encoding="utf-8"))
    return f"ran: mIoU {metrics['miou']:.3f}, teacher {metrics['teacher_miou']:.3f}, PSNR {metrics['psnr']:.1f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="run these settings only")
    parser.add_argument("--out", type=Path, default=Path("settings"), help="one folder per setting below it")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="extra", action="append", default=[], help="KEY=VALUE for every setting")
    args = parser.parse_args()
    load_params(args.params, [*SMALL, *args.extra])  # a bad key or value in them stops here, before any run
    print("| setting | overrides | seconds | outcome |\n|---|---|---|---|")
    crashes = 0
    for name in args.only or list(SETTINGS):
        start = time.perf_counter()
        row = run_setting([*SMALL, *SETTINGS[name], *args.extra], args.params, (args.out / name).resolve())
        crashes += row.startswith("CRASH")
        print(f"| {name} | {' '.join(SETTINGS[name]) or '(small room only)'} | {time.perf_counter() - start:.0f} | {row} |",
              flush=True)
    print(f"\n{crashes} crash(es)")
    raise SystemExit(1 if crashes else 0)


if __name__ == "__main__":
    main()
