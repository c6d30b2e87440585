"""Render trained Gaussians for held-out views and score RGB quality with torchmetrics."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from econsg.render import render

GAUSSIAN_ARRAYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def load_gaussians(group, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Raw (pre-activation) Gaussian parameters from a splat.zarr group."""
    names = list(GAUSSIAN_ARRAYS) + (["features"] if "features" in group else [])
    return {name: torch.from_numpy(group[name][...]).float().to(device) for name in names}


def render_views(params, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, sh_degree: int,
                 backend: str = "auto", with_features: bool = True):
    """Activate raw parameters and render a batch of cameras (RGB and, if present, the semantic channels)."""
    colors = torch.cat([params["sh0"], params["shN"]], dim=1)
    features = params["features"] if with_features and "features" in params else None
    return render(
        params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]), colors,
        viewmats, Ks, width, height, sh_degree=sh_degree, features=features, backend=backend,
    )


@torch.no_grad()
def evaluate_rgb(params, views, cfg) -> dict[str, float]:
    """Mean test-view PSNR (dB) and SSIM via torchmetrics, one view at a time."""
    psnrs, ssims = [], []
    for v in range(len(views.images)):
        out = render_views(params, views.viewmats[v : v + 1], views.Ks[v : v + 1], views.width, views.height,
                           cfg.sh_degree, cfg.backend, with_features=False)
        pred = out.colors.clamp(0, 1).permute(0, 3, 1, 2)
        gt = views.images[v : v + 1].permute(0, 3, 1, 2)
        psnrs.append(float(peak_signal_noise_ratio(pred, gt, data_range=1.0)))
        ssims.append(float(structural_similarity_index_measure(pred, gt, data_range=1.0)))
    return {"test_psnr": float(np.mean(psnrs)), "test_ssim": float(np.mean(ssims)), "test_views": len(psnrs)}
