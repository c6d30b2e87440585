"""Gaussian rendering: one entry point, `render`, over two backends.

- "gsplat": `gsplat.rasterization` (CUDA only), non-packed, classic mode, eps2d 0.3.
- "torch": the project's pure-PyTorch differentiable rasterizer (any device; tests, CPU, CI),
  following gsplat 1.5.3's conventions so both agree within float tolerance.
- "auto": gsplat for CUDA tensors, torch otherwise.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from econsg.errors import EconsgError
from econsg.render.sh import MAX_SH_DEGREE, eval_sh, num_sh_bases, rgb_to_sh0, sh0_to_rgb

BACKENDS = ("auto", "torch", "gsplat")
DEFAULT_NEAR_PLANE = 0.01  # gsplat's rasterization() default, in the scene's units (`splat.near_plane`)

__all__ = ["BACKENDS", "RenderOutput", "eval_sh", "render", "rgb_to_sh0", "sh0_to_rgb"]


@dataclass
class RenderOutput:
    """What one render call gives back, for C cameras of H x W pixels.

    colors [C,H,W,3] (background blended in), features [C,H,W,d] or None (background 0),
    alpha [C,H,W,1] accumulated opacity, depth [C,H,W,1] expected z-depth sum(w z) / max(alpha, 1e-10)
    in metres. meta holds what gsplat's DefaultStrategy reads: "means2d" [C,N,2] (its .grad is the
    2D-mean gradient after backward), "radii" [C,N,2] int32 (0 = not rendered), "width", "height",
    "n_cameras", "gaussian_ids" (None: non-packed); plus "visible" [C,N] bool, "depths" [C,N],
    "conics" [C,N,3], "backend". Where radii are 0, means2d, depths and conics are undefined (gsplat leaves
    them uninitialised; the torch backend keeps them finite).
    """

    colors: Tensor
    features: Tensor | None
    alpha: Tensor
    depth: Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    features: Tensor | None = None,
    backgrounds: Tensor | None = None,
    backend: str = "auto",
    near_plane: float = DEFAULT_NEAR_PLANE,
    far_plane: float = 1e10,
    feature_geometry_grad: bool = True,
) -> RenderOutput:
    """Rasterize N 3D Gaussians into C pinhole cameras (OpenCV convention).

    means [N,3] (m), quats [N,4] (w,x,y,z; normalised inside), scales [N,3] (activated, m),
    opacities [N] (activated, in (0,1)); colors: SH coefficients [N,K,3] with `sh_degree`
    ((sh_degree+1)^2 <= K) or plain RGB [N,3] with sh_degree=None; features: optional [N,d]
    channels composited like colours (no activation, background 0); viewmats [C,4,4]
    world-to-camera; Ks [C,3,3] pixels; backgrounds: optional [C,3] RGB. Gaussians with camera
    z < near_plane or > far_plane are culled. Differentiable w.r.t. every float input.
    With feature_geometry_grad=False, gradients of the feature maps reach `features` only, not the
    geometry (means, quats, scales, opacities): a loss on the features then trains f without moving,
    growing or fading the Gaussians (RGB and depth gradients are unchanged).
    """
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, features,
              backgrounds, backend, near_plane, far_plane)  # fmt: skip
    chosen = backend
    if backend == "auto":
        chosen = "gsplat" if means.is_cuda else "torch"
    if chosen == "gsplat":
        _check_gsplat_inputs(means, backend)
    args = (means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height))
    kwargs = dict(sh_degree=sh_degree, features=features, backgrounds=backgrounds, near_plane=near_plane,
                  far_plane=far_plane, feature_geometry_grad=feature_geometry_grad)  # fmt: skip
    if chosen == "gsplat":
        from econsg.render.gsplat_backend import render_gsplat

        return render_gsplat(*args, **kwargs)
    from econsg.render.torch_backend import render_torch

    return render_torch(*args, **kwargs)


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, features,
              backgrounds, backend, near_plane, far_plane) -> None:  # fmt: skip
    """Raise EconsgError naming the first bad argument, its value and what was expected."""
    if backend not in BACKENDS:
        raise EconsgError(f"backend: got {backend!r}, expected one of {', '.join(map(repr, BACKENDS))}")
    named = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
             "viewmats": viewmats, "Ks": Ks}  # fmt: skip
    if features is not None:
        named["features"] = features
    if backgrounds is not None:
        named["backgrounds"] = backgrounds
    for name, value in named.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            got = f"{type(value).__name__} {getattr(value, 'dtype', '')}".strip()
            raise EconsgError(f"{name}: got {got}, expected a floating-point torch.Tensor")
        if value.device != means.device:
            raise EconsgError(f"{name}: on device {value.device}, expected the device of means ({means.device})")
        if value.dtype != means.dtype:
            raise EconsgError(f"{name}: dtype {value.dtype}, expected the dtype of means ({means.dtype})")
    if means.ndim != 2 or means.shape[1] != 3:
        raise EconsgError(f"means: got shape {tuple(means.shape)}, expected [N, 3]")
    n = means.shape[0]
    expected = {"quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise EconsgError(f"{name}: got shape {tuple(named[name].shape)}, expected {list(shape)} (N = {n})")
    if sh_degree is None:
        if tuple(colors.shape) != (n, 3):
            raise EconsgError(
                f"colors: got shape {tuple(colors.shape)}, expected [N, 3] RGB with sh_degree=None "
                f"(or [N, K, 3] SH coefficients with sh_degree set)"
            )
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise EconsgError(f"sh_degree: got {sh_degree!r}, expected None or an integer in 0..{MAX_SH_DEGREE}")
        k = num_sh_bases(sh_degree)
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < k:
            raise EconsgError(
                f"colors: got shape {tuple(colors.shape)}, expected [N, K, 3] SH coefficients with N = {n} "
                f"and K >= {k} for sh_degree={sh_degree}"
            )
    if features is not None and (features.ndim != 2 or features.shape[0] != n or features.shape[1] < 1):
        raise EconsgError(f"features: got shape {tuple(features.shape)}, expected [N, d] with N = {n}, d >= 1")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise EconsgError(f"viewmats: got shape {tuple(viewmats.shape)}, expected [C, 4, 4]")
    c = viewmats.shape[0]
    if tuple(Ks.shape) != (c, 3, 3):
        raise EconsgError(f"Ks: got shape {tuple(Ks.shape)}, expected [C, 3, 3] with C = {c} (from viewmats)")
    if backgrounds is not None and tuple(backgrounds.shape) != (c, 3):
        raise EconsgError(f"backgrounds: got shape {tuple(backgrounds.shape)}, expected [C, 3] with C = {c}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise EconsgError(f"{name}: got {value!r}, expected a positive integer (pixels)")
    if not 0 < near_plane < far_plane:
        raise EconsgError(f"near_plane/far_plane: got {near_plane}/{far_plane}, expected 0 < near_plane < far_plane")


def _check_gsplat_inputs(means: Tensor, backend: str) -> None:
    """gsplat renders float32 CUDA tensors only: anything else failed inside its kernels with a bare torch error."""
    if means.dtype != torch.float32:  # its compositor reads float32 (half fails earlier, in its projection)
        raise EconsgError(f"means: dtype {means.dtype}, but gsplat (backend {backend!r}) renders float32 only; expected "
                          "float32 tensors, or backend 'torch' for another dtype")
    if not means.is_cuda:
        raise EconsgError(
            f"backend: got 'gsplat' with tensors on {means.device}, but gsplat needs CUDA tensors; "
            f"choose one of {', '.join(map(repr, BACKENDS))} ('torch' runs on any device)"
        )
