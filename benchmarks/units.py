"""The same room in other units: a reconstruction's unit is arbitrary (COLMAP's), its figures should not be.

The demo room is drawn once (`synth`, into OUT/data_1), then copied at each scale s of `--scales` with every camera
centre and depth value multiplied by s, as if a reconstruction had put the same room in other units. Each copy runs
ingest to evaluate under each voxel setting of `--voxels`:
  metric  the defaults as they are, in metres (fuse.voxel_size 0.08, ingest.init_voxel_size 0.02, splat.near_plane 0.01)
  auto    the three `auto`: each a fraction of the median depth at which the training views see the scene

A row gives the scale, the voxel setting, fuse's voxel size and points, splat's Gaussians, PSNR and mIoU. A run whose
fuse yields more points than `--max-points` stops there (at the metric voxel on a room 10x larger, every back-projected
pixel is its own voxel: 411k points, where splat at the demo's size takes tens of minutes) and its row says so.

Run:  python benchmarks/units.py [--scales 0.1 1 10] [--voxels metric auto] [--out units] [--params params.yaml]
                                 [--set synth.width=128 --set synth.height=96 ...]
(about 2.5 minutes a run at 128 x 96 on a 2-core CPU; `--set` applies to every run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from econsg.config import load_params
from econsg.pipeline import STAGE_ORDER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import run_stages  # noqa: E402
from settings import outcome  # noqa: E402

VOXELS = {"metric": [], "auto": ["ingest.init_voxel_size=auto", "fuse.voxel_size=auto", "splat.near_plane=auto"]}


def rescale_blender(source: Path, scale: float, target: Path) -> Path:
    """A copy of the Blender-layout dataset `source` with every camera centre and depth value multiplied by `scale`."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for split in target.glob("transforms_*.json"):
        meta = json.loads(split.read_text(encoding="utf-8"))
        meta["depth_scale"] = meta["depth_scale"] / scale  # depth = stored value / depth_scale
        for frame in meta["frames"]:
            for row in frame["transform_matrix"][:3]:
                row[3] *= scale
        split.write_text(json.dumps(meta), encoding="utf-8")
    return target


def run_scale(data: Path, overrides: list[str], params_file: Path, root: Path, max_points: int) -> dict:
    """ingest to evaluate on `data` in `root`; stops after fuse when it yields more than `max_points` points, and
    where a stage stops with an error (its message in the row's `stopped`)."""
    start = time.perf_counter()
    sets = [*overrides, f"paths.data={data}"]
    stages = list(STAGE_ORDER[STAGE_ORDER.index("ingest") :])
    fuse_last = stages.index("fuse") + 1
    row = {}
    try:
        run_stages(stages[:fuse_last], sets, params_file, root, quiet=True)
        row["fuse"] = json.loads((root / "metrics" / "fuse.json").read_text(encoding="utf-8"))
        if row["fuse"]["points"] <= max_points:
            run_stages(stages[fuse_last:], sets, params_file, root, source=root / "artifacts", quiet=True)
            row |= {stage: json.loads((root / "metrics" / f"{stage}.json").read_text(encoding="utf-8")) for stage in ("splat", "evaluate")}
    except subprocess.CalledProcessError as error:
        row["stopped"] = outcome(error)
    row["seconds"] = time.perf_counter() - start
    return row


def table_row(scale: float, voxels: str, row: dict, max_points: int) -> str:
    fuse = row.get("fuse")
    cells = [f"{scale:g}", voxels]
    cells += [f"{fuse['voxel_size']:.3g}", f"{fuse['median_depth']:.3g}", f"{fuse['points']:,}"] if fuse else ["", "", ""]
    if "evaluate" in row:
        cells += [f"{row['splat']['num_gaussians']:,}", f"{row['evaluate']['psnr']:.2f}", f"{row['evaluate']['miou']:.3f}"]
    elif "stopped" in row:
        cells += [row["stopped"], "", ""]
    else:
        cells += [f"stopped after fuse: more than {max_points:,} points", "", ""]
    return "| " + " | ".join([*cells, f"{row['seconds']:.0f}"]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    parser.add_argument("--voxels", nargs="+", choices=sorted(VOXELS), default=["metric", "auto"])
    parser.add_argument("--out", type=Path, default=Path("units"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="extra", action="append", default=[], help="KEY=VALUE for every run")
    parser.add_argument("--max-points", type=int, default=100_000, help="stop a run after fuse above this many points")
    args = parser.parse_args()
    if any(scale <= 0 for scale in args.scales):
        parser.error(f"--scales: expected positive factors, got {args.scales}")
    load_params(args.params, [*args.extra, *VOXELS["auto"]])  # a bad key or value stops here, before any run
    out = args.out.resolve()
    drawn = out / "data_1"  # drawn on every call: a room left by a call with other --set values would be stale
    run_stages(["synth"], [*args.extra, f"paths.data={drawn}"], args.params, out / "synth", quiet=True)
    print("| scale | voxels | fuse voxel | median depth | fused points | Gaussians | PSNR | mIoU | seconds |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        data = drawn if scale == 1 else rescale_blender(drawn, scale, out / f"data_{scale:g}")
        for voxels in args.voxels:
            row = run_scale(data, [*args.extra, *VOXELS[voxels]], args.params, out / f"{voxels}_{scale:g}", args.max_points)
            print(table_row(scale, voxels, row, args.max_points), flush=True)


if __name__ == "__main__":
    main()
