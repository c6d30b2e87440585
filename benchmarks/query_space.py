"""Where to compare a rendered latent with a text: econSG's latent space or the teacher's D-dim space (not a test).

econSG segments by argmax_c cos(F(u), T_z(c)), with T_z = normalize(E(t_c)) (METHOD.md section 6). LangSplat
instead decodes the rendered latent and compares it with the text where the teacher's features live:
argmax_c cos(G(F(u)), t_c). A third rule keeps the latent space but measures directions from the middle of the
training classes' text latents, m = mean_c T_z(c): argmax_c cos(F(u) - m, T_z(c) - m), since a text the autoencoder
never trained on encodes near m. All read the same semantic renders, the ones evaluate keeps for the held-out views
(`feature_maps` in evaluate.zarr), so this scores the three rules on one trained scene with nothing retrained.
Prints a markdown table: mIoU over the evaluation vocabulary's classes present (as evaluate has it) and each class's IoU.

Run after `dvc repro`:  python benchmarks/query_space.py [--params params.yaml] [--set KEY=VALUE ...]
(`--set paths.artifacts=scenes/scene3/artifacts` scores a room of `benchmarks/scenes.py`).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from econsg.config import load_params
from econsg.evaluation import subset_scores, vocabulary_to_scene_ids
from econsg.metrics import confusion_matrix, segmentation_scores
from econsg.semantic import segment_latent
from econsg.workspace import load_autoencoder, open_stage, text_query


def segment_decoded(model, features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """argmax_c cos(G(F(u)), t_c): [..., d] rendered latents -> [...] class indices, in the teacher's space."""
    decoded = model.decode(features.reshape(-1, features.shape[-1]))
    return segment_latent(decoded, text_embeddings).reshape(features.shape[:-1])


def segment_centred(features: torch.Tensor, text_latents: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """argmax_c cos(F(u) - m, T_z(c) - m): [..., d] rendered latents -> [...] class indices, directions taken from m."""
    return segment_latent(features - centre, text_latents - centre)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    params = load_params(args.params, args.settings)
    model = load_autoencoder(open_stage(params, "autoencode")).eval()
    ev = open_stage(params, "evaluate")
    if not ev.attrs["has_ground_truth"]:
        raise SystemExit(f"{params.paths.artifact('evaluate')}: the scene has no ground-truth labels to score against")
    vocabulary, class_names = list(ev.attrs["eval_vocabulary"]), list(ev.attrs["class_names"])
    query = text_query(params, model, evaluated=True)  # refused under another text space than the run's
    text = torch.from_numpy(query.text_embeddings(vocabulary))
    lookup = vocabulary_to_scene_ids(vocabulary, class_names)
    features = torch.from_numpy(np.asarray(ev["feature_maps"][:], dtype=np.float32))
    gt = np.asarray(ev["gt_labels"][:])
    latents = query.text_latents(vocabulary)
    centre = query.text_latents(list(ev.attrs["train_vocabulary"])).mean(dim=0)
    with torch.no_grad():
        rules = {"latent, cos(F, T_z) (econSG)": segment_latent(features, latents),
                 "decoded, cos(G(F), t) (LangSplat)": segment_decoded(model, features, text),
                 "latent centred, cos(F - m, T_z - m)": segment_centred(features, latents, centre)}
    # scored as evaluate scores: over the evaluation vocabulary's classes present in the ground truth
    confusions = {name: confusion_matrix(lookup[pred.numpy()], gt.astype(np.int64), len(class_names))
                  for name, pred in rules.items()}
    shown = subset_scores(next(iter(confusions.values())), lookup)["classes"]
    print("| rule | mIoU | " + " | ".join(class_names[c] for c in shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for name, confusion in confusions.items():
        iou = segmentation_scores(confusion)["iou"]
        print(f"| {name} | {subset_scores(confusion, lookup)['miou']:.3f} | " + " | ".join(f"{iou[c]:.2f}" for c in shown) + " |")


if __name__ == "__main__":
    main()
