"""Tests of econsg.splat: Gaussian initialisation, the colour loss, and the training loop
(convergence, determinism, densification, checkpoints and resume, divergence, the extra_loss hook)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from econsg.config.splat import SplatParams
from econsg.errors import EconsgError
from econsg.render import sh0_to_rgb
from econsg.splat import TrainViews, color_loss, init_gaussians_from_points, render_gaussians, ssim, train_gaussians
from econsg.splat.losses import psnr
from econsg.splat.train import (
    CHECKPOINT_SCHEMA_VERSION,
    active_sh_degree,
    feature_lr_at,
    is_opacity_reset_step,
    means_lr_at,
    scene_scale_of,
)

WIDTH, HEIGHT, N_VIEWS = 32, 24, 4


def look_at(eye) -> torch.Tensor:
    """World-to-camera (OpenCV) of a camera at `eye` looking at the origin, world z up."""
    eye = torch.tensor(eye, dtype=torch.float64)
    z = -eye / eye.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return torch.linalg.inv(c2w).float()


def tiny_problem(seed: int = 0, n: int = 60, features: int = 0):
    """A random Gaussian scene rendered from 4 cameras as ground truth, and perturbed Gaussians to start from."""
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.6
    truth = init_gaussians_from_points(xyz, torch.rand(n, 3, generator=g), sh_degree=0, init_opacity=0.9, generator=g)
    angles = [2 * math.pi * v / N_VIEWS for v in range(N_VIEWS)]
    viewmats = torch.stack([look_at((3 * math.cos(a), 3 * math.sin(a), 1.0)) for a in angles])
    f = 0.9 * WIDTH
    Ks = torch.tensor([[f, 0, WIDTH / 2], [0, f, HEIGHT / 2], [0, 0, 1]]).expand(N_VIEWS, 3, 3).clone()
    with torch.no_grad():
        images = render_gaussians(truth, viewmats, Ks, WIDTH, HEIGHT, 0, "torch", False).colors.clamp(0, 1)
    views = TrainViews(images=images, viewmats=viewmats, Ks=Ks, width=WIDTH, height=HEIGHT)
    start_xyz = xyz + 0.05 * torch.randn(n, 3, generator=g)
    feats = torch.randn(n, features, generator=g) if features else None
    params = init_gaussians_from_points(start_xyz, torch.rand(n, 3, generator=g), sh_degree=1, features=feats,
                                        generator=g)  # fmt: skip
    return views, params


def config(**overrides) -> SplatParams:
    base = dict(iterations=12, sh_degree=1, sh_degree_interval=4, log_every=1, refine_stop_iter=0, checkpoint_every=0,
                backend="torch")  # fmt: skip
    return SplatParams(**{**base, **overrides})


def densifying(**overrides) -> SplatParams:
    """Refine every 3 steps from step 3 on with a threshold every visible Gaussian passes."""
    return config(**{"refine_start_iter": 2, "refine_every": 3, "refine_stop_iter": 11, "grow_grad2d": 1e-9, **overrides})


def mean_psnr(params, views) -> float:
    with torch.no_grad():
        out = render_gaussians(params, views.viewmats, views.Ks, WIDTH, HEIGHT, 1, "torch", False)
    return float(psnr(out.colors.clamp(0, 1), views.images))


def snapshot(params) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


# --------------------------------------------------------------------------- initialisation


def test_init_from_points_scales_colours_and_shapes():
    xyz = torch.tensor([[float(i), 0.0, 0.0] for i in range(6)])
    rgb = torch.rand(6, 3, generator=torch.Generator().manual_seed(1))
    p = init_gaussians_from_points(xyz, rgb, sh_degree=2, init_opacity=0.3, init_scale=2.0,
                                   features=torch.ones(6, 5), generator=torch.Generator().manual_seed(0))  # fmt: skip
    # points 1 m apart on a line: interior points' 3 nearest are at 1, 1, 2 m; the end points' at 1, 2, 3 m
    expected = torch.tensor([2.0, 4 / 3, 4 / 3, 4 / 3, 4 / 3, 2.0]) * 2.0
    torch.testing.assert_close(torch.exp(p["scales"]), expected[:, None].expand(6, 3))
    torch.testing.assert_close(sh0_to_rgb(p["sh0"][:, 0]), rgb)
    torch.testing.assert_close(torch.sigmoid(p["opacities"]), torch.full((6,), 0.3))
    assert p["shN"].shape == (6, 8, 3) and not p["shN"].any()
    assert p["features"].shape == (6, 5)
    assert all(isinstance(v, torch.nn.Parameter) for v in p.values())


@pytest.mark.parametrize("unit", [1e-3, 1.0, 1e3])
def test_initial_scales_follow_the_clouds_unit_and_coincident_points_stay_finite(unit):
    """The same cloud in millimetres, metres or kilometres starts from the same Gaussians up to the unit (3DGS's
    absolute floor of 0.3 mm set every scale of a cloud 1000x smaller than metres); a repeated point's log-scale
    stays finite."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(6.0) * 0.05] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    xyz = torch.cat([grid, grid[:1]]) * unit  # the first point twice: 0 to its nearest neighbour
    p = init_gaussians_from_points(xyz, torch.rand(len(xyz), 3, generator=torch.Generator().manual_seed(1)),
                                   sh_degree=0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    scales = torch.exp(p["scales"][:, 0]).double() / unit
    interior = (grid > 0).all(dim=1) & (grid < 0.25).all(dim=1)  # six neighbours 0.05 apart
    torch.testing.assert_close(scales[:-1][interior], torch.full((int(interior.sum()),), 0.05, dtype=torch.float64))
    assert torch.isfinite(p["scales"]).all() and scales.min() > 0
    alone = init_gaussians_from_points(torch.zeros(3, 3), torch.rand(3, 3), sh_degree=0, generator=torch.Generator())
    assert torch.isfinite(alone["scales"]).all()


def test_init_from_empty_point_cloud_is_refused():
    with pytest.raises(EconsgError, match=r"xyz: got an empty point cloud \(0 points\)"):
        init_gaussians_from_points(torch.zeros(0, 3), torch.zeros(0, 3), sh_degree=1, generator=torch.Generator())


def test_init_rejects_mismatched_features():
    with pytest.raises(EconsgError, match=r"features: got a tensor of shape \(3, 6\), expected a \[4, d\]"):
        init_gaussians_from_points(torch.rand(4, 3), torch.rand(4, 3), sh_degree=0, features=torch.rand(3, 6),
                                   generator=torch.Generator())  # fmt: skip


def test_init_values_past_float32_are_refused_naming_the_parameter():
    """An initial opacity float32 rounds to 1, or scales past float32's range, made the first step NaN, and training
    stopped as diverged with advice about learning rates; the initialisation names the value instead. A large but
    representable factor still initialises."""
    xyz, rgb = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)), torch.rand(6, 3)
    with pytest.raises(EconsgError, match=r"init_opacity: got 0.999999999, which float32 rounds to 1"):
        init_gaussians_from_points(xyz, rgb, sh_degree=0, init_opacity=0.999999999, generator=torch.Generator())
    with pytest.raises(EconsgError, match=r"init_opacity: got 1e-46, which float32 rounds to 0 .* at least 1.4e-45"):
        init_gaussians_from_points(xyz, rgb, sh_degree=0, init_opacity=1e-46, generator=torch.Generator())
    with pytest.raises(EconsgError, match=r"init_scale: got 1e\+300, .* past float32's range"):
        init_gaussians_from_points(xyz, rgb, sh_degree=0, init_scale=1e300, generator=torch.Generator())
    large = init_gaussians_from_points(xyz, rgb, sh_degree=0, init_scale=1e30, init_opacity=0.9999999,
                                       generator=torch.Generator())
    assert all(torch.isfinite(value).all() for value in large.values())


# --------------------------------------------------------------------------- losses


def test_ssim_matches_torchmetrics_and_is_differentiable():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 24, 32, 3, generator=g)
    b = (a + 0.2 * torch.randn(2, 24, 32, 3, generator=g)).clamp(0, 1)
    reference = structural_similarity_index_measure(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), data_range=1.0)
    # same formula, window and reflect padding; separable vs 2-D convolution: float32 rounding only
    torch.testing.assert_close(ssim(a, b), reference, rtol=0, atol=1e-5)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    x = a.clone().requires_grad_(True)
    ssim(x, b).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_color_loss_mixes_l1_and_ssim():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(1, 24, 32, 3, generator=g), torch.rand(1, 24, 32, 3, generator=g)
    l1 = (a - b).abs().mean()
    torch.testing.assert_close(color_loss(a, b, 0.0), l1)
    torch.testing.assert_close(color_loss(a, b, 0.2), 0.8 * l1 + 0.2 * (1 - ssim(a, b)))
    with pytest.raises(EconsgError, match="ssim_lambda: got 1.5"):
        color_loss(a, b, 1.5)


# --------------------------------------------------------------------------- schedules


def test_sh_degree_schedule_and_means_lr_decay():
    cfg = config(iterations=100, sh_degree=2, sh_degree_interval=10, means_lr=1e-3, means_lr_final_factor=0.01)
    assert [active_sh_degree(s, cfg) for s in (0, 9, 10, 25, 99)] == [0, 0, 1, 2, 2]
    assert means_lr_at(0, cfg, 2.0) == pytest.approx(2e-3)
    assert means_lr_at(100, cfg, 2.0) == pytest.approx(2e-5)
    assert means_lr_at(50, cfg, 2.0) == pytest.approx(2e-4)


def test_feature_lr_decay():
    cfg = config(iterations=100, feature_lr=1e-2, feature_lr_final_factor=0.1)
    assert [feature_lr_at(s, cfg) for s in (0, 50, 100)] == pytest.approx([1e-2, 1e-2 * 0.1**0.5, 1e-3])
    assert feature_lr_at(60, config(iterations=100, feature_lr=1e-2, feature_lr_final_factor=1.0)) == pytest.approx(1e-2)


def test_config_refuses_an_empty_refine_window():
    with pytest.raises(ValueError, match="refine_start_iter"):
        SplatParams(refine_start_iter=500, refine_stop_iter=100)
    # step 100 would be the only multiple of 50 after step 50, and the window stops before it
    with pytest.raises(ValueError, match="no step densifies"):
        SplatParams(refine_start_iter=50, refine_every=50, refine_stop_iter=100)
    SplatParams(refine_start_iter=50, refine_every=50, refine_stop_iter=101)  # step 100 densifies
    SplatParams(refine_start_iter=50, refine_every=50, refine_stop_iter=0)  # densification off


def test_a_refine_window_past_the_last_step_is_warned_about():
    """Steps run 0 .. iterations - 1: with 100 steps, a window whose first densifying step is 100 densifies nothing."""
    assert SplatParams(iterations=101, refine_start_iter=50, refine_every=50).densification_warning() is None
    warning = SplatParams(iterations=100, refine_start_iter=50, refine_every=50).densification_warning()
    assert warning is not None and "the first would be step 100" in warning and "splat.iterations (100)" in warning
    assert SplatParams(iterations=100, refine_start_iter=50, refine_every=50, refine_stop_iter=0).densification_warning() is None


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_raises_psnr():
    views, params = tiny_problem()
    before = mean_psnr(params, views)
    result = train_gaussians(views, params, config(iterations=24), generator=torch.Generator().manual_seed(0),
                             progress=False)  # fmt: skip
    after = mean_psnr(result.params, views)
    assert after > before + 2.0
    first, last = result.curve[:4], result.curve[-4:]
    assert np.mean([r["loss"] for r in last]) < 0.8 * np.mean([r["loss"] for r in first])
    assert np.mean([r["psnr"] for r in last]) > np.mean([r["psnr"] for r in first])
    assert [r["step"] for r in result.curve] == list(range(1, 25))
    assert {"step", "loss", "psnr", "num_gaussians", "seconds"} <= set(result.curve[0])
    assert result.train_seconds > 0 and result.curve[-1]["seconds"] == pytest.approx(result.train_seconds)


def test_same_generator_gives_identical_params_and_leaves_global_rng_alone():
    global_state = torch.get_rng_state()
    runs = []
    for seed in (5, 5, 6):
        views, params = tiny_problem()
        runs.append(train_gaussians(views, params, densifying(iterations=7), generator=torch.Generator().manual_seed(seed),
                                    progress=False).params)  # fmt: skip
    assert torch.equal(torch.get_rng_state(), global_state)
    for name in runs[0].keys():
        assert torch.equal(runs[0][name], runs[1][name]), name
    assert not all(
        runs[0][k].shape == runs[2][k].shape and torch.equal(runs[0][k], runs[2][k]) for k in runs[0].keys()
    )


def test_densification_grows_gaussians_with_large_gradients_only():
    views, params = tiny_problem()
    n0 = len(params["means"])
    grown = train_gaussians(views, params, densifying(iterations=6),
                            generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    counts = [r["num_gaussians"] for r in grown.curve]
    assert counts[0] == n0 and counts[-1] > n0  # the refine step at 3 duplicated / split the visible ones
    assert all(v.shape[0] == counts[-1] for v in grown.params.values())
    views, params = tiny_problem()
    still = train_gaussians(views, params, densifying(iterations=6, grow_grad2d=1e3), progress=False,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert still.curve[-1]["num_gaussians"] == n0  # a threshold nothing reaches leaves the set alone (no pruning at 0.9)


def test_opacity_reset_happens_on_its_steps():
    cfg = densifying(iterations=4, reset_every=3, grow_grad2d=1e3, refine_stop_iter=10)
    assert [is_opacity_reset_step(s, cfg) for s in (0, 3, 6, 12)] == [False, True, True, False]
    views, params = tiny_problem()
    result = train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(0), progress=False)
    assert float(torch.sigmoid(result.params["opacities"].detach()).max()) <= 2 * cfg.prune_opa + 1e-6


def test_extra_loss_is_called_per_step_and_added():
    calls = []

    def extra(out, view_index, params):
        calls.append((view_index, tuple(out.features.shape)))
        term = params["features"].sum() * 0 + out.features.abs().mean() + 5.0
        return term, {"sem": float(term.detach())}

    views, params = tiny_problem(features=6)
    f0 = params["features"].detach().clone()
    cfg = config(iterations=5)
    with_extra = train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(0), extra_loss=extra,
                                 progress=False)  # fmt: skip
    assert len(calls) == 5 and all(shape == (1, HEIGHT, WIDTH, 6) for _, shape in calls)
    assert sorted(v for v, _ in calls[:4]) == [0, 1, 2, 3]  # one epoch visits every view once
    assert not torch.equal(with_extra.params["features"], f0)  # only the extra term has a gradient for features
    views, params = tiny_problem(features=6)
    plain = train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(0), progress=False)
    first, plain_first = with_extra.curve[0], plain.curve[0]
    assert first["loss"] == pytest.approx(plain_first["loss"] + first["sem"], rel=1e-5)
    assert first["sem"] > 5.0 and "sem" not in plain_first


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path: Path):
    cfg = densifying(iterations=9, checkpoint_every=5)
    views, params = tiny_problem()
    whole = train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(2), progress=False,
                            checkpoint_dir=tmp_path / "whole")  # fmt: skip

    class Interrupt(Exception):
        pass

    steps = iter(range(100))

    def crash_at_step_7(out, view_index, params):
        if next(steps) == 7:
            raise Interrupt
        return out.colors.sum() * 0, {}

    views, params = tiny_problem()
    with pytest.raises(Interrupt):
        train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(2), progress=False,
                        checkpoint_dir=tmp_path / "cut", extra_loss=crash_at_step_7)  # fmt: skip
    assert [p.name[-11:] for p in sorted((tmp_path / "cut").iterdir())] == ["00000005.pt"]
    views, params = tiny_problem()
    resumed = train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(2), progress=False,
                              checkpoint_dir=tmp_path / "cut")  # fmt: skip
    assert resumed.resumed_step == 5
    for name in whole.params.keys():
        assert torch.equal(whole.params[name], resumed.params[name]), name
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.curve]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.curve]


def test_other_config_does_not_resume(tmp_path: Path):
    views, params = tiny_problem()
    train_gaussians(views, params, config(iterations=5, checkpoint_every=5), generator=torch.Generator().manual_seed(0),
                    progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    views, params = tiny_problem()
    again = train_gaussians(views, params, config(iterations=5, checkpoint_every=5, sh0_lr=1e-3), progress=False,
                            generator=torch.Generator().manual_seed(0), checkpoint_dir=tmp_path)  # fmt: skip
    assert again.resumed_step == 0 and len(list(tmp_path.glob("*.pt"))) == 2


def test_another_seed_does_not_resume(tmp_path: Path):
    """The same initial Gaussians trained from another generator seed retrain: resuming would hand back the other
    seed's result and state."""
    def run(seed: int):
        views, params = tiny_problem()
        return train_gaussians(views, params, config(iterations=5, checkpoint_every=5), progress=False,
                               generator=torch.Generator().manual_seed(seed), checkpoint_dir=tmp_path)

    first = run(2)
    again = run(3)
    assert again.resumed_step == 0 and not torch.equal(again.params["quats"], first.params["quats"])
    assert run(2).resumed_step == 5


def test_another_run_key_does_not_resume_and_settings_training_ignores_do(tmp_path: Path):
    """The run key (the stage's code version, device, text latents) is part of the fingerprint: a rerun after a code
    change retrains instead of handing back the old Gaussians. The relevancy temperature and the checkpoint
    interval do not change what training computes, so changing them resumes."""
    def run(run_key: str = "code-a", **overrides):
        views, params = tiny_problem()
        cfg = config(**{"iterations": 5, "checkpoint_every": 5, **overrides})
        return train_gaussians(views, params, cfg, progress=False, generator=torch.Generator().manual_seed(0),
                               checkpoint_dir=tmp_path, run_key=run_key)

    assert run().resumed_step == 0
    assert run(run_key="code-b").resumed_step == 0
    assert run(temperature=0.5, checkpoint_every=4).resumed_step == 5
    assert len(list(tmp_path.glob("*.pt"))) == 2
    for key in ("code-c", "code-d"):  # a finished run keeps the two most recent other runs' checkpoints
        run(run_key=key)
    assert len(list(tmp_path.glob("*.pt"))) == 3 and run().resumed_step == 0, "code-a's, the oldest, was removed"


def test_code_digest_follows_the_stages_code_deps(tmp_path: Path):
    from econsg.pipeline import STAGES, code_digest

    for entry in STAGES["splat"].code:
        (tmp_path / entry).parent.mkdir(parents=True, exist_ok=True)
        if entry.endswith(".py"):
            (tmp_path / entry).write_text("x = 1\n")
        else:
            (tmp_path / entry).mkdir(exist_ok=True)
            (tmp_path / entry / "a.py").write_text("y = 1\n")
    seen = {code_digest("splat", tmp_path)}
    for entry in STAGES["splat"].code:  # an edit of any code dep, a single file or a folder's file, changes it
        edited = tmp_path / entry if entry.endswith(".py") else tmp_path / entry / "a.py"
        edited.write_text(edited.read_text() + "z = 0\n")
        seen.add(code_digest("splat", tmp_path))
        assert len(seen) == 1 + STAGES["splat"].code.index(entry) + 1, f"an edit of {entry} left the digest as it was"


def test_scene_scale_follows_the_scenes_unit_also_where_the_cameras_coincide():
    views, params = tiny_problem()
    spread = scene_scale_of(views.viewmats, params["means"])
    millimetres = views.viewmats.clone()
    millimetres[:, :3, 3] *= 1000
    assert scene_scale_of(millimetres, params["means"] * 1000) == pytest.approx(1000 * spread)
    one_view = scene_scale_of(views.viewmats[:1], params["means"])  # the means' median distance from the camera
    assert scene_scale_of(millimetres[:1], params["means"] * 1000) == pytest.approx(1000 * one_view)
    assert scene_scale_of(views.viewmats[:1], params["means"][:0]) == 1.0


def test_points_no_camera_sees_stop_training_after_the_first_epoch():
    views, params = tiny_problem()
    with torch.no_grad():
        params["means"] += 1000.0  # a point cloud in another frame than the poses
    with pytest.raises(EconsgError, match=r"no Gaussian was in view of any of the 4 training cameras"):
        train_gaussians(views, params, config(), generator=torch.Generator().manual_seed(0), progress=False)


def test_the_near_plane_culls_what_lies_nearer_and_later_renders_take_the_stored_one(tmp_path: Path):
    import zarr

    from econsg.errors import ArtifactError
    from econsg.splat.quality import stored_renderer

    views, params = tiny_problem()  # cameras 3.2 from the origin, points within 1.1 of it
    run = dict(generator=torch.Generator().manual_seed(0), progress=False)
    with pytest.raises(EconsgError, match=r"cfg.near_plane: got 'auto'.*resolve it against the scene"):
        train_gaussians(views, params, config(near_plane="auto"), **run)
    with pytest.raises(EconsgError, match=r"no Gaussian was in view.*splat.near_plane 5 scene units"):
        train_gaussians(views, params, config(near_plane=5.0), **run)

    trained = zarr.open_group(tmp_path / "splat.zarr", mode="w")
    trained.attrs.update({"sh_degree": 1, "near_plane": 3.2})
    camera = (views.viewmats[:1], views.Ks[:1], WIDTH, HEIGHT)
    with torch.no_grad():
        drawn = stored_renderer(trained, "torch")(params, *camera).alpha
        whole = render_gaussians(params, *camera, 1, "torch").alpha
        cut = render_gaussians(params, *camera, 1, "torch", near_plane=3.2).alpha
    assert 0 < drawn.sum() < whole.sum() and torch.equal(drawn, cut)
    older = zarr.open_group(tmp_path / "old.zarr", mode="w")
    older.attrs.update({"sh_degree": 1})
    with pytest.raises(ArtifactError, match=r"old.zarr: no near_plane attribute.*rerun splat"):
        stored_renderer(older)


def test_pruning_every_gaussian_stops_training_naming_the_settings():
    views, params = tiny_problem()
    cfg = config(refine_start_iter=1, refine_every=2, refine_stop_iter=10, prune_opa=0.99)
    with pytest.raises(EconsgError, match=r"every Gaussian was pruned at step \d+ .*splat.prune_opa 0.99"):
        train_gaussians(views, params, cfg, generator=torch.Generator().manual_seed(0), progress=False)


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path: Path):
    steps = iter(range(100))

    def nan_at_step_7(out, view_index, params):
        value = float("nan") if next(steps) == 7 else 0.0
        return out.colors.sum() * 0 + value, {}

    views, params = tiny_problem()
    with pytest.raises(EconsgError, match=r"diverged at step 7: the loss is nan; the last good checkpoint .*00000005\.pt"):
        train_gaussians(views, params, config(checkpoint_every=5), generator=torch.Generator().manual_seed(0),
                        extra_loss=nan_at_step_7, progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    (kept,) = tmp_path.glob("*.pt")
    payload = torch.load(kept, weights_only=True)
    assert payload["step"] == 5 and all(torch.isfinite(v).all() for v in payload["params"].values())


def test_nan_parameters_are_detected():
    views, params = tiny_problem()
    with torch.no_grad():
        params["scales"][0, 0] = float("inf")  # exp(inf) renders as NaN: loss or the next update is non-finite
    with pytest.raises(EconsgError, match=r"diverged at step 0: .*no checkpoint had been written yet"):
        train_gaussians(views, params, config(), generator=torch.Generator().manual_seed(0), progress=False)


def test_checkpoint_of_another_schema_version_is_refused(tmp_path: Path):
    views, params = tiny_problem()
    train_gaussians(views, params, config(iterations=5, checkpoint_every=5), generator=torch.Generator().manual_seed(0),
                    progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    (path,) = tmp_path.glob("*.pt")
    payload = torch.load(path, weights_only=True)
    payload["schema_version"] = 999
    torch.save(payload, path)
    views, params = tiny_problem()
    with pytest.raises(EconsgError, match=rf"{path.name}: checkpoint schema version 999, expected {CHECKPOINT_SCHEMA_VERSION}"):
        train_gaussians(views, params, config(iterations=5, checkpoint_every=5), progress=False,
                        generator=torch.Generator().manual_seed(0), checkpoint_dir=tmp_path)  # fmt: skip


def test_a_checkpoint_save_killed_midway_is_removed_by_the_next_run_but_a_live_ones_is_not(tmp_path: Path):
    """SIGKILL during torch.save leaves the temporary (as large as a checkpoint) that nothing else would remove."""
    import os
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".splat-{'ab' * 8}-00000040.pt.tmp-{int(gone.stdout)}"
    alive = tmp_path / f".splat-{'cd' * 8}-00000020.pt.tmp-{os.getppid()}"  # another run, still saving
    for path in (killed, alive):
        path.write_bytes(b"half a checkpoint")
    views, params = tiny_problem()
    train_gaussians(views, params, config(iterations=5, checkpoint_every=5), generator=torch.Generator().manual_seed(0),
                    progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    assert not killed.exists() and alive.exists()
    assert len(list(tmp_path.glob("splat-*.pt"))) == 1 and not list(tmp_path.glob(f"*.tmp-{os.getpid()}"))


def test_bad_views_and_sh_degree_are_refused():
    views, params = tiny_problem()
    bad = TrainViews(images=views.images[:, :, :-1], viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT)
    with pytest.raises(EconsgError, match=r"views.images: got 24x31 \(HxW\) images, expected 24x32"):
        train_gaussians(bad, params, config(), generator=torch.Generator(), progress=False)
    bad = TrainViews(images=views.images, viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT,
                     extras={"latent_maps": torch.zeros(3, 2)})  # fmt: skip
    with pytest.raises(EconsgError, match=r"views.extras\['latent_maps'\]: got shape \(3, 2\), expected .*\[4, \.\.\.\]"):
        train_gaussians(bad, params, config(), generator=torch.Generator(), progress=False)
    bad = TrainViews(images=views.images.to("meta"), viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT)
    with pytest.raises(EconsgError, match=r"views.images: on meta, expected the Gaussians' device cpu or the CPU"):
        train_gaussians(bad, params, config(), generator=torch.Generator(), progress=False)
    with pytest.raises(EconsgError, match="cfg.sh_degree: got 3, but params store SH coefficients only up to degree 1"):
        train_gaussians(views, params, config(sh_degree=3), generator=torch.Generator(), progress=False)
    bad = TrainViews(images=views.images * 255, viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT)
    with pytest.raises(EconsgError, match=r"views.images: float32 values in \[0, 2\d\d(\.\d+)?\], expected \[0, 1\]"):
        train_gaussians(bad, params, config(), generator=torch.Generator(), progress=False)


def test_images_kept_as_stored_uint8_train_as_their_float_values_do():
    """The views may keep their images as stored (uint8, a quarter of the memory): each step's target is the same
    float32 image, so training gives the same Gaussians to the bit."""
    views, params = tiny_problem()
    stored = (views.images * 255).round().to(torch.uint8)
    as_float = TrainViews(images=stored.float() / 255.0, viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT)
    as_stored = TrainViews(images=stored, viewmats=views.viewmats, Ks=views.Ks, width=WIDTH, height=HEIGHT)
    trained = [snapshot(train_gaussians(v, tiny_problem()[1], densifying(), generator=torch.Generator().manual_seed(0),
                                        progress=False).params) for v in (as_float, as_stored)]  # fmt: skip
    assert trained[0].keys() == trained[1].keys()
    for name in trained[0]:
        assert torch.equal(trained[0][name], trained[1][name]), name
    with pytest.raises(EconsgError, match=r"views.images: dtype torch.float64, expected torch.uint8 or torch.float32"):
        train_gaussians(TrainViews(images=views.images.double(), viewmats=views.viewmats, Ks=views.Ks, width=WIDTH,
                                   height=HEIGHT), params, config(), generator=torch.Generator(), progress=False)
