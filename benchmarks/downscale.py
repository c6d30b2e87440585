"""How `ingest.downscale` shrinks labels and depth, against the same room drawn at the smaller size.

The demo room is drawn twice by `synth`: at `--factor` times the size and at the size itself. Labels and depth of
the large drawing are shrunk by the factor, once as ingest did before (each block's one sample right and below its
centre, half a source pixel off the box-filtered image's pixel centre for even factors) and once as it does now
(labels: each block's majority; depth: each block's lower median of valid samples), and compared, view by view,
with the small drawing's own labels and depth, sampled at the small pixels' centres. A row gives the share of
pixels whose label agrees and the median absolute depth error (mm), averaged over the views.

Run:  python benchmarks/downscale.py [--factor 2] [--size 256 192] [--out downscale] [--params params.yaml]
(about 30 s on a 2-core CPU at the defaults).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from econsg.pipeline import run_stage
from econsg.scene.ingest import downscale_depth, downscale_labels
from econsg.scene.readers import read_scene


def one_sample_per_block(array: np.ndarray, factor: int) -> np.ndarray:
    """The former rule: each block's sample at (factor // 2, factor // 2)."""
    h, w = array.shape[0] // factor, array.shape[1] // factor
    return array[factor // 2 : h * factor : factor, factor // 2 : w * factor : factor]


def compare(large: Path, small: Path, factor: int) -> dict[str, tuple[float, float]]:
    """{rule: (label agreement, median |depth error| in mm)} over the views of two drawings of one room."""
    rules = {"one sample per block (before)": (one_sample_per_block, one_sample_per_block),
             "majority / lower median (now)": (downscale_labels, downscale_depth)}
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in rules}
    for big, truth in zip(read_scene(large).frames, read_scene(small).frames):
        labels, depth = big.load_classes(), big.load_depth()
        true_labels, true_depth = truth.load_classes(), truth.load_depth()
        valid = true_depth > 0
        for name, (shrink_labels, shrink_depth) in rules.items():
            agreement = float((shrink_labels(labels, factor) == true_labels).mean())
            error = float(np.median(np.abs(shrink_depth(depth, factor) - true_depth)[valid]) * 1000)
            scores[name].append((agreement, error))
    return {name: tuple(np.mean(values, axis=0)) for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=2, help="ingest.downscale factor to compare")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("W", "H"), help="the small drawing's size")
    parser.add_argument("--out", type=Path, default=Path("downscale"), help="folder for the two drawings")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (synth section)")
    args = parser.parse_args()
    width, height = args.size
    drawings = {}
    for name, scale in (("large", args.factor), ("small", 1)):
        drawings[name] = args.out / name
        run_stage("synth", args.params, (f"paths.data={drawings[name]}", f"synth.width={width * scale}",
                                         f"synth.height={height * scale}"))
    print(f"| rule (factor {args.factor}, {width * args.factor}x{height * args.factor} -> {width}x{height}) | "
          "label agreement | median depth error (mm) |")
    print("|---|---|---|")
    for name, (agreement, error) in compare(drawings["large"], drawings["small"], args.factor).items():
        print(f"| {name} | {agreement:.4f} | {error:.2f} |")


if __name__ == "__main__":
    main()
