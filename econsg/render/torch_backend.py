"""Pure-PyTorch, differentiable Gaussian rasterizer following gsplat 1.5.3's conventions ("classic").

Pipeline, all vectorised (no Python loop over Gaussians, pixels or tiles):

1. `project_gaussians`: EWA projection with the pinhole Jacobian (gsplat's clamped version),
   eps2d = 0.3 added to the 2D covariance, opacity-aware axis-aligned radii (gsplat 1.5.3:
   extend = min(3.33, sqrt(2 ln(255 * opacity))) sigma per axis), near/far and off-image culling.
2. `rasterize_pixels`: each projected Gaussian is binned, row by row of its radius box, into the
   pixel interval where its alpha can reach 1/255 (the roots of the row's quadratic): a finer bin
   than gsplat's 16x16 tiles that gives the same result, since outside it alpha < 1/255 is
   skipped anyway, and that evaluates ~5x fewer (pixel, Gaussian) pairs. The pairs are sorted by
   (camera, pixel, depth); the transmittance stop (a Gaussian that would take T to <= 1e-4 ends the
   pixel) comes from a segmented float64 cumulative sum of log(1 - alpha); the weights
   w = alpha * T are composited with a sparse CSR matrix product (`CompositePairs`, hand-written
   backward as gsplat's; it sums each Gaussian's pairs per image row, where the pixels share dy). Image
   rows are processed in bands whose candidate-pair count stays under `max_pairs_per_chunk`, bounding
   memory, and whose pixels fit an int16 sort key; a band loop is the only Python loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from econsg.render.sh import eval_sh

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4
EPS2D = 0.3
EXTEND_MAX = 3.33
SORT_KEY_PIXELS = 2**15 - 1  # the pixels of a band whose pixel indices fit an int16 sort key


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance R diag(s^2) R^T [N,3,3] from quats [N,4] (w,x,y,z; normalised here), scales [N,3] (m)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)
    m = rot * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def camera_centres(viewmats: Tensor) -> Tensor:
    """Camera centres in world coordinates [C,3] from world-to-camera matrices [C,4,4]."""
    rot, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(rot.transpose(-1, -2) @ t[..., None])[..., 0]


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = EPS2D,
) -> dict[str, Tensor]:
    """EWA-project Gaussians into C pinhole cameras, as gsplat's fully_fused_projection (non-packed).

    means [N,3], quats [N,4], scales [N,3] (m), opacities [N] in (0,1), viewmats [C,4,4] (OpenCV
    world-to-camera), Ks [C,3,3] (pixels). Returns a dict of
    means2d [C,N,2] (pixels, centre of pixel (i,j) at (j+0.5, i+0.5)), conics [C,N,3] (a, b, c of
    the inverse 2D covariance [[a,b],[b,c]], 1/px^2), depths [C,N] (camera z of the mean, m),
    radii [C,N,2] int32 (x/y half-extent in pixels; 0 where culled), visible [C,N] bool.
    Values where radii == 0 are meaningless (finite, but not used downstream).
    """
    rot, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + t[:, None, :]  # [C,N,3]
    x, y, z = means_c.unbind(-1)
    depth_ok = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))  # avoids 0/0 in gradients of culled ones

    cov_world = quat_scale_to_covariance(quats, scales.clamp_max(scale_limit(Ks, near_plane)))  # [N,3,3]
    cov_cam = rot[:, None] @ cov_world[None] @ rot[:, None].transpose(-1, -2)  # [C,N,3,3]

    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C,1]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(*z.shape, 2, 3)  # [C,N,2,3]
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)  # [C,N,2,2]
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        opac_ok = opac >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND_MAX)
        radius_x = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        radius_y = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        inside = (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        visible = depth_ok & det_ok & opac_ok & inside & ((radius_x > 0) | (radius_y > 0))
        # saturated as gsplat's CUDA cast does (a float past int32 would wrap negative on the CPU and drop a visible
        # runaway Gaussian; in float64, where 2^31 - 1 is exact), and 0 where culled, whatever a culled radius came to
        radii = torch.where(visible[..., None], torch.stack([radius_x, radius_y], dim=-1).double().clamp_max(2**31 - 1),
                            0).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": z, "radii": radii, "visible": visible}


def scale_limit(Ks: Tensor, near_plane: float) -> Tensor:
    """The largest scale (in the scene's unit) whose 2D covariance J cov J^T, and its determinant, stay finite in
    float32 in these cameras.

    |J| <= ~2 f / near, so below 1e8 near / f a Gaussian spans at most ~2e8 px: entries under ~1e17, determinant
    under ~1e34 (float32's largest is 3e38). A runaway Gaussian past it is projected at the limit, covering the view
    at its opacity, and its gradients stay finite. Unclamped, its covariance overflowed, and 0 * inf in the backward
    gave it NaN gradients even where it was culled (gsplat gives a culled Gaussian none), which stopped training as
    diverged; clamped only so that the entries stayed finite (1e18 near / f), the determinant overflowed and the
    Gaussian was drawn nowhere. No real Gaussian comes near the limit (2 km at f = 500 px, near 0.01 m), so every
    other value is unchanged to the bit. gsplat_backend clamps at the same limit, so the two agree past it too.
    """
    return 1e8 * near_plane / Ks[:, :2, :2].abs().amax()


class CompositePairs(torch.autograd.Function):
    """Front-to-back compositing of the (pixel, Gaussian) pairs of one `BandPlan`, hand-written backward.

    forward(params [M,6] = (mean2d x, y, conic a, b, c, opacity) per ranked Gaussian, values [M,D],
    plan) -> [R,D] = W @ values, W the sparse pixel-by-Gaussian weight matrix w_i = alpha_i T_i
    (the plan holds alpha and T computed from `params`). The backward follows gsplat's: with
    s_i = <dL/dout(pixel), values_i>, dL/dalpha_i = T_i s_i - (sum_{j behind i} w_j s_j) / (1 - alpha_i),
    then through alpha = min(0.999, o exp(-sigma)) to the 2D mean, conic and opacity.
    `geometry_channels` (optional bool [D]) keeps the channels marked False out of that second path:
    their gradient reaches `values` only, as if the geometry were detached for them.
    """

    @staticmethod
    def forward(ctx, params, values, plan, geometry_channels=None):  # noqa: D102
        ctx.save_for_backward(params, values)
        ctx.plan = plan
        ctx.geometry_channels = geometry_channels
        return _csr(plan.crow, plan.rank, plan.weights, (plan.n_rows, values.shape[0])) @ values

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        params, values = ctx.saved_tensors
        plan = ctx.plan
        grad_out = grad_out.contiguous()
        n_rank = values.shape[0]
        grad_values = grad_params = None
        if ctx.needs_input_grad[1]:
            mat_t = _csr(plan.crow_t, plan.row_t, _gaussian_major(plan.weights, plan), (n_rank, plan.n_rows))
            grad_values = mat_t @ grad_out
        if ctx.needs_input_grad[0]:
            pattern = _csr(plan.crow, plan.rank, plan.weights, (plan.n_rows, n_rank))
            if ctx.geometry_channels is not None:  # channels whose gradient stops at the values
                grad_out = grad_out * ctx.geometry_channels.to(grad_out.dtype)
            s = torch.sparse.sampled_addmm(pattern, grad_out, values.t(), beta=0.0).values()  # dL/dw_i
            ws = torch.cumsum(plan.weights * s, 0, dtype=torch.float64)
            last = (plan.crow[1:] - 1).clamp_min(0)  # each pixel's last pair (an empty pixel's is never read)
            behind = ws.index_select(0, last).index_select(0, plan.row) - ws  # sum_{j>i} w_j s_j
            alpha = plan.alpha
            grad_alpha = plan.t_before * s - (behind / (1.0 - alpha.double())).to(s.dtype)
            g = torch.where(alpha < ALPHA_MAX, alpha * grad_alpha, torch.zeros_like(grad_alpha))  # clamped: no gradient
            grad_params = _geometry_grad(params, _gaussian_major(g, plan), plan)
        return grad_params, grad_values, None, None


def _gaussian_major(pair_values: Tensor, plan: "BandPlan") -> Tensor:
    """Per-pair values [P] from pixel-major to Gaussian-major order."""
    return pair_values.new_empty(len(pair_values)).index_copy_(0, plan.perm, pair_values)


def _geometry_grad(params: Tensor, g: Tensor, plan: "BandPlan") -> Tensor:
    """dL/d(mean2d x, y, conic a, b, c, opacity) [M,6] from g = alpha dL/dalpha of every pair, Gaussian-major.

    alpha = o exp(-sigma), sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 (dx, dy = mean2d - pixel centre), so
    dL/dsigma = -g and dL/do = g / o per pair. A (Gaussian, image row) shares dy, and its pairs' sums need only
    S0 = sum g, S1 = sum g dx and S2 = sum g dx^2: those three segment sums replace a [P,6] table per pair.
    """
    n_q = len(plan.q_rank)
    g_dx = g * plan.dx
    s0, s1, s2 = (g.new_zeros(n_q).index_add_(0, plan.pair_q, v) for v in (g, g_dx, g_dx * plan.dx))
    _, _, a, b, c, o = params.index_select(0, plan.q_rank).unbind(-1)
    dy = plan.q_dy
    per_row = torch.stack(
        [-(a * s1 + b * dy * s0), -(b * s1 + c * dy * s0), -0.5 * s2, -dy * s1, -0.5 * dy * dy * s0, s0 / o], dim=-1
    )
    return torch.zeros_like(params).index_add_(0, plan.q_rank, per_row)


@dataclass
class BandPlan:
    """The (pixel, Gaussian) pairs of one band, pixel-major then depth order, and their CSR indexing.

    P pairs over R = n_rows output pixels and M ranked Gaussians. Pixel-major: rank [P] (CSR column),
    row [P] (output pixel, sorted), crow [R+1]; alpha, weights = alpha * t_before, t_before [P] (dtype
    of params; alpha is 0 for pairs skipped by the 1/255 test or the transmittance stop); perm [P]
    (each pair's Gaussian-major position). Gaussian-major: the transposed CSR crow_t [M+1], row_t [P];
    each pair's (Gaussian, image row) pair_q [P] and x offset dx [P] (mean2d x - pixel centre); per
    (Gaussian, image row) q_rank [Q] and q_dy [Q] (mean2d y - pixel centre), in pixels.
    """

    n_rows: int
    rank: Tensor
    row: Tensor
    crow: Tensor
    alpha: Tensor
    weights: Tensor
    t_before: Tensor
    perm: Tensor
    crow_t: Tensor
    row_t: Tensor
    pair_q: Tensor
    dx: Tensor
    q_rank: Tensor
    q_dy: Tensor


def _csr(crow: Tensor, col: Tensor, vals: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor without invariant checks (the indices are built by this module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, vals, size, check_invariants=False)


def _crow_from_rows(rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointer [n_rows+1] for sorted row indices [P]."""
    counts = torch.bincount(rows, minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow


def _plan_row_bands(
    y0: Tensor, y1: Tensor, widths: Tensor, height: int, max_pairs: int, max_rows: int
) -> list[tuple[int, int]]:
    """Split image rows into consecutive bands of at most ~max_pairs candidate pairs and max_rows rows (>= 1 row
    each)."""
    diff = torch.zeros(height + 1, dtype=torch.int64, device=y0.device)
    diff.index_add_(0, y0, widths)
    diff.index_add_(0, y1 + 1, -widths)
    per_row = torch.cumsum(diff[:height], 0).cpu()
    if int(per_row.sum()) <= max_pairs and height <= max_rows:
        return [(0, height)]
    bands, start, acc = [], 0, 0
    for row, n in enumerate(per_row.tolist()):
        if row > start and (acc + n > max_pairs or row - start >= max_rows):
            bands.append((start, row))
            start, acc = row, 0
        acc += n
    bands.append((start, height))
    return bands


def rasterize_pixels(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    values: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    max_pairs_per_chunk: int = 4_000_000,
    geometry_channels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite D-channel values front to back, as gsplat's rasterize_to_pixels (classic).

    means2d [C,N,2], conics [C,N,3], opacities [N] or [C,N], values [C,N,D], depths [C,N] (sort key
    only), radii [C,N,2] int (0 = culled). Per pixel centre p: alpha = min(0.999, o exp(-0.5 d^T S^-1 d)),
    d = mean2d - p; alphas < 1/255 skipped; a Gaussian that would take T to <= 1e-4 stops the pixel.
    Returns (image [C,H,W,D] = sum_i w_i v_i with w_i = alpha_i T_i, alpha [C,H,W,1] = sum_i w_i),
    no background. `geometry_channels` (bool [D], default all True): the gradients of channels marked
    False reach `values` but not the means, conics or opacities.
    """
    n_cam, n_gauss, n_chan = values.shape
    device, dtype = values.device, values.dtype
    opacities = opacities.expand(n_cam, n_gauss)
    with torch.no_grad():
        visible = (radii > 0).all(dim=-1)
        order = torch.argsort(depths.detach().masked_fill(~visible, math.inf), dim=1, stable=True)
        flat = (order + torch.arange(n_cam, device=device)[:, None] * n_gauss).reshape(-1)
        flat = flat[visible.reshape(-1)[flat]]  # (camera, depth)-sorted visible Gaussians: "ranks"
        cam_of_rank = flat // n_gauss
        mx, my = means2d.detach().reshape(-1, 2)[flat].unbind(-1)
        rad = radii.reshape(-1, 2)[flat].to(dtype)
        x0 = torch.ceil(mx - rad[:, 0] - 0.5).clamp_min(0).long()
        x1 = torch.floor(mx + rad[:, 0] - 0.5).clamp_max(width - 1).long()
        y0 = torch.ceil(my - rad[:, 1] - 0.5).clamp_min(0).long()
        y1 = torch.floor(my + rad[:, 1] - 0.5).clamp_max(height - 1).long()
        ok = (x1 >= x0) & (y1 >= y0)
        flat, cam_of_rank, x0, x1, y0, y1 = (v[ok] for v in (flat, cam_of_rank, x0, x1, y0, y1))
        # bands of at most SORT_KEY_PIXELS pixels sort their pairs by an int16 pixel key (~60 % of an int32's sort time),
        # where one image row of every camera fits in one
        max_rows = SORT_KEY_PIXELS // (n_cam * width) or height
        bands = _plan_row_bands(y0, y1, x1 - x0 + 1, height, max_pairs_per_chunk, max_rows)

    # per-rank parameters (with grad): gathered once, then per pair inside the bands
    params = torch.cat(
        [means2d.reshape(-1, 2)[flat], conics.reshape(-1, 3)[flat], opacities.reshape(-1, 1)[flat]], dim=1
    )  # [M,6]
    rank_values = torch.cat([values.reshape(-1, n_chan)[flat], torch.ones_like(values[0, :1, :1]).expand(len(flat), 1)], 1)

    mask = None
    if geometry_channels is not None and not bool(geometry_channels.all()):
        mask = torch.cat([geometry_channels.to(device=device, dtype=torch.bool), geometry_channels.new_ones(1, dtype=torch.bool)])
    images = []
    for band_start, band_end in bands:
        images.append(
            _rasterize_band(
                params, rank_values, cam_of_rank, x0, x1, y0, y1, band_start, band_end, n_cam, width, mask
            )
        )
    out = torch.cat(images, dim=1) if len(images) > 1 else images[0]  # [C,H,W,D+1]
    return out[..., :n_chan], out[..., n_chan:]


def _rasterize_band(params, rank_values, cam_of_rank, x0, x1, y0, y1, band_start, band_end, n_cam, width, mask):
    """Composite rows [band_start, band_end) of every camera; returns [C, band_h, W, D+1]."""
    band_h = band_end - band_start
    n_chan = rank_values.shape[1]
    plan = plan_band_pairs(params.detach(), cam_of_rank, x0, x1, y0, y1, band_start, band_end, n_cam, width)
    if plan is None:
        return rank_values.new_zeros(n_cam, band_h, width, n_chan) + 0.0 * (rank_values.sum() + params.sum())
    out = CompositePairs.apply(params, rank_values, plan, mask)
    return out.reshape(n_cam, band_h, width, n_chan)


@torch.no_grad()
def plan_band_pairs(params, cam_of_rank, x0, x1, y0, y1, band_start, band_end, n_cam, width) -> BandPlan | None:
    """Bin ranked Gaussians into the pixels they reach with alpha >= 1/255 in rows [band_start, band_end).

    params [M,6] (mx, my, a, b, c, o), cam_of_rank [M], x0/x1/y0/y1 [M] inclusive pixel boxes (from
    the radii); ranks are sorted by (camera, depth). Each (Gaussian, row) gets the pixel interval
    where sigma <= ln(255 o) (the roots of the row's quadratic, padded by a hair; the exact
    1/255 test follows), pairs are sorted by (camera, pixel, depth), the transmittance stop is
    applied, and the BandPlan is returned, or None when no pair remains.
    """
    band_h = band_end - band_start
    n_rows = n_cam * band_h * width
    device, dtype = params.device, params.dtype
    yy0, yy1 = y0.clamp_min(band_start), y1.clamp_max(band_end - 1)
    n_box_rows = (yy1 - yy0 + 1).clamp_min(0)
    n_q = int(n_box_rows.sum())
    if n_q == 0:
        return None
    # one entry per (Gaussian, image row): the row's pixel interval, in float64 (small tables)
    q_rank = torch.repeat_interleave(torch.arange(len(n_box_rows), device=device), n_box_rows, output_size=n_q)
    q_y = yy0.index_select(0, q_rank) + (
        torch.arange(n_q, device=device) - (torch.cumsum(n_box_rows, 0) - n_box_rows).index_select(0, q_rank)
    )
    mx, my, a, b, c, o = params.double().index_select(0, q_rank).unbind(-1)
    dy = my - (q_y.double() + 0.5)
    log_reach = torch.log(o * 255.0) * (1 + 1e-6) + 1e-9  # sigma <= log(255 o) <=> alpha >= 1/255
    disc = 2.0 * a * log_reach - (a * c - b * b) * dy * dy
    half = torch.sqrt(disc.clamp_min(0.0))
    centre = mx + b * dy / a  # pixel-centre x where sigma is smallest in this row
    j_lo = torch.maximum(torch.ceil(centre - half / a - 0.5).long(), x0.index_select(0, q_rank))
    j_hi = torch.minimum(torch.floor(centre + half / a - 0.5).long(), x1.index_select(0, q_rank))
    n_in_row = torch.where(disc >= 0, (j_hi - j_lo + 1).clamp_min(0), torch.zeros_like(j_lo))
    n_pairs = int(n_in_row.sum())
    if n_pairs == 0:
        return None
    # per pair: alpha = exp(c2 dx^2 + c1 dx + c0), dx = mean x - pixel-centre x; int32 pair indices where they fit
    index = torch.int32 if max(n_rows, n_pairs) < 2**31 else torch.int64
    q_start = (torch.cumsum(n_in_row, 0) - n_in_row).to(index)
    pair_q = torch.repeat_interleave(torch.arange(n_q, device=device, dtype=index), n_in_row, output_size=n_pairs)
    step = torch.arange(n_pairs, device=device, dtype=index)
    in_row = step - q_start.index_select(0, pair_q)  # pixel offset from the row's first pixel
    dx = (mx - (j_lo.double() + 0.5)).to(dtype).index_select(0, pair_q) - in_row.to(dtype)
    c2 = (-0.5 * a).to(dtype).index_select(0, pair_q)
    c1 = (-b * dy).to(dtype).index_select(0, pair_q)
    c0 = (torch.log(o) - 0.5 * c * dy * dy).to(dtype).index_select(0, pair_q)
    alpha = torch.exp((c2 * dx + c1) * dx + c0).clamp_max_(ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_THRESHOLD, alpha, torch.zeros_like(alpha))  # exact skip
    row_base = (cam_of_rank.index_select(0, q_rank) * band_h + (q_y - band_start)) * width + j_lo - q_start
    row_gen = row_base.to(index).index_select(0, pair_q) + step  # output pixel of each pair, Gaussian-major order
    key = torch.int16 if n_rows <= SORT_KEY_PIXELS else index
    row, perm = torch.sort(row_gen.to(key), stable=True)  # (camera, pixel, depth) order
    row = row.to(index)
    crow = _crow_from_rows(row, n_rows)
    alpha = alpha.index_select(0, perm)
    # log T after each pair within its pixel: one float64 cumulative sum over the band, less its value before
    # the pixel's first pair
    log_1m = torch.log1p(-alpha.double())
    log_t = torch.cumsum(log_1m, 0)
    first = crow[:-1].clamp_max(n_pairs - 1)  # each pixel's first pair (an empty pixel's is never read)
    log_t_after = log_t - (log_t.index_select(0, first) - log_1m.index_select(0, first)).index_select(0, row)
    # transmittance stop: a Gaussian taking T to <= 1e-4 and all behind it get alpha 0 (no weight, no T change)
    alpha = torch.where(log_t_after > math.log(TRANSMITTANCE_MIN), alpha, torch.zeros_like(alpha))
    t_before = torch.exp(log_t_after - log_1m).to(dtype)
    pairs_per_rank = torch.zeros(len(cam_of_rank), dtype=torch.int64, device=device).index_add_(0, q_rank, n_in_row)
    crow_t = torch.zeros(len(cam_of_rank) + 1, dtype=index, device=device)
    crow_t[1:] = torch.cumsum(pairs_per_rank, 0)
    return BandPlan(
        n_rows=n_rows,
        rank=q_rank.index_select(0, pair_q).index_select(0, perm),
        row=row,
        crow=crow,
        alpha=alpha,
        weights=alpha * t_before,
        t_before=t_before,
        perm=perm,
        crow_t=crow_t,
        row_t=row_gen,
        pair_q=pair_q,
        dx=dx,
        q_rank=q_rank,
        q_dy=dy.to(dtype),
    )


def render_torch(
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
    max_pairs_per_chunk: int = 4_000_000,
    feature_geometry_grad: bool = True,
):
    """Render RGB (+ features, + expected depth) with the pure-torch rasterizer; see `econsg.render.render`.

    Inputs are assumed validated. Returns an `econsg.render.RenderOutput`.
    """
    from econsg.render import RenderOutput

    n_cam = viewmats.shape[0]
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane)
    rgb = gaussian_rgb(means, colors, viewmats, sh_degree)  # [C,N,3]
    channels = [rgb]
    if features is not None:
        channels.append(features[None].expand(n_cam, -1, -1))
    channels.append(proj["depths"][..., None])
    values = torch.cat(channels, dim=-1)
    geometry_channels = None
    if features is not None and not feature_geometry_grad:
        geometry_channels = torch.ones(values.shape[-1], dtype=torch.bool, device=values.device)
        geometry_channels[3 : 3 + features.shape[1]] = False
    image, alpha = rasterize_pixels(
        proj["means2d"], proj["conics"], opacities, values, proj["depths"], proj["radii"], width, height,
        max_pairs_per_chunk=max_pairs_per_chunk, geometry_channels=geometry_channels,
    )
    out_rgb = image[..., :3]
    if backgrounds is not None:
        out_rgb = out_rgb + (1.0 - alpha) * backgrounds[:, None, None, :]
    out_feat = image[..., 3:-1] if features is not None else None
    depth = image[..., -1:] / alpha.clamp_min(1e-10)
    means2d = proj["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    meta = {
        "means2d": means2d,
        "radii": proj["radii"],
        "depths": proj["depths"],
        "conics": proj["conics"],
        "visible": proj["visible"],
        "width": width,
        "height": height,
        "n_cameras": n_cam,
        "gaussian_ids": None,
        "camera_ids": None,
        "backend": "torch",
    }
    return RenderOutput(colors=out_rgb, features=out_feat, alpha=alpha, depth=depth, meta=meta)


def gaussian_rgb(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    """Per-camera Gaussian colours [C,N,3]: RGB [N,3] broadcast, or SH [N,K,3] evaluated along camera -> mean."""
    n_cam = viewmats.shape[0]
    if sh_degree is None:
        return colors[None].expand(n_cam, -1, -1)
    dirs = means[None] - camera_centres(viewmats)[:, None]  # [C,N,3]
    return eval_sh(sh_degree, colors[None], dirs)
