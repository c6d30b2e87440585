"""gsplat (CUDA) backend: one `gsplat.rasterization` call for RGB, features and expected depth."""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from econsg.errors import EconsgError, first_line
from econsg.render.torch_backend import EPS2D, gaussian_rgb, scale_limit


@cache
def require_gsplat_kernels() -> None:
    """Load gsplat's CUDA kernels (a prebuilt wheel, or gsplat's own build on first use, which takes minutes and
    needs nvcc matching torch's CUDA), or refuse in one line: without them gsplat fails later with an
    AttributeError on None. Call it before timing GPU work, so that the build is not counted."""
    try:
        from gsplat.cuda._backend import _C
    except Exception as error:  # the build raises whatever the compiler or torch's extension loader raises
        kernels, why = None, f"building them failed: {type(error).__name__}: {first_line(error)}"
    else:
        kernels, why = _C, "no CUDA toolkit to build them"
    if kernels is None:
        raise EconsgError(f"splat.backend: gsplat's CUDA kernels are not available (no prebuilt gsplat wheel for torch "
                          f"{torch.__version__}, and {why}). Install a gsplat wheel built for this torch "
                          "(benchmarks/gpu_wheels.sh builds one), or set splat.backend: torch (econsg's own rasterizer, "
                          "plain torch: slower)")


def render_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    features: Tensor | None = None,
    backgrounds: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    feature_geometry_grad: bool = True,
):
    """Render with gsplat 1.5.3 (non-packed, classic, eps2d 0.3, "RGB+ED"); see `econsg.render.render`.

    With features, SH colours are evaluated in torch first and [rgb, features] rasterized as one
    N-D colour; with feature_geometry_grad=False the features take a second pass over detached
    geometry instead (same values; their gradients stop at `features`). Inputs are assumed validated
    and on CUDA. Returns an `econsg.render.RenderOutput`.
    """
    from gsplat import rasterization

    from econsg.render import RenderOutput

    require_gsplat_kernels()
    scales = scales.clamp_max(scale_limit(Ks, near_plane))  # as the torch backend does: they agree past it too
    n_cam = viewmats.shape[0]
    if features is not None and not feature_geometry_grad:
        out = render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                            None, backgrounds, near_plane, far_plane)  # fmt: skip
        detached = (means.detach(), quats.detach(), scales.detach(), opacities.detach())
        feature_maps, _, _ = rasterization(
            *detached, features[None].expand(n_cam, -1, -1), viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=EPS2D, sh_degree=None, packed=False,
            render_mode="RGB", rasterize_mode="classic",
        )  # fmt: skip
        out.features = feature_maps
        return out
    n_feat = 0 if features is None else features.shape[1]
    if features is None:
        values, gs_sh_degree = colors, sh_degree
    else:
        rgb = gaussian_rgb(means, colors, viewmats, sh_degree)  # [C,N,3]
        values = torch.cat([rgb, features[None].expand(n_cam, -1, -1)], dim=-1)
        gs_sh_degree = None
    bg = None
    if backgrounds is not None:
        bg = torch.cat([backgrounds, backgrounds.new_zeros(n_cam, n_feat)], dim=-1) if n_feat else backgrounds
    image, alpha, info = rasterization(
        means, quats, scales, opacities, values, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=EPS2D, sh_degree=gs_sh_degree, packed=False,
        backgrounds=bg, render_mode="RGB+ED", rasterize_mode="classic",
    )  # fmt: skip
    means2d = info["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = info["radii"]
    meta = {
        "means2d": means2d,
        "radii": radii,
        "depths": info["depths"],
        "conics": info["conics"],
        "visible": (radii > 0).all(dim=-1),
        "width": width,
        "height": height,
        "n_cameras": n_cam,
        "gaussian_ids": None,
        "camera_ids": None,
        "backend": "gsplat",
    }
    return RenderOutput(
        colors=image[..., :3],
        features=image[..., 3 : 3 + n_feat] if n_feat else None,
        alpha=alpha,
        depth=image[..., -1:],
        meta=meta,
    )
