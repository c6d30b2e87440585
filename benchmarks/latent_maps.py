"""Speed of autoencode's 2D latent maps F_z^2D = E(refined features), one 640x480 view at a time, D = 512, d = 16.

A view's refined features are a few mask-table rows (crr's class means and pooled means) and, for the pixels crr
left with their own feature, the bilinearly up-sampled 80x60 patch grid. Prints seconds per view for
  full map   the whole [H, W, D] map formed, then every pixel encoded (before this release),
  rows       `econsg.crr.map_refined_features`: each distinct feature encoded once, 65,536 pixels at a time
             (what the stage runs),
at several shares of own-feature pixels, and whether the two give the same float16 latents.
The encoder is randomly initialised (speed does not depend on its weights).
Run: .venv/bin/python benchmarks/latent_maps.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from econsg.autoencoder import LatentAutoencoder, encode_features
from econsg.crr import map_refined_features
from econsg.features.base import upsample_feature_rows

H, W, D, LATENT = 480, 640, 512, 16
GRID = (60, 80)
TABLE_ROWS = 40
REPEATS = 3


def random_view(rng: np.random.Generator, own_share: float):
    """A patch grid, a mask table and a feature_source map with `own_share` of the pixels at -1, the rest in
    rectangular masks (as crr's masks tile a view)."""
    grid = rng.standard_normal((*GRID, D)).astype(np.float16)
    table = rng.standard_normal((TABLE_ROWS, D)).astype(np.float16)
    blocks = rng.integers(0, TABLE_ROWS, (H // 48 + 1, W // 64 + 1))
    source = np.kron(blocks, np.ones((48, 64), np.int64))[:H, :W].astype(np.int32)
    source[rng.random((H, W)) < own_share] = -1
    return grid, source, table


def seconds(fn) -> float:
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.manual_seed(0)
    model = LatentAutoencoder(D, LATENT, (256, 128, 64, 32)).eval()
    rng = np.random.default_rng(0)
    print("| own-feature pixels | full map, s/view | rows, s/view | speed-up | same latents |")
    print("|---|---|---|---|---|")
    for own_share in (0.1, 0.25, 0.5, 1.0):
        grid, source, table = random_view(rng, own_share)

        def full_map():
            features = upsample_feature_rows(grid, H, W)
            use = source >= 0
            features[use] = table.astype(np.float32)[source[use]]
            return encode_features(model, features, unit=True).numpy().astype(np.float16)

        def by_rows():
            return map_refined_features(lambda rows: encode_features(model, rows, unit=True).numpy().astype(np.float16),
                                        grid, source, table, H, W)

        same = np.array_equal(full_map(), by_rows())
        slow, fast = seconds(full_map), seconds(by_rows)
        print(f"| {own_share:.0%} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
