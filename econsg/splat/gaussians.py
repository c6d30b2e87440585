"""3D Gaussian parameters in gsplat's naming, their initialisation from a point cloud, and rendering.

A Gaussian set is a `torch.nn.ParameterDict` of raw (pre-activation) tensors:
- "means"     [N, 3]      centres (m, world frame)
- "scales"    [N, 3]      log of the per-axis standard deviations (m)
- "quats"     [N, 4]      rotations (w, x, y, z), not necessarily normalised
- "opacities" [N]         opacity logits
- "sh0"       [N, 1, 3]   degree-0 SH coefficients (base colour)
- "shN"       [N, K-1, 3] higher SH coefficients, K = (sh_degree + 1)^2
- "features"  [N, d]      optional semantic channels (econSG's f), composited without activation
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from econsg.errors import EconsgError
from econsg.render import DEFAULT_NEAR_PLANE, RenderOutput, render, rgb_to_sh0
from econsg.render.sh import num_sh_bases

GAUSSIAN_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


NEAREST_FLOOR = 1e-3  # the smallest initial scale, as a fraction of the cloud's median nearest-neighbour distance


def nearest_neighbour_scale(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance (scene units) from each point to its k nearest other points: [P, 3] -> [P].

    Uses as many neighbours as exist when P <= k; a lone point, or a cloud of one repeated point, gets 1.0.
    Distances are clamped below at NEAREST_FLOOR x the cloud's median, so that coincident points keep a finite
    log-scale in any unit. (3DGS clamps the squared distances at 1e-7 absolute, 0.3 mm: in a scene 1000x smaller
    than metres, where neighbours lie 0.08 mm apart, that floor set every point's scale, 4x too large.)
    """
    n = xyz.shape[0]
    if n == 1:
        return np.ones(1)
    kk = min(k, n - 1)
    dist, _ = cKDTree(xyz).query(xyz, k=kk + 1)
    mean = dist[:, 1:].mean(axis=1)
    apart = mean[mean > 0]
    return np.maximum(mean, NEAREST_FLOOR * np.median(apart)) if len(apart) else np.ones(n)


def init_gaussians_from_points(
    xyz: Tensor,
    rgb: Tensor,
    *,
    sh_degree: int,
    init_opacity: float = 0.1,
    init_scale: float = 1.0,
    features: Tensor | None = None,
    generator: torch.Generator,
) -> torch.nn.ParameterDict:
    """One isotropic Gaussian per point, as gsplat's simple_trainer initialises from an SfM cloud.

    xyz [P, 3] metres; rgb [P, 3] in [0, 1]; features [P, d] optional semantic channels (copied);
    sh_degree 0..4 sets the width of shN ((sh_degree + 1)^2 - 1 coefficients, zeros). Scale = init_scale
    x mean distance to the 3 nearest points (simple_trainer and 3DGS take the root-mean-square of the same three
    distances, a little larger where they differ); rotations uniform random in [0, 1)^4 from `generator`
    (as simple_trainer); opacity = init_opacity. Returns float32 parameters on xyz's device.
    """
    if not isinstance(xyz, Tensor) or xyz.ndim != 2 or xyz.shape[1] != 3:
        raise EconsgError(f"xyz: got {_describe(xyz)}, expected a [P, 3] tensor of point positions")
    p = xyz.shape[0]
    if p == 0:
        raise EconsgError("xyz: got an empty point cloud (0 points), expected at least one point to initialise Gaussians")
    if not isinstance(rgb, Tensor) or tuple(rgb.shape) != (p, 3):
        raise EconsgError(f"rgb: got {_describe(rgb)}, expected a [{p}, 3] tensor of colours in [0, 1]")
    if features is not None and (not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != p):
        raise EconsgError(f"features: got {_describe(features)}, expected a [{p}, d] tensor (one row per point)")
    if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= 4:
        raise EconsgError(f"sh_degree: got {sh_degree!r}, expected an integer in 0..4")
    if not 0 < init_opacity < 1:
        raise EconsgError(f"init_opacity: got {init_opacity!r}, expected a value in (0, 1)")
    if not init_scale > 0:
        raise EconsgError(f"init_scale: got {init_scale!r}, expected a positive factor")
    for name, value in (("xyz", xyz), ("rgb", rgb), ("features", features)):
        if value is not None and not torch.isfinite(value).all():
            raise EconsgError(f"{name}: contains NaN or Inf values, expected finite numbers")

    device = xyz.device
    xyz32 = xyz.detach().float()
    dist = nearest_neighbour_scale(xyz32.cpu().double().numpy())
    scales = dist * init_scale
    opacity_logit = torch.logit(torch.full((p,), float(init_opacity), device=device))
    _check_representable(scales, opacity_logit, init_scale, init_opacity)
    log_scale = torch.from_numpy(np.log(scales)).float().to(device)
    k = num_sh_bases(sh_degree)
    quats = torch.rand(p, 4, generator=generator, device=generator.device).to(device)
    params = {
        "means": xyz32.clone(),
        "scales": log_scale[:, None].repeat(1, 3),
        "quats": quats,
        "opacities": opacity_logit,
        "sh0": rgb_to_sh0(rgb.detach().float().clamp(0, 1))[:, None, :],
        "shN": torch.zeros(p, k - 1, 3, device=device),
    }
    if features is not None:
        params["features"] = features.detach().float().to(device).clone()
    return torch.nn.ParameterDict({name: torch.nn.Parameter(value) for name, value in params.items()})


def _check_representable(scales: np.ndarray, opacity_logit: Tensor, init_scale: float, init_opacity: float) -> None:
    """The initial Gaussians' scales [P] (float64) and opacity logits are finite in float32, as training needs:
    otherwise their first step is NaN, and the fault is the initialisation's, not the learning rates'."""
    if not (scales < np.finfo(np.float32).max).all():
        raise EconsgError(f"init_scale: got {init_scale!r}, which makes the initial scales (init_scale x the mean distance "
                          f"to the 3 nearest points) up to {float(scales.max()):.3g}, past float32's range; "
                          "expected a factor near 1")
    if not torch.isfinite(opacity_logit).all():
        rounded, bound = ("1", "at most 1 - 6e-8") if init_opacity > 0.5 else ("0", "at least 1.4e-45")
        raise EconsgError(f"init_opacity: got {init_opacity!r}, which float32 rounds to {rounded} (an infinite logit); "
                          f"expected a value in (0, 1) {bound}")


def activated(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Raw parameters -> what `render` takes: scales exp'd, opacities sigmoid'ed, SH coefficients [N, K, 3]."""
    return {
        "means": params["means"],
        "quats": params["quats"],
        "scales": torch.exp(params["scales"]),
        "opacities": torch.sigmoid(params["opacities"]),
        "colors": torch.cat([params["sh0"], params["shN"]], dim=1),
    }


def render_gaussians(
    params: Mapping[str, Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int,
    backend: str = "auto",
    with_features: bool = True,
    feature_geometry_grad: bool = True,
    near_plane: float = DEFAULT_NEAR_PLANE,
) -> RenderOutput:
    """Activate raw parameters and render C cameras: viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3].

    sh_degree may be below the stored one (the training schedule); the semantic channels are rendered
    when `with_features` and params holds "features"; `feature_geometry_grad` and `near_plane` as in
    `econsg.render.render` (a trained splat's own, as stored: `econsg.splat.quality.stored_renderer`).
    """
    a = activated(params)
    features = params["features"] if with_features and "features" in params else None
    return render(a["means"], a["quats"], a["scales"], a["opacities"], a["colors"], viewmats, Ks, width, height,
                  sh_degree=sh_degree, features=features, backend=backend,
                  feature_geometry_grad=feature_geometry_grad, near_plane=near_plane)  # fmt: skip


def check_gaussians(params: Mapping[str, Tensor], name: str = "params") -> int:
    """Raise EconsgError unless params holds consistent Gaussian arrays; returns N."""
    missing = [key for key in GAUSSIAN_NAMES if key not in params]
    if missing:
        raise EconsgError(f"{name}: missing {', '.join(missing)}; expected keys {', '.join(GAUSSIAN_NAMES)} (+ features)")
    n = params["means"].shape[0]
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,)}
    for key, shape in shapes.items():
        if tuple(params[key].shape) != shape:
            raise EconsgError(f"{name}.{key}: got shape {tuple(params[key].shape)}, expected {list(shape)} (N = {n})")
    if tuple(params["sh0"].shape) != (n, 1, 3):
        raise EconsgError(f"{name}.sh0: got shape {tuple(params['sh0'].shape)}, expected [{n}, 1, 3]")
    sh_n = params["shN"]
    if sh_n.ndim != 3 or sh_n.shape[0] != n or sh_n.shape[2] != 3 or (sh_n.shape[1] + 1) not in (1, 4, 9, 16, 25):
        raise EconsgError(f"{name}.shN: got shape {tuple(sh_n.shape)}, expected [{n}, K-1, 3] with K = (degree+1)^2")
    if "features" in params and (params["features"].ndim != 2 or params["features"].shape[0] != n):
        raise EconsgError(f"{name}.features: got shape {tuple(params['features'].shape)}, expected [{n}, d]")
    extra = set(params) - set(GAUSSIAN_NAMES) - {"features"}
    if extra:
        raise EconsgError(f"{name}: unexpected keys {sorted(extra)}; expected {', '.join(GAUSSIAN_NAMES)} (+ features)")
    return n


def sh_degree_of(params: Mapping[str, Tensor]) -> int:
    """The SH degree stored in params: K = shN.shape[1] + 1 = (degree + 1)^2."""
    return int(round((params["shN"].shape[1] + 1) ** 0.5)) - 1


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
