"""Load trained Gaussians from splat.zarr and score rendered RGB against images with torchmetrics."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from econsg.errors import ArtifactError
from econsg.render import RenderOutput
from econsg.splat.gaussians import GAUSSIAN_NAMES, render_gaussians


def load_gaussians(group, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Raw (pre-activation) Gaussian parameters from a splat.zarr group."""
    names = list(GAUSSIAN_NAMES) + (["features"] if "features" in group else [])
    return {name: torch.from_numpy(group[name][...]).float().to(device) for name in names}


def stored_renderer(group, backend: str = "auto") -> Callable[..., RenderOutput]:
    """`render_gaussians` drawing as a splat.zarr group's Gaussians were trained: its SH degree and its near plane
    (`splat.near_plane`, `auto` resolved). Call it with (params, viewmats, Ks, width, height, ...)."""
    if "near_plane" not in group.attrs:
        raise ArtifactError(f"{Path(group.store.root)}: no near_plane attribute (the near plane splat trained with, "
                            "which splat now writes); rerun splat")
    return partial(render_gaussians, sh_degree=int(group.attrs["sh_degree"]), backend=backend,
                   near_plane=float(group.attrs["near_plane"]))


def rgb_quality(rendered: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM of one [H,W,3] render in [0,1] against its image."""
    pred, gt = rendered[None].permute(0, 3, 1, 2), target[None].permute(0, 3, 1, 2)
    return (float(peak_signal_noise_ratio(pred, gt, data_range=1.0)),
            float(structural_similarity_index_measure(pred, gt, data_range=1.0)))


@torch.no_grad()
def evaluate_rgb(params, views, cfg) -> dict[str, float]:
    """Mean test-view PSNR (dB) and SSIM, one view at a time (`cfg.near_plane` a length: `auto` resolved)."""
    scores = []
    for v in range(len(views.images)):
        out = render_gaussians(params, views.viewmats[v : v + 1], views.Ks[v : v + 1], views.width, views.height,
                               cfg.sh_degree, cfg.backend, with_features=False, near_plane=cfg.near_plane)
        scores.append(rgb_quality(out.colors[0].clamp(0, 1), views.image(v)[0]))
    psnrs, ssims = zip(*scores)
    return {"test_psnr": float(np.mean(psnrs)), "test_ssim": float(np.mean(ssims)), "test_views": len(scores)}
