"""How hard each semantic term of the splat loss pulls on the features f of a finished run: prints a table (not a test).

For training views of a run, renders the trained Gaussians, takes lambda_sem * Dist(F, F_z^2D) and
lambda_2d * CE(cos(F, T_z) / T, S^h) as the splat stage does (its params: pixels, weights, normalisation), and
prints the norm of each term's gradient with respect to f, at the run's CE temperature and at any other
`--temperatures`. A CE gradient far below Dist's means the CE term barely moves the features at that temperature,
whatever its loss value reads. Geometry and f are the trained ones: the figures describe the end of training.

Run after `dvc repro`:  python benchmarks/semantic_gradients.py [--params params.yaml] [--views 6]
                                                          [--temperatures 1 0.25 0.05]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from econsg.config import load_params
from econsg.scene.store import open_scene
from econsg.semantic import distilled_pixels
from econsg.splat.quality import load_gaussians, stored_renderer
from econsg.workspace import open_stage
from stages.splat import agreement_weights, semantic_loss


def term_gradients(params, view_positions: list[int], temperatures: list[float]) -> dict[str, list[float]]:
    """{'Dist': [|grad| per view], 'CE T=...': [...] per temperature}: gradient norms with respect to f, each term
    built by `stages.splat.semantic_loss` as the splat stage builds it, with the other term's weight set to 0."""
    cfg = params.splat
    scene = open_scene(params.paths.artifact("ingest"))
    splat, ae, cr, fused = (open_stage(params, stage) for stage in ("splat", "autoencode", "crr", "fuse"))
    stored, draw = load_gaussians(splat), stored_renderer(splat)
    text_latents = torch.from_numpy(ae["text_latents"][...]).float()
    train = scene.train_indices
    viewmats, Ks = scene.cameras(train, "cpu")
    norms: dict[str, list[float]] = {"Dist": [], **{f"CE T={t:g}": [] for t in temperatures}}
    for i in view_positions:
        view = int(train[i])
        labels = torch.from_numpy(cr["refined_labels"][view].astype(np.int64))[None]
        source = lambda: torch.from_numpy(cr["feature_source"][view])[None]  # noqa: E731
        weights = torch.from_numpy(agreement_weights(fused, [view])) if cfg.pixel_weights == "agreement" else None
        latent_maps = torch.from_numpy(ae["latent_maps"][view].astype(np.float32))[None]
        targets = (latent_maps, labels, text_latents, distilled_pixels(labels, source, cfg.distill_pixels), weights)
        terms = {"Dist": semantic_loss(cfg.model_copy(update={"lambda_2d": 0.0}), *targets)}
        for t in temperatures:
            terms[f"CE T={t:g}"] = semantic_loss(cfg.model_copy(update={"lambda_sem": 0.0, "ce_temperature": t}), *targets)
        features = stored["features"].clone().requires_grad_(True)
        out = draw({**stored, "features": features}, viewmats[i : i + 1], Ks[i : i + 1], scene.width, scene.height,
                   feature_geometry_grad=False)
        for name, loss in terms.items():
            total, _ = loss(out, 0, None)
            norms[name].append(float(torch.autograd.grad(total, features, retain_graph=True)[0].norm()))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--views", type=int, default=6, help="training views, spread evenly over the training set")
    parser.add_argument("--temperatures", nargs="*", type=float, default=[1.0, 0.25, 0.05])
    args = parser.parse_args()
    params = load_params(args.params)
    n_train = len(open_scene(params.paths.artifact("ingest")).train_indices)
    positions = sorted({int(p) for p in np.linspace(0, n_train - 1, min(args.views, n_train))})
    temperatures = list(dict.fromkeys([params.splat.ce_temperature, *args.temperatures]))
    norms = term_gradients(params, positions, temperatures)
    print(f"{params.paths.artifacts}: |d term / d f| over {len(positions)} training views "
          f"(lambda_sem {params.splat.lambda_sem:g}, lambda_2d {params.splat.lambda_2d:g}, "
          f"run's CE temperature {params.splat.ce_temperature:g})")  # fmt: skip
    print("| term | gradient norm, median | against Dist: median (min-max over views) |")
    print("|---|---|---|")
    for name, values in norms.items():
        ratios = [v / d for v, d in zip(values, norms["Dist"], strict=True)]
        spread = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        print(f"| {name} | {statistics.median(values):.4g} | {spread} |")


if __name__ == "__main__":
    main()
