"""autoencode: learn the low-dimensional latent space on the fused 3D features -> autoencode.zarr."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from econsg.artifacts import ArtifactWriter, write_curve_csv, write_json_atomic
from econsg.autoencoder import (encode_features, encode_text, latent_class_accuracy, reconstruction_cosine, state_to_arrays,
                                train_autoencoder)
from econsg.config import Params
from econsg.crr import map_refined_features
from econsg.device import resolve_device
from econsg.errors import EconsgError
from econsg.features.base import stored_painted_masks
from econsg.pipeline import stage_main, stage_params
from econsg.progress import track
from econsg.scene.store import open_scene
from econsg.workspace import WEIGHT_PREFIX, open_stage


def ce_weights(fused, rule: str) -> np.ndarray | None:
    """Each fused point's weight in the autoencoder's CE terms (`autoencode.ce_weights`); None = alike."""
    if rule == "labelled_share":
        return fused["labelled_share"][...]
    if rule == "label_support":
        return fused["labelled_share"][...] * fused["vote_share"][...]
    if rule == "uniform":
        return None
    raise EconsgError(f"autoencode.ce_weights: got {rule!r}, expected 'labelled_share', 'label_support' or 'uniform'")


def fit_autoencoder(cfg, features: np.ndarray, labels: np.ndarray, text: np.ndarray, label_weights: np.ndarray | None,
                    seed: int, device: str = "cpu", progress: bool = True):
    """E and G trained on the fused points with the `autoencode` params `cfg`, the run's `seed` drawing the initial
    weights and batches: (model, curve) of `train_autoencoder`."""
    return train_autoencoder(
        features, labels, text,
        latent_dim=cfg.latent_dim, hidden=tuple(cfg.hidden), iterations=cfg.iterations, batch_size=cfg.batch_size,
        lr=cfg.lr, temperature=cfg.temperature, loss_kind=cfg.loss,
        generator=torch.Generator().manual_seed(seed * 1000 + 5), device=device, label_weights=label_weights,
        progress=progress,
    )


def run(params: Params) -> None:
    cfg = params.autoencode
    device = resolve_device(params.device)
    scene = open_scene(params.paths.artifact("ingest"))
    ex = open_stage(params, "extract")
    cr = open_stage(params, "crr")
    fused = open_stage(params, "fuse")
    text = ex["text_embeddings"][...].astype(np.float32)
    features = fused["feature"][...].astype(np.float32)
    labels = fused["label"][...].astype(np.int64)
    has_labels = bool((labels >= 0).any())
    if cfg.loss == "paper" and not has_labels:
        raise EconsgError(f"{params.paths.artifact('fuse')}: label: no fused point carries a class label, and the paper's "
                          "autoencoder loss needs some (check crr's metrics and fuse.min_labelled_share, or use "
                          "autoencode.loss: authors, reconstruction only)")
    start = time.perf_counter()
    model, curve = fit_autoencoder(cfg, features, labels, text, ce_weights(fused, cfg.ce_weights), params.seed, device)
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        latent = encode_features(model, features, unit=cfg.unit_latents).numpy()
        text_latents = encode_text(model, torch.from_numpy(text).to(device)).cpu().numpy()
    H, W = scene.height, scene.width
    V = scene.num_views
    with ArtifactWriter(
        params.paths.artifact("autoencode"),
        stage="autoencode",
        params=stage_params(params, "autoencode"),
        inputs=[scene.group, ex, cr, fused],
    ) as out:
        for name, array in state_to_arrays(model).items():
            dims = tuple(f"{name}_{i}" for i in range(array.ndim))
            out.create_array(WEIGHT_PREFIX + name, array.shape, array.dtype, dims=dims, data=array)
        out.create_array("latent", latent.shape, "float32", data=latent)
        out.create_array("text_latents", text_latents.shape, "float32", data=text_latents)
        maps = out.create_array("latent_maps", (V, H, W, cfg.latent_dim), "float16", per_view=True)

        def encode(rows: np.ndarray) -> np.ndarray:
            return encode_features(model, rows, unit=cfg.unit_latents).numpy().astype(np.float16)

        for v in track(scene.train_indices, "autoencode: 2D latent maps"):
            # each distinct refined feature (a mask's table row, or a pixel's own) is encoded once: F_z^2D
            maps[v] = map_refined_features(encode, ex["features"][v], cr["feature_source"][v],
                                           cr["mask_class_features"][v], H, W, painted=stored_painted_masks(ex, v))
        out.attrs.update({"vocabulary": list(ex.attrs["vocabulary"]), "latent_dim": cfg.latent_dim, "hidden": list(cfg.hidden),
                          "feature_dim": int(text.shape[1])})
        metrics = {  # before the store replaces the previous autoencode.zarr
            "reconstruction_cosine": float(reconstruction_cosine(model, torch.from_numpy(features).to(device))),
            "latent_accuracy": (float(latent_class_accuracy(model, torch.from_numpy(features).to(device),
                                                            torch.from_numpy(labels).to(device), torch.from_numpy(text).to(device)))
                                if has_labels else None),  # the authors' loss trains without labels
            "train_seconds": round(train_seconds, 3),
            "points": int(len(features)),
            "latent_dim": cfg.latent_dim,
        }
    write_json_atomic(params.paths.metrics_file("autoencode"), metrics)
    write_curve_csv(Path(params.paths.plots) / "autoencode_curve.csv", curve)


if __name__ == "__main__":
    stage_main("autoencode")
