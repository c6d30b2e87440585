"""Throughput and memory of streaming voxel fusion (econsg.fusion) in a box room (six planes), D = 512.

Prints back-projected pixels per second (back-projection + fusion; wall clock, and per CPU-second of this
process, which is steadier on a shared machine: the fusion is single-threaded numpy/scipy) and the
accumulator's size for:
  A) 200 views of 128x96 with table features (per-mask means: 64 rows per view),
  B) 12 views of 640x480 with table features, bilinear taps of a 40x30 patch grid (4 rows per pixel),
  C) 4 views of 640x480 with table features, 64 mask rows (1 row per pixel),
  D) 2 views of 320x240 with dense per-pixel features (the slow path, for comparison).
Run: .venv/bin/python benchmarks/fusion.py
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from econsg.fusion import VoxelFeatureFusion, backproject_depth, bilinear_feature_index

D = 512
C = 10


ROOM = np.array([[-2.5, -1.5, -2.5], [2.5, 1.5, 2.5]])  # a 5 m x 3 m x 5 m room: its six walls are the planes


def random_room_view(rng: np.random.Generator, width: int, height: int):
    """A camera at a random place and heading inside the room; z-depth of its walls (exact ray-box)."""
    f = 0.8 * width
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    yaw, pitch = rng.uniform(-np.pi, np.pi), rng.uniform(-0.4, 0.4)
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    c2w = np.eye(4)
    c2w[:3, :3] = rot
    c2w[:3, 3] = rng.uniform(ROOM[0] * 0.6, ROOM[1] * 0.6)
    rays = np.stack(np.meshgrid((np.arange(width) + 0.5 - width / 2) / f, (np.arange(height) + 0.5 - height / 2) / f), -1)
    dirs = np.concatenate([rays, np.ones((height, width, 1))], -1) @ rot.T  # camera z = 1: t is z-depth
    with np.errstate(divide="ignore"):
        t = np.where(dirs > 0, (ROOM[1] - c2w[:3, 3]) / dirs, (ROOM[0] - c2w[:3, 3]) / dirs)
    return K, c2w, t.min(axis=-1).astype(np.float32)


def run(name: str, views: int, width: int, height: int, mode: str, rows: int = 64) -> None:
    rng = np.random.default_rng(0)
    fusion = VoxelFeatureFusion(voxel_size=0.05, feature_dim=D, num_classes=C)
    pixels = 0
    elapsed = 0.0
    cpu = 0.0
    grid_index = grid_mix = None
    if mode == "bilinear":
        grid_index, grid_mix = bilinear_feature_index(30, 40, height, width)
    for v in range(views):
        K, c2w, depth = random_room_view(rng, width, height)
        labels = rng.integers(-1, C, height * width)
        conf = rng.uniform(0.2, 1.0, height * width).astype(np.float32)
        rgb = rng.uniform(size=(height * width, 3)).astype(np.float32)
        if mode == "bilinear":
            table = rng.normal(size=(30 * 40, D)).astype(np.float16)
        elif mode == "masks":
            table = rng.normal(size=(rows, D)).astype(np.float16)
            # masks are spatially coherent: an 8 x 8 grid of image blocks
            mask_id = ((np.arange(height)[:, None] * 8 // height) * 8 + np.arange(width)[None, :] * 8 // width).reshape(-1)
        else:
            table = rng.normal(size=(height * width, D)).astype(np.float32)
        t0, c0 = time.perf_counter(), time.process_time()
        xyz, pix = backproject_depth(depth, K, c2w)
        if mode == "bilinear":
            fusion.add(xyz, table, labels[pix], conf[pix], rgb[pix], v, feature_index=grid_index[pix], feature_mix=grid_mix[pix])
        elif mode == "masks":
            fusion.add(xyz, table, labels[pix], conf[pix], rgb[pix], v, feature_index=mask_id[pix])
        else:
            fusion.add(xyz, table[pix], labels[pix], conf[pix], rgb[pix], v)
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        pixels += len(pix)
    t0 = time.perf_counter()
    fused = fusion.finalize()
    t_final = time.perf_counter() - t0
    print(
        f"{name:<44} {pixels / elapsed / 1e6:5.2f} M px/s wall, {pixels / cpu / 1e6:5.2f} M px/cpu-s  ({pixels / 1e6:.2f} M px)  "
        f"voxels {fusion.num_voxels:>8}  state {fusion.nbytes / 2**20:7.1f} MiB  "
        f"({fusion.nbytes / max(fusion.num_voxels, 1):.0f} B/voxel)  finalize {t_final:.2f} s  points {len(fused)}"
    )


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(f"D = {D}, {C} classes, voxel 5 cm, single process")
    run("A) 200 views 128x96, 64 mask rows", 200, 128, 96, "masks")
    run("B) 12 views 640x480, bilinear 40x30 grid", 12, 640, 480, "bilinear")
    run("C) 4 views 640x480, 64 mask rows", 4, 640, 480, "masks")
    run("D) 2 views 320x240, dense per-pixel (slow)", 2, 320, 240, "dense")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
