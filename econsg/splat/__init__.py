"""Semantic 3D Gaussians: parameters, initialisation, training with densification, PLY export."""

from econsg.splat.gaussians import GAUSSIAN_NAMES, init_gaussians_from_points, render_gaussians
from econsg.splat.losses import color_loss, ssim
from econsg.splat.ply import export_ply, load_ply
from econsg.splat.train import TrainResult, TrainViews, train_gaussians

__all__ = [
    "GAUSSIAN_NAMES",
    "TrainResult",
    "TrainViews",
    "color_loss",
    "export_ply",
    "init_gaussians_from_points",
    "load_ply",
    "render_gaussians",
    "ssim",
    "train_gaussians",
]
