"""How much the autoencoder's random draw moves the 3D semantics, without training a splat: prints a table (not a test).

On the demo the spread of the held-out mIoU over training seeds is the autoencoder's draw (its initial weights and
batches), not the splats' (docs/results.md, ablations). This trains the autoencoder alone, once per seed, as the
autoencode stage does (`stages.autoencode.fit_autoencoder`: its params, the fused points and their CE weights), and
scores the fused points' latents: each point is classified by argmax_c cos(z, T_z(c)) over the scene's classes (the
open-set ones too, through E(t_c)), against the ground-truth class its training views see at it (the geometry oracle's
labelling, `econsg.evaluation.gaussian_ground_truth_labels`). A diagnostic that reads ground truth, as evaluate does;
nothing goes back into a stage. About 10 s per seed and room on 2 cores.

It measures the autoencoder's point semantics, not the trained field: over the demo's eight trained seeds (0-5, 10,
11) it correlates only loosely with their held-out mIoU (Pearson 0.52, Spearman 0.36; docs/results.md), since the
splats also distil the 2D latent maps. Read a shift of its mean over many draws, not one draw's rank.

Run after `dvc repro`:  python benchmarks/autoencoder_draws.py [--params params.yaml] [--seeds 0 1 2 ...]
                        [--artifacts DIR ...] [--set autoencode.KEY=VALUE ...]
(--artifacts: other rooms' artifact folders, e.g. scenes/sceneN/artifacts from benchmarks/scenes.py)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from econsg.artifacts import open_artifact
from econsg.autoencoder import encode_features, encode_text
from econsg.config import load_params
from econsg.evaluation import gaussian_ground_truth_labels
from econsg.features.backends import build_text_encoder, embed_classes
from econsg.metrics import confusion_matrix, segmentation_scores
from econsg.scene.store import open_ground_truth, open_scene
from stages.autoencode import ce_weights, fit_autoencoder


def point_truth(artifacts: Path, fused) -> tuple[np.ndarray, list[str]]:
    """Ground-truth class of every fused point (IGNORE where no training view sees it on its surface) and the
    scene's class names."""
    scene = open_scene(artifacts / "scene.zarr")
    if not scene.has_depth:
        raise SystemExit(f"{artifacts / 'scene.zarr'}: depth: none; the point labels need the views' depth maps")
    truth = open_ground_truth(artifacts / "scene.zarr")
    labels = gaussian_ground_truth_labels(fused["xyz"][...], scene.train_indices, classes=truth.classes,
                                          depth=scene.depth, Ks=scene.Ks, c2w=scene.c2w,
                                          num_classes=len(truth.class_names))  # fmt: skip
    return labels, list(truth.class_names)


def draw_scores(params, artifacts: Path, seeds: list[int]) -> list[dict]:
    """Per seed: the fused points' latent mIoU over the scene's classes and each class's IoU."""
    cfg = params.autoencode
    fused = open_artifact(artifacts / "fuse.zarr", "fuse")
    truth, class_names = point_truth(artifacts, fused)
    extract = open_artifact(artifacts / "extract.zarr", "extract")
    features = fused["feature"][...].astype(np.float32)
    texts = torch.from_numpy(embed_classes(build_text_encoder(params.extract), class_names, params.extract))
    labels, text = fused["label"][...].astype(np.int64), extract["text_embeddings"][...].astype(np.float32)
    weights = ce_weights(fused, cfg.ce_weights)
    rows = []
    for seed in seeds:
        model, _ = fit_autoencoder(cfg, features, labels, text, weights, seed, progress=False)
        with torch.no_grad():
            predicted = (encode_features(model, features, unit=True) @ encode_text(model, texts).T).argmax(-1).numpy()
        scores = segmentation_scores(confusion_matrix(predicted, truth, len(class_names)))
        iou = {name: float(v) for name, v, present in zip(class_names, scores["iou"], scores["present"]) if present}
        rows.append({"seed": seed, "miou": scores["miou"], "iou": iou})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(12)))
    parser.add_argument("--artifacts", nargs="*", type=Path, default=None,
                        help="artifact folders to score (default: the params' own)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="autoencode.KEY=VALUE")
    args = parser.parse_args()
    if bad := [item for item in args.settings if not item.startswith("autoencode.")]:
        parser.error(f"--set {bad[0]}: expected an autoencode setting (autoencode.KEY=VALUE)")
    params = load_params(args.params, args.settings)  # a bad key or value raises ConfigError naming it
    rooms = args.artifacts or [Path(params.paths.artifacts)]
    print("| artifacts | point mIoU: mean (min-max) | per seed | weakest classes (mean IoU) |")
    print("|---|---|---|---|")
    for artifacts in rooms:
        rows = draw_scores(params, artifacts, args.seeds)
        mious = [row["miou"] for row in rows]
        classes = {name: statistics.fmean(row["iou"][name] for row in rows) for name in rows[0]["iou"]}
        weakest = ", ".join(f"{name} {value:.2f}" for name, value in sorted(classes.items(), key=lambda kv: kv[1])[:3])
        per_seed = " / ".join(f"{row['seed']}: {row['miou']:.3f}" for row in rows)
        print(f"| {artifacts} | {statistics.fmean(mious):.3f} ({min(mious):.3f}-{max(mious):.3f}) | {per_seed} | {weakest} |",
              flush=True)


if __name__ == "__main__":
    main()
