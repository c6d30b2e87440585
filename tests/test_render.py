"""Tests of econsg.render: SH, the pure-torch tiled rasterizer against a dense twin, and gsplat parity."""

from __future__ import annotations

import math

import pytest
import torch

from econsg.errors import EconsgError
from econsg.render import RenderOutput, render, torch_backend
from econsg.render.sh import SH_C0, eval_sh, rgb_to_sh0, sh0_to_rgb, sh_basis
from econsg.render.torch_backend import project_gaussians, render_torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# --------------------------------------------------------------------------- helpers


def camera(width: int, height: int, focal: float, dtype=torch.float64, n: int = 1):
    """Identity pose(s) looking down +z and a centred pinhole K."""
    viewmats = torch.eye(4, dtype=dtype).expand(n, 4, 4).clone()
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=dtype)
    return viewmats, K.expand(n, 3, 3).clone()


def random_scene(n: int, width: int, height: int, focal: float, gen: torch.Generator, dtype=torch.float64):
    """Gaussians in front of an identity camera, a few pixels wide, spread over the image."""
    z = torch.rand(n, generator=gen, dtype=dtype) * 2 + 2
    u = torch.rand(n, 2, generator=gen, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    xy = (u - torch.tensor([width / 2, height / 2], dtype=dtype)) / focal * z[:, None]
    means = torch.cat([xy, z[:, None]], 1)
    quats = torch.randn(n, 4, generator=gen, dtype=dtype)
    scales = (torch.rand(n, 3, generator=gen, dtype=dtype) * 1.5 + 0.5) * z[:, None] / focal
    opacities = torch.rand(n, generator=gen, dtype=dtype) * 0.8 + 0.15
    return means, quats, scales, opacities


def dense_reference(means2d, conics, opacities, values, depths, radii, width, height):
    """Plain twin of the rasterizer: every pixel against every Gaussian, front to back, one Gaussian
    at a time, exactly gsplat's per-pixel loop (skip alpha < 1/255, stop when T would be <= 1e-4).
    Returns image [C,H,W,D], alpha [C,H,W,1]. Tiny inputs only."""
    n_cam, n, d = values.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px = xs.reshape(-1).to(values.dtype) + 0.5
    py = ys.reshape(-1).to(values.dtype) + 0.5
    images, alphas = [], []
    for c in range(n_cam):
        t = torch.ones(px.shape, dtype=values.dtype)
        out = torch.zeros(px.shape[0], d, dtype=values.dtype)
        done = torch.zeros(px.shape, dtype=torch.bool)
        for g in torch.argsort(depths[c].detach()).tolist():
            if not bool((radii[c, g] > 0).all()):
                continue
            dx, dy = means2d[c, g, 0] - px, means2d[c, g, 1] - py
            a, b, cc = conics[c, g]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), 0.999)
            use = (~done) & (alpha >= 1 / 255) & (sigma >= 0)
            next_t = t * (1 - alpha)
            stop = use & (next_t <= 1e-4)
            done = done | stop
            use = use & ~stop
            w = torch.where(use, alpha * t, torch.zeros_like(t))
            out = out + w[:, None] * values[c, g]
            t = torch.where(use, next_t, t)
        images.append(out.reshape(height, width, d))
        alphas.append((1 - t).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)


def reference_render(means, quats, scales, opacities, rgb, features, viewmats, Ks, width, height):
    """Projection of the module under test + the dense twin compositor; same outputs as render()."""
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
    n_cam = viewmats.shape[0]
    values = torch.cat([rgb[None].expand(n_cam, -1, -1), features[None].expand(n_cam, -1, -1)], -1)
    image, alpha = dense_reference(proj["means2d"], proj["conics"], opacities, values, proj["depths"],
                                   proj["radii"], width, height)  # fmt: skip
    return image[..., :3], image[..., 3:], alpha


# --------------------------------------------------------------------------- spherical harmonics


def test_sh0_round_trip_and_constant_colour():
    rgb = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    sh0 = rgb_to_sh0(rgb)
    assert torch.allclose(sh0_to_rgb(sh0), rgb)
    dirs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = eval_sh(0, sh0.expand(5, 3)[:, None, :], dirs)
    assert torch.allclose(out, rgb.expand(5, 3))
    assert torch.allclose(sh_basis(0, dirs), torch.full((5, 1), SH_C0, dtype=torch.float64))


def test_sh_basis_is_orthonormal_on_the_sphere():
    # Monte-Carlo estimate of the Gram matrix of the real SH basis; it must be the identity (up to 4 pi).
    g = torch.Generator().manual_seed(1)
    dirs = torch.randn(100_000, 3, generator=g, dtype=torch.float64)
    y = sh_basis(4, dirs)
    gram = 4 * math.pi * (y.T @ y) / len(dirs)
    # tolerance: Monte-Carlo error ~ 1/sqrt(2e5) times the basis' spread
    assert torch.allclose(gram, torch.eye(25, dtype=torch.float64), atol=0.05)


def test_eval_sh_matches_gsplat_torch_reference():
    ref = pytest.importorskip("gsplat.cuda._torch_impl")
    g = torch.Generator().manual_seed(2)
    coeffs = torch.randn(7, 25, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(7, 3, generator=g, dtype=torch.float64)
    for degree in range(5):
        expected = torch.clamp_min(ref._spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)
        torch.testing.assert_close(eval_sh(degree, coeffs, dirs), expected, rtol=1e-10, atol=1e-10)


def rotated_cameras(dtype=torch.float64):
    """Two world-to-camera matrices turned about two axes, off-centre principal points and fx != fy."""
    views = []
    for yaw, pitch, t in ((0.3, -0.2, (0.2, -0.1, 4.0)), (-0.5, 0.4, (-0.4, 0.3, 3.5))):
        cy_, sy_, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        yaw_m = torch.tensor([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]], dtype=dtype)
        pitch_m = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=dtype)
        view = torch.eye(4, dtype=dtype)
        view[:3, :3], view[:3, 3] = pitch_m @ yaw_m, torch.tensor(t, dtype=dtype)
        views.append(view)
    Ks = torch.tensor([[[38.0, 0, 21.3], [0, 36.0, 13.1], [0, 0, 1]], [[42.0, 0, 17.0], [0, 39.0, 15.2], [0, 0, 1]]], dtype=dtype)
    return torch.stack(views), Ks


def test_projection_matches_gsplat_torch_reference():
    """Covariances of rotated anisotropic Gaussians and their EWA projection (Jacobian clamp outside the view,
    eps2d blur, near plane, off-screen culling) against gsplat's own pure-torch projection, on the CPU."""
    ref = pytest.importorskip("gsplat.cuda._torch_impl")
    g = torch.Generator().manual_seed(5)
    n, width, height = 60, 40, 28
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([2.5, 1.5, 1.0], dtype=torch.float64)
    means[:3] = torch.tensor([[0.2, -0.1, -4.0], [9.0, 0.0, 0.5], [0.0, -8.0, 0.5]], dtype=torch.float64)  # behind; far off-screen
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.7 - 2.0)
    opacities = torch.full((n,), 0.9, dtype=torch.float64)
    viewmats, Ks = rotated_cameras()

    covars, _ = ref._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(torch_backend.quat_scale_to_covariance(quats, scales), covars, rtol=1e-12, atol=1e-12)

    radii, means2d, depths, conics, _ = ref._fully_fused_projection(means, covars, viewmats, Ks, width, height, eps2d=0.3)
    ours = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
    theirs_visible = (radii > 0).any(-1)
    assert 0 < ours["visible"].sum() < ours["visible"].numel(), "the scene must hold both drawn and culled Gaussians"
    # gsplat's reference takes a 3.33-sigma box; the kernels (and econsg) shrink it with opacity: never larger
    assert torch.equal(ours["visible"], theirs_visible)
    assert (ours["radii"] <= radii).all() and (ours["radii"][ours["visible"]] >= radii[ours["visible"]] - 1).all()
    seen = ours["visible"]
    torch.testing.assert_close(ours["means2d"][seen], means2d[seen], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours["conics"][seen], conics[seen], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours["depths"], depths, rtol=1e-12, atol=1e-12)


def test_eval_sh_rejects_too_few_coefficients():
    with pytest.raises(EconsgError, match="K >= 9"):
        eval_sh(2, torch.zeros(3, 4, 3), torch.ones(3, 3))


# --------------------------------------------------------------------------- analytic cases


def test_single_isotropic_gaussian_matches_analytic_2d_gaussian():
    width, height, focal, z, s, o = 32, 24, 40.0, 2.0, 0.05, 0.8
    viewmats, Ks = camera(width, height, focal)
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64)
    out = render(means, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), torch.full((1, 3), s, dtype=torch.float64),
                 torch.tensor([o], dtype=torch.float64), torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64),
                 viewmats, Ks, width, height, backend="torch")  # fmt: skip
    sigma2 = (focal * s / z) ** 2 + 0.3  # projected variance (px^2) + eps2d
    assert torch.allclose(out.meta["means2d"][0, 0], torch.tensor([width / 2, height / 2], dtype=torch.float64))
    radius = math.ceil(min(3.33, math.sqrt(2 * math.log(255 * o))) * math.sqrt(sigma2))
    assert out.meta["radii"][0, 0].tolist() == [radius, radius]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    d2 = (xs + 0.5 - width / 2) ** 2 + (ys + 0.5 - height / 2) ** 2
    expected = o * torch.exp(-0.5 * d2.double() / sigma2)
    expected = torch.where(expected >= 1 / 255, expected, torch.zeros_like(expected))
    torch.testing.assert_close(out.alpha[0, ..., 0], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.colors[0, ..., 1], 0.5 * expected, rtol=1e-10, atol=1e-12)
    seen = expected > 0
    assert torch.allclose(out.depth[0, ..., 0][seen], torch.full_like(out.depth[0, ..., 0][seen], z))
    assert bool((out.depth[0, ..., 0][~seen] == 0).all())


@pytest.mark.parametrize("swap", [False, True])
def test_occlusion_order_follows_depth(swap):
    width, height = 16, 16
    viewmats, Ks = camera(width, height, 20.0)
    depths = [4.0, 2.0] if swap else [2.0, 4.0]  # red first
    means = torch.tensor([[0.0, 0.0, depths[0]], [0.0, 0.0, depths[1]]], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = render(means, torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64), torch.full((2, 3), 1.0, dtype=torch.float64),
                 torch.tensor([0.999, 0.999], dtype=torch.float64), colors, viewmats, Ks, width, height, backend="torch")  # fmt: skip
    centre = out.colors[0, 8, 8]
    front = 2 if swap else 0
    assert centre[front] > 0.99 and centre[2 - front] < 0.01
    assert out.depth[0, 8, 8, 0] == pytest.approx(2.0, abs=0.01)


def test_empty_view_gives_background_and_zero_alpha():
    width, height = 12, 10
    viewmats, Ks = camera(width, height, 10.0)
    g = torch.Generator().manual_seed(3)
    means, quats, scales, opacities = random_scene(5, width, height, 10.0, g)
    means = means * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # all behind the camera
    means.requires_grad_(True)
    features = torch.randn(5, 4, generator=g, dtype=torch.float64)
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    out = render(means, quats, scales, opacities, torch.rand(5, 3, generator=g, dtype=torch.float64), viewmats, Ks,
                 width, height, features=features, backgrounds=bg, backend="torch")  # fmt: skip
    assert bool((out.alpha == 0).all()) and bool((out.depth == 0).all()) and bool((out.features == 0).all())
    assert torch.allclose(out.colors, bg[:, None, None, :].expand_as(out.colors))
    assert not bool(out.meta["visible"].any()) and bool((out.meta["radii"] == 0).all())
    (out.colors.sum() + out.features.sum()).backward()
    assert torch.isfinite(means.grad).all()


@pytest.mark.parametrize("scale", [1e7, 1e12], ids=["radii-past-int32", "determinant-past-float32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_runaway_gaussian_is_drawn_over_the_view_at_its_opacity_and_sizes_may_be_numpy_integers(dtype, scale):
    """Unclamped, a 1e7 scale's radius passed int32 (and wrapped negative in a float32 cast, dropping it), and a
    1e12 one's 2D covariance determinant overflowed float32 (conic 0), so it was drawn nowhere."""
    import numpy as np

    width, height = 8, 6
    viewmats, Ks = camera(width, height, 500.0, dtype=dtype)
    f = dict(dtype=dtype)
    out = render(torch.tensor([[0.0, 0.0, 2.0]], **f), torch.tensor([[1.0, 0, 0, 0]], **f), torch.full((1, 3), scale, **f),
                 torch.tensor([0.5], **f), torch.tensor([[1.0, 0.0, 0.0]], **f), viewmats, Ks, np.int64(width),
                 np.int64(height), backend="torch")  # fmt: skip
    assert bool(out.meta["visible"].all()) and int(out.meta["radii"].min()) > width
    torch.testing.assert_close(out.alpha, torch.full_like(out.alpha, 0.5))


@pytest.mark.parametrize("runaway_z", [-3.0, 3.0], ids=["culled-behind-the-camera", "in-front"])
def test_a_runaway_gaussian_whose_covariance_overflows_float32_keeps_every_gradient_finite(runaway_z):
    """Scales ~5e18 overflow J cov J^T in float32; 0 * inf in the backward used to give NaN gradients."""
    width, height, focal = 16, 12, 20.0
    viewmats, Ks = camera(width, height, focal, dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    means, quats, scales, opacities = (t.float() for t in random_scene(6, width, height, focal, g))
    log_scales = scales.log()
    means[0, 2], log_scales[0] = runaway_z, 43.0  # ~5e18: J cov J^T ~1e39 overflows in front of the camera too
    for t in (means, quats, log_scales, opacities):
        t.requires_grad_(True)
    out = render(means, quats, log_scales.exp(), opacities, torch.rand(6, 3, generator=g), viewmats, Ks, width,
                 height, backend="torch")  # fmt: skip
    out.colors.sum().backward()
    for name, t in (("means", means), ("quats", quats), ("log_scales", log_scales), ("opacities", opacities)):
        assert torch.isfinite(t.grad).all(), name
    assert torch.isfinite(out.colors).all() and not bool(out.meta["visible"][0, 0] & (runaway_z < 0))


def test_features_render_like_colours():
    width, height, focal = 20, 18, 16.0
    viewmats, Ks = camera(width, height, focal, dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    means, quats, scales, opacities = (t.float() for t in random_scene(30, width, height, focal, g))
    rgb = torch.rand(30, 3, generator=g)
    out = render(means, quats, scales, opacities, rgb, viewmats, Ks, width, height, features=rgb.clone(), backend="torch")
    torch.testing.assert_close(out.features, out.colors, rtol=0, atol=0)


def test_sh_colours_use_view_direction():
    # a degree-1 coefficient on the z basis: colour = clamp(0.5 + C1 * z_dir * c, 0) at the camera axis
    width, height = 8, 8
    viewmats, Ks = camera(width, height, 8.0)
    coeffs = torch.zeros(1, 4, 3, dtype=torch.float64)
    coeffs[0, 2] = torch.tensor([0.2, -0.2, 0.0], dtype=torch.float64)
    one = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    out = render(torch.tensor([[0.0, 0, 3]], dtype=torch.float64), one, torch.full((1, 3), 2.0, dtype=torch.float64),
                 torch.tensor([0.999], dtype=torch.float64), coeffs, viewmats, Ks, width, height, sh_degree=1,
                 backend="torch")  # fmt: skip
    c1 = 0.4886025119029199
    expected = torch.tensor([0.5 + c1 * 0.2, 0.5 - c1 * 0.2, 0.5], dtype=torch.float64)
    torch.testing.assert_close(out.colors[0, 4, 4] / out.alpha[0, 4, 4], expected, rtol=1e-9, atol=1e-9)


def test_transmittance_stop_and_alpha_threshold():
    width, height, focal = 9, 9, 10.0
    viewmats, Ks = camera(width, height, focal)
    # Six Gaussians on the axis, alpha 0.95 at the centre pixel: T after 3 = 1.25e-4 > 1e-4, the 4th
    # would take it to 6.25e-6 <= 1e-4, so only the first three count there.
    n = 6
    z = torch.arange(1, n + 1, dtype=torch.float64) + 1.0
    means = torch.stack([torch.zeros(n), torch.zeros(n), z], 1).double()
    colors = torch.zeros(n, 3, dtype=torch.float64)
    colors[:3, 0] = 1.0
    colors[3:, 2] = 1.0
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = (z[:, None] / focal).expand(n, 3).clone()  # 1 px projected std for each
    out = render(means, quats, scales, torch.full((n,), 0.95, dtype=torch.float64), colors, viewmats, Ks, width,
                 height, backend="torch")  # fmt: skip
    assert out.alpha[0, 4, 4, 0].item() == pytest.approx(1 - 0.05**3, abs=1e-12)
    assert out.colors[0, 4, 4, 2].item() == 0.0  # the blue ones behind are never composited
    assert out.colors[0, 4, 4, 0].item() == pytest.approx(1 - 0.05**3, abs=1e-12)

    # 1/255 skip: one Gaussian whose alpha at 2 px from its centre is just below / just above 1/255
    sigma2 = 1.0 + 0.3
    for factor, contributes in ((0.9, False), (1.1, True)):
        o = factor / 255 / math.exp(-0.5 * 4 / sigma2)
        out = render(torch.tensor([[0.0, 0, 2]], dtype=torch.float64), quats[:1], torch.full((1, 3), 0.2, dtype=torch.float64),
                     torch.tensor([o], dtype=torch.float64), colors[:1], viewmats, Ks, width, height, backend="torch")  # fmt: skip
        value = out.alpha[0, 4, 6, 0].item()  # pixel centre (6.5, 4.5): 2 px right of the mean (4.5, 4.5)
        assert value == (pytest.approx(factor / 255, rel=1e-9) if contributes else 0.0)


# --------------------------------------------------------------------------- against the dense twin


def test_tile_boundaries_and_cameras_match_dense_reference():
    # Two cameras, an image whose size is not a multiple of 16, Gaussians straddling tile borders.
    width, height, focal = 37, 21, 30.0
    g = torch.Generator().manual_seed(5)
    n = 40
    means, quats, scales, opacities = random_scene(n, width, height, focal, g)
    means[:6, 0] = (torch.tensor([16.0, 32.0, 16.0, 32.0, 16.1, 15.9], dtype=torch.float64) - width / 2) / focal * means[:6, 2]
    means[:6, 1] = (torch.tensor([16.0, 16.0, 5.0, 10.0, 15.8, 16.2], dtype=torch.float64) - height / 2) / focal * means[:6, 2]
    viewmats, Ks = camera(width, height, focal, n=2)
    viewmats[1, :3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64)
    rot = torch.tensor([[math.cos(0.1), 0, math.sin(0.1)], [0, 1, 0], [-math.sin(0.1), 0, math.cos(0.1)]], dtype=torch.float64)
    viewmats[1, :3, :3] = rot
    rgb = torch.rand(n, 3, generator=g, dtype=torch.float64)
    features = torch.randn(n, 5, generator=g, dtype=torch.float64)
    params = [means, quats, scales, opacities, rgb, features]
    for p in params:
        p.requires_grad_(True)
    weights = [torch.randn(2, height, width, k, generator=g, dtype=torch.float64) for k in (3, 5, 1)]

    out = render(means, quats, scales, opacities, rgb, viewmats, Ks, width, height, features=features, backend="torch")
    ref_rgb, ref_feat, ref_alpha = reference_render(means, quats, scales, opacities, rgb, features, viewmats, Ks, width, height)
    assert float(ref_alpha.detach().max()) > 0.5  # the scene is not empty
    # float64 throughout; the compositor sums log(1 - alpha) instead of multiplying, hence 1e-10
    torch.testing.assert_close(out.colors, ref_rgb, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.features, ref_feat, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.alpha, ref_alpha, rtol=1e-10, atol=1e-10)

    def loss(rgb_img, feat_img, alpha_img):
        return (rgb_img * weights[0]).sum() + (feat_img * weights[1]).sum() + (alpha_img * weights[2]).sum()

    grads = torch.autograd.grad(loss(out.colors, out.features, out.alpha), params)
    ref_grads = torch.autograd.grad(loss(ref_rgb, ref_feat, ref_alpha), params)
    for name, got, expected in zip(("means", "quats", "scales", "opacities", "rgb", "features"), grads, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(
    "max_pairs, key_pixels",
    [(300, torch_backend.SORT_KEY_PIXELS), (4_000_000, 100), (4_000_000, 0)],
    ids=["bands-by-pairs", "two-row-bands-by-pixels", "int32-keys"],
)
def test_row_bands_and_sort_keys_give_the_same_image_and_gradients(monkeypatch, max_pairs, key_pixels):
    width, height, focal = 40, 33, 30.0
    g = torch.Generator().manual_seed(6)
    means, quats, scales, opacities = (t.float() for t in random_scene(200, width, height, focal, g))
    viewmats, Ks = camera(width, height, focal, dtype=torch.float32)
    rgb = torch.rand(200, 3, generator=g)
    weights = torch.randn(1, height, width, 3, generator=g)

    plan = torch_backend._plan_row_bands
    bands = []
    monkeypatch.setattr(torch_backend, "_plan_row_bands", lambda *a: bands.append(plan(*a)) or bands[-1])

    def render_and_grad(pairs):
        params = [t.clone().requires_grad_(True) for t in (means, opacities, rgb)]
        out = render_torch(params[0], quats, scales, params[1], params[2], viewmats, Ks, width, height,
                           max_pairs_per_chunk=pairs)  # fmt: skip
        return out, torch.autograd.grad((out.colors * weights).sum() + out.alpha.sum(), params)

    whole, whole_grads = render_and_grad(4_000_000)  # the defaults: one band, int16 pixel keys
    monkeypatch.setattr(torch_backend, "SORT_KEY_PIXELS", key_pixels)
    banded, banded_grads = render_and_grad(max_pairs)
    assert len(bands[0]) == 1, "the defaults render this view in one band"
    assert (len(bands[-1]) > 1) == (key_pixels != 0), "bands by pairs or by pixels cut the rows; int32 keys do not"
    torch.testing.assert_close(banded.colors, whole.colors, rtol=0, atol=1e-6)
    torch.testing.assert_close(banded.alpha, whole.alpha, rtol=0, atol=1e-6)
    for got, expected in zip(banded_grads, whole_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gradcheck_tiny_scene():
    width, height, focal = 8, 8, 8.0
    viewmats, Ks = camera(width, height, focal)
    means = torch.tensor([[0.1, -0.05, 2.0], [-0.3, 0.2, 2.5], [0.2, 0.3, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.7, -0.3, 0.1, 0.2], [1.0, 0.2, 0.3, -0.1]], dtype=torch.float64)
    scales = torch.tensor([[0.3, 0.2, 0.25], [0.35, 0.4, 0.3], [0.5, 0.3, 0.4]], dtype=torch.float64)
    opacities = torch.tensor([0.7, 0.5, 0.9], dtype=torch.float64)
    coeffs = torch.randn(3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 0.3
    features = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    bg = torch.tensor([[0.2, 0.1, 0.4]], dtype=torch.float64)

    def fn(means, quats, scales, opacities, coeffs, features):
        out = render(means, quats, scales, opacities, coeffs, viewmats, Ks, width, height, sh_degree=1,
                     features=features, backgrounds=bg, backend="torch")  # fmt: skip
        return out.colors, out.features, out.alpha, out.depth

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, coeffs, features))
    # fast_mode checks random projections of the Jacobian (one backward each), not all 448 rows
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_feature_geometry_grad_false_stops_feature_gradients_at_the_features():
    """A loss on the feature maps moves f only; RGB gradients to the geometry are those of a feature-free render."""
    width, height, focal = 24, 20, 20.0
    g = torch.Generator().manual_seed(21)
    scene = random_scene(30, width, height, focal, g)
    viewmats, Ks = camera(width, height, focal)
    rgb, features = torch.rand(30, 3, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)
    target_rgb = torch.rand(1, height, width, 3, generator=g, dtype=torch.float64)
    target_feat = torch.randn(1, height, width, 4, generator=g, dtype=torch.float64)

    def grads(with_features: bool, geometry_grad: bool):
        inputs = [t.clone().requires_grad_(True) for t in (*scene, features)]
        out = render(*inputs[:4], rgb, viewmats, Ks, width, height, features=inputs[4] if with_features else None,
                     backend="torch", feature_geometry_grad=geometry_grad)  # fmt: skip
        loss = (out.colors - target_rgb).square().sum()
        if with_features:
            loss = loss + (out.features - target_feat).abs().sum()
        loss.backward()
        return [t.grad for t in inputs]

    rgb_only = grads(False, True)
    coupled = grads(True, True)
    stopped = grads(True, False)
    for name, a, b in zip(("means", "quats", "scales", "opacities"), stopped[:4], rgb_only[:4]):
        torch.testing.assert_close(a, b, msg=f"{name}: feature loss leaked into the geometry")
    assert not torch.allclose(coupled[0], rgb_only[0])  # by default the feature loss does move the means
    torch.testing.assert_close(stopped[4], coupled[4])  # f gets the same gradient either way
    assert stopped[4].abs().sum() > 0


# --------------------------------------------------------------------------- meta and densification


def test_default_strategy_runs_on_cpu_with_torch_backend():
    gsplat_strategy = pytest.importorskip("gsplat.strategy")
    width, height, focal = 24, 20, 20.0
    g = torch.Generator().manual_seed(9)
    means, quats, scales, opacities = (t.float() for t in random_scene(50, width, height, focal, g))
    params = torch.nn.ParameterDict(
        {
            "means": means,
            "quats": quats,
            "scales": torch.log(scales),
            "opacities": torch.logit(opacities),
            "colors": torch.rand(50, 3, generator=g),
        }
    )
    optimizers = {k: torch.optim.Adam([{"params": p, "lr": 1e-3, "name": k}]) for k, p in params.items()}
    strategy = gsplat_strategy.DefaultStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=0.0, prune_opa=0.0,
                                               reset_every=10_000)  # fmt: skip
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats, Ks = camera(width, height, focal, dtype=torch.float32)
    target = torch.rand(1, height, width, 3, generator=g)
    for step in range(2):
        out = render(params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
                     params["colors"], viewmats, Ks, width, height, backend="torch")  # fmt: skip
        assert out.meta["means2d"].shape == (1, len(params["means"]), 2)
        assert out.meta["radii"].shape == (1, len(params["means"]), 2) and out.meta["radii"].dtype == torch.int32
        strategy.step_pre_backward(params, optimizers, state, step, out.meta)
        (out.colors - target).abs().mean().backward()
        assert out.meta["means2d"].grad is not None and out.meta["means2d"].grad.abs().sum() > 0
        strategy.step_post_backward(params, optimizers, state, step, out.meta, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    assert len(params["means"]) > 50  # step 1 refined: grow_grad2d=0 duplicates/splits every visible Gaussian


# --------------------------------------------------------------------------- argument checks


def test_bad_arguments_are_named():
    viewmats, Ks = camera(8, 8, 8.0, dtype=torch.float32)
    args = [torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.ones(2, 3), torch.ones(2) * 0.5, torch.ones(2, 3)]
    with pytest.raises(EconsgError, match="backend: got 'vulkan'.*'auto', 'torch', 'gsplat'"):
        render(*args, viewmats, Ks, 8, 8, backend="vulkan")
    if not torch.cuda.is_available():
        with pytest.raises(EconsgError, match="backend: got 'gsplat'.*CUDA"):
            render(*args, viewmats, Ks, 8, 8, backend="gsplat")
    doubles = [a.double() for a in args]  # gsplat's kernels read float32: a float64 render failed inside them
    with pytest.raises(EconsgError, match=r"means: dtype torch.float64, but gsplat \(backend 'gsplat'\) renders float32 only"):
        render(*doubles, viewmats.double(), Ks.double(), 8, 8, backend="gsplat")
    with pytest.raises(EconsgError, match=r"opacities: got shape \(2, 1\)"):
        render(*args[:3], torch.ones(2, 1), args[4], viewmats, Ks, 8, 8)
    with pytest.raises(EconsgError, match="colors: .*K >= 4"):
        render(*args[:4], torch.ones(2, 1, 3), viewmats, Ks, 8, 8, sh_degree=1)
    with pytest.raises(EconsgError, match=r"Ks: got shape \(2, 3, 3\)"):
        render(*args, viewmats, Ks.expand(2, 3, 3), 8, 8)
    with pytest.raises(EconsgError, match="width: got 0"):
        render(*args, viewmats, Ks, 0, 8)
    with pytest.raises(EconsgError, match=r"features: got shape \(3, 4\)"):
        render(*args, viewmats, Ks, 8, 8, features=torch.zeros(3, 4))


def test_render_output_fields():
    viewmats, Ks = camera(10, 6, 8.0, dtype=torch.float32, n=2)
    g = torch.Generator().manual_seed(10)
    means, quats, scales, opacities = (t.float() for t in random_scene(8, 10, 6, 8.0, g))
    out = render(means, quats, scales, opacities, torch.rand(8, 3, generator=g), viewmats, Ks, 10, 6,
                 features=torch.rand(8, 7, generator=g))  # fmt: skip
    assert isinstance(out, RenderOutput) and out.meta["backend"] == "torch"
    assert out.colors.shape == (2, 6, 10, 3) and out.features.shape == (2, 6, 10, 7)
    assert out.alpha.shape == (2, 6, 10, 1) and out.depth.shape == (2, 6, 10, 1)
    assert out.meta["n_cameras"] == 2 and out.meta["width"] == 10 and out.meta["height"] == 6
    assert out.meta["gaussian_ids"] is None and out.meta["visible"].shape == (2, 8)


# --------------------------------------------------------------------------- GPU parity


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("feature_geometry_grad", [True, False])
def test_torch_and_gsplat_backends_agree_on_gpu(feature_geometry_grad):
    width, height, focal, n = 64, 48, 50.0, 1000
    g = torch.Generator().manual_seed(11)
    means, quats, scales, opacities = (t.float().cuda() for t in random_scene(n, width, height, focal, g))
    coeffs = (torch.randn(n, 4, 3, generator=g) * 0.3).cuda()
    features = torch.randn(n, 8, generator=g).cuda()
    viewmats, Ks = (t.cuda() for t in camera(width, height, focal, dtype=torch.float32))
    bg = torch.tensor([[0.1, 0.2, 0.3]], device="cuda")
    weights = [torch.randn(1, height, width, k, generator=g).cuda() for k in (3, 8, 1, 1)]
    results = {}
    for backend in ("torch", "gsplat"):
        params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, coeffs, features)]
        out = render(*params[:5], viewmats, Ks, width, height, sh_degree=1, features=params[5], backgrounds=bg,
                     backend=backend, feature_geometry_grad=feature_geometry_grad)  # fmt: skip
        loss = sum((img * w).sum() for img, w in zip((out.colors, out.features, out.alpha, out.depth), weights))
        loss.backward()
        results[backend] = (out, [p.grad for p in params], out.meta["means2d"].grad)
    (ot, gt, m2t), (og, gg, m2g) = results["torch"], results["gsplat"]
    for name in ("colors", "features", "alpha"):
        torch.testing.assert_close(getattr(ot, name), getattr(og, name), rtol=0, atol=1e-3)
    seen = og.alpha > 0.5  # expected depth is ill-conditioned where alpha ~ 0
    torch.testing.assert_close(ot.depth[seen], og.depth[seen], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ot.meta["radii"], og.meta["radii"], rtol=0, atol=1)
    # float32 on both sides with different summation orders: compare gradients relative to their scale
    for name, a, b in zip(("means", "quats", "scales", "opacities", "coeffs", "features", "means2d"), gt + [m2t], gg + [m2g]):
        scale = b.abs().max().clamp_min(1e-6)
        assert ((a - b).abs().max() / scale) < 2e-2, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where gsplat has no kernels")
def test_gsplat_without_its_cuda_kernels_is_refused_in_one_line(tmp_path, monkeypatch):
    from econsg.render.gsplat_backend import require_gsplat_kernels

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # where a machine with nvcc tries to build them

    with pytest.raises(EconsgError, match="gsplat's CUDA kernels are not available .* splat.backend: torch"):
        require_gsplat_kernels()


def test_background_fills_only_the_transmittance_left():
    width, height, focal = 16, 12, 20.0
    viewmats = torch.eye(4, dtype=torch.float64)[None]
    Ks = torch.tensor([[[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]], dtype=torch.float64)
    args = (torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
            torch.full((1, 3), 0.1, dtype=torch.float64), torch.tensor([0.8], dtype=torch.float64),
            torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64), viewmats, Ks, width, height)
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    plain = render(*args, backend="torch")
    over = render(*args, backgrounds=bg, backend="torch")
    assert 0.5 < float(plain.alpha[0, 6, 8, 0]) < 1.0  # the centre is partly covered
    torch.testing.assert_close(over.colors, plain.colors + (1 - plain.alpha) * bg[:, None, None, :])
