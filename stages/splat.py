"""splat: train semantic 3D Gaussians initialised from the fused points with f = z -> splat.zarr."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from econsg.artifacts import ArtifactWriter, write_curve_csv, write_json_atomic
from econsg.config import Params
from econsg.device import check_backend, resolve_device
from econsg.pipeline import code_digest, stage_main, stage_params
from econsg.progress import report
from econsg.semantic import distilled_pixels, make_semantic_loss
from econsg.splat import GAUSSIAN_NAMES, TrainViews, init_gaussians_from_points, train_gaussians
from econsg.splat.quality import evaluate_rgb
from econsg.scene.scale import NEAR_PLANES_PER_MEDIAN_DEPTH, resolve_scene_length
from econsg.scene.store import open_scene
from econsg.workspace import open_stage


def load_views(scene, indices: np.ndarray, device: str, extras: dict[str, torch.Tensor] | None = None) -> TrainViews:
    """The views `indices`: cameras on `device`; images as stored (uint8) and `extras` on the CPU, pinned for a GPU
    run (each step moves the view it draws)."""
    images = on_host(torch.from_numpy(np.stack([scene.group["images"][v] for v in indices])), device)
    viewmats, Ks = scene.cameras(indices, device)
    return TrainViews(images=images, viewmats=viewmats, Ks=Ks, width=scene.width, height=scene.height, extras=extras or {})


def on_host(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """A per-view tensor kept in host memory, pinned when the run trains on CUDA (faster, asynchronous copies)."""
    return tensor.pin_memory() if str(device).startswith("cuda") else tensor


def initial_features(cfg, latent: np.ndarray, seed: int) -> torch.Tensor:
    """f = z from the 3D contextual latent space, or random (the feature-distillation ablation).

    The random features come from their own generator, not the training one: the ablation then trains the same
    rotations, camera order and densification as the full method, and only the semantics differ.
    """
    if cfg.init_features == "latent":
        return torch.from_numpy(latent).float()
    return torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def agreement_weights(fused, views) -> np.ndarray:
    """[V, H, W] pixel weights of `splat.pixel_weights: agreement`: fuse's multi-view agreement of each pixel's crr
    decision in `views`; a pixel fuse has no agreement for (NaN) weighs 1."""
    agreement = np.stack([fused["agreement"][v] for v in views]).astype(np.float32)
    return np.nan_to_num(agreement, nan=1.0)


def semantic_loss(cfg, latent_maps: torch.Tensor, labels: torch.Tensor, text_latents: torch.Tensor,
                  distill_mask: torch.Tensor | None, pixel_weights: torch.Tensor | None):
    """lambda_sem Dist(F, F_z^2D) + lambda_2d CE(cos(F, T_z)/T, S^h) with the `splat` params `cfg`: the extra loss
    `make_semantic_loss` builds from the per-view targets."""
    return make_semantic_loss(
        latent_maps, labels, text_latents, lambda_sem=cfg.lambda_sem, lambda_2d=cfg.lambda_2d, dist=cfg.semantic_dist,
        temperature=cfg.ce_temperature, ce_normalize=cfg.ce_normalize, distill_mask=distill_mask,
        dist_normalize=cfg.dist_normalize, pixel_weights=pixel_weights,
    )


def resolved_near_plane(cfg, scene) -> float:
    """splat.near_plane as a length: `auto` from the scene's median depth; a number far beyond it draws a warning."""
    near_plane, warning = resolve_scene_length("splat.near_plane", cfg.near_plane, scene.median_depth,
                                               NEAR_PLANES_PER_MEDIAN_DEPTH, warn_if_smaller=False)
    if warning:
        report(f"splat: {warning}")
    return near_plane


def run(params: Params) -> None:
    device = resolve_device(params.device)
    check_backend(params.splat.backend, device)
    scene = open_scene(params.paths.artifact("ingest"))
    cfg = params.splat.model_copy(update={"near_plane": resolved_near_plane(params.splat, scene)})
    if warning := cfg.densification_warning():
        report(warning)
    fused = open_stage(params, "fuse")
    ae = open_stage(params, "autoencode")
    cr = open_stage(params, "crr")
    train = scene.train_indices
    generator = torch.Generator().manual_seed(params.seed * 1000 + 6)
    gaussians = init_gaussians_from_points(
        torch.from_numpy(fused["xyz"][...]).float(),
        torch.from_numpy(fused["rgb"][...].astype(np.float32) / 255.0),
        sh_degree=cfg.sh_degree,
        init_opacity=cfg.init_opacity,
        init_scale=cfg.init_scale,
        features=initial_features(cfg, ae["latent"][...], seed=params.seed * 1000 + 7),
        generator=generator,
    ).to(device)
    # the per-view targets keep their stored dtypes (float16 latents, int16 labels) in host memory; the loss moves
    # and widens the view it reads: on a long sequence they are most of splat's memory
    latent_maps = torch.from_numpy(np.stack([ae["latent_maps"][v] for v in train]))
    labels = torch.from_numpy(np.stack([cr["refined_labels"][v] for v in train]))
    text_latents = torch.from_numpy(ae["text_latents"][...]).float().to(device)
    extras = {"latent_maps": latent_maps, "labels": labels}

    def feature_source() -> torch.Tensor:
        return torch.from_numpy(np.stack([cr["feature_source"][v] for v in train]))

    if (distill_mask := distilled_pixels(labels, feature_source, cfg.distill_pixels)) is not None:
        extras["distill_mask"] = distill_mask
    if cfg.pixel_weights == "agreement":
        extras["pixel_weights"] = torch.from_numpy(agreement_weights(fused, train))
    extras = {name: on_host(value, device) for name, value in extras.items()}
    # the 2D targets travel as per-view extras: validated against the views and part of the checkpoint fingerprint
    views = load_views(scene, train, device, extras=extras)
    if device.startswith("cuda") and cfg.backend != "torch":
        from econsg.render.gsplat_backend import require_gsplat_kernels

        require_gsplat_kernels()  # a first use builds them (minutes): before training, which is timed
    extra_loss = semantic_loss(cfg, views.extras["latent_maps"], views.extras["labels"], text_latents,
                               views.extras.get("distill_mask"), views.extras.get("pixel_weights"))
    # checkpoints resume only a run of the same code, on the same kind of device, with the same text latents
    run_key = f"{code_digest('splat')};{device};{hashlib.sha256(text_latents.cpu().numpy().tobytes()).hexdigest()}"
    result = train_gaussians(
        views, gaussians, cfg, generator=generator, extra_loss=extra_loss,
        checkpoint_dir=params.paths.checkpoint_folder("splat"), run_key=run_key,
    )
    test = load_views(scene, scene.test_indices, device)
    quality = evaluate_rgb(result.params, test, cfg)
    g = {name: result.params[name].detach().cpu().numpy() for name in result.params.keys()}
    # wall-clock columns stay out of the array so that the same params and seed give the same content hash
    curve_keys = sorted({key for row in result.curve for key in row} - {"seconds"})
    curve = np.array([[row.get(key, np.nan) for key in curve_keys] for row in result.curve], dtype=np.float64).reshape(-1, len(curve_keys))
    with ArtifactWriter(
        params.paths.artifact("splat"),
        stage="splat",
        params=stage_params(params, "splat"),
        inputs=[scene.group, cr, fused, ae],
    ) as out:
        for name in GAUSSIAN_NAMES:
            out.create_array(name, g[name].shape, "float32", data=g[name])
        out.create_array("features", g["features"].shape, "float32", data=g["features"])
        out.create_array("curve", curve.shape, "float64", data=curve)
        out.attrs.update({"curve_columns": curve_keys, "sh_degree": cfg.sh_degree, "near_plane": cfg.near_plane,
                          "vocabulary": list(ae.attrs["vocabulary"])})
        out.run["train_seconds"] = result.train_seconds  # a time: out of the store's DVC hash
    write_json_atomic(
        params.paths.metrics_file("splat"),
        {"train_seconds": round(result.train_seconds, 2), "num_gaussians": int(g["means"].shape[0]), **quality},
    )
    write_curve_csv(Path(params.paths.plots) / "splat_curve.csv", result.curve)


if __name__ == "__main__":
    stage_main("splat")
