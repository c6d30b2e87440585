"""Tests of econsg.fusion: back-projection, the point depth test and streaming voxel fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from econsg.config.fuse import FuseParams
from econsg.errors import EconsgError
from econsg.fusion import (
    IGNORE,
    FusedPoints,
    VoxelFeatureFusion,
    backproject_depth,
    bilinear_feature_index,
    median_view_depth,
    points_seen_in_view,
    project_points,
    visible_points_depth_test,
    voxel_keys,
)
from econsg.scene.scale import resolve_scene_length


W, H = 32, 24
K = np.array([[30.0, 0.0, 15.5], [0.0, 30.0, 11.5], [0.0, 0.0, 1.0]])


def rotation_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def pose(rot: np.ndarray, t) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = rot
    c2w[:3, 3] = t
    return c2w


def test_plane_backprojects_onto_plane_and_principal_pixel_onto_axis():
    c2w = pose(rotation_y(90.0), [1.0, 2.0, 3.0])  # camera z axis = world +x
    depth = np.full((H, W), 2.0, dtype=np.float32)
    xyz, pix = backproject_depth(depth, K, c2w)
    assert xyz.shape == (H * W, 3) and np.array_equal(pix, np.arange(H * W))
    # every point lies on the plane x = 1 + 2 (2 m along the optical axis from the camera at x = 1)
    np.testing.assert_allclose(xyz[:, 0], 3.0, atol=1e-12)
    # pixel (row 11, col 15) has its centre (15.5, 11.5) on the principal point: on the optical axis
    np.testing.assert_allclose(xyz[11 * W + 15], [3.0, 2.0, 3.0], atol=1e-12)
    # one pixel to the right moves +x_cam = world -z by depth / fx
    np.testing.assert_allclose(xyz[11 * W + 16], [3.0, 2.0, 3.0 - 2.0 / 30.0], atol=1e-12)


def test_backprojection_skips_invalid_pixels():
    depth = np.full((H, W), 1.0, dtype=np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    depth[0, 2] = 9.0
    valid = np.ones((H, W), dtype=bool)
    valid[0, 3] = False
    _, pix = backproject_depth(depth, K, np.eye(4), valid=valid, max_depth=5.0)
    assert set(range(4)).isdisjoint(pix.tolist()) and len(pix) == H * W - 4


def test_projection_round_trip():
    rng = np.random.default_rng(0)
    c2w = pose(rotation_y(30.0) @ rotation_y(-10.0), [0.3, -0.2, 0.5])
    depth = rng.uniform(0.5, 4.0, size=(H, W))
    xyz, pix = backproject_depth(depth, K, c2w)
    uv, z, in_view = project_points(xyz, K, c2w, W, H)
    rows, cols = np.divmod(pix, W)
    assert in_view.all()
    np.testing.assert_allclose(uv, np.stack([cols + 0.5, rows + 0.5], 1), atol=1e-9)
    np.testing.assert_allclose(z, depth.reshape(-1), rtol=1e-12)
    # points behind the camera are out of view
    _, _, behind = project_points(np.array([[0.0, 0.0, -1.0]]), K, np.eye(4), W, H)
    assert not behind[0]


def test_depth_test_keeps_the_front_point():
    ray = np.array([0.0, 0.0, 1.0])  # the optical axis: pixel (11, 15)
    points = np.stack([3.0 * ray, 1.0 * ray, 1.04 * ray, 2.0 * ray + [0.5, 0, 0]])
    hit = visible_points_depth_test(points, K, np.eye(4), W, H, depth_tolerance=0.05)
    centre = 11 * W + 15
    assert hit[1] == centre  # nearest on its pixel
    assert hit[2] == centre  # within 5 % of the nearest depth
    assert hit[0] == -1  # occluded
    assert hit[3] == 11 * W + int(15.5 + 30 * 0.25)  # alone on another pixel
    strict = visible_points_depth_test(points, K, np.eye(4), W, H, depth_tolerance=0.0)
    assert strict[2] == -1


def test_voxel_keys_refuse_points_that_are_not_finite():
    from econsg.fusion import voxel_keys

    with pytest.raises(EconsgError, match=r"xyz: 1 points hold NaN or inf"):
        voxel_keys(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), 0.1)


def test_a_sparsely_sampled_surface_hides_what_lies_behind_its_gaps():
    """A wall sampled at every other pixel in front of a dense one: with single-pixel points, the back wall showed
    through every gap; each point now occludes the 3 x 3 pixels around it."""
    depth_front, depth_back = np.full((H, W), 2.0), np.full((H, W), 4.0)
    front, front_pix = backproject_depth(depth_front, K, np.eye(4))
    rows, cols = np.divmod(front_pix, W)
    front = front[(rows % 2 == 0) & (cols % 2 == 0)]
    back, _ = backproject_depth(depth_back, K, np.eye(4))
    hit = visible_points_depth_test(np.concatenate([front, back]), K, np.eye(4), W, H, depth_tolerance=0.05)
    assert (hit[: len(front)] >= 0).all(), "the front samples are seen"
    back_seen = np.flatnonzero(hit[len(front) :] >= 0)
    border = {*range(W), *range((H - 1) * W, H * W), *range(0, H * W, W), *range(W - 1, H * W, W)}
    assert set(back_seen.tolist()) <= border, "only beyond the front wall's last samples, at the image border"


def unit(d: int, i: int) -> np.ndarray:
    e = np.zeros(d, dtype=np.float32)
    e[i] = 1.0
    return e


def test_two_views_that_disagree_follow_confidence_weights():
    fusion = VoxelFeatureFusion(voxel_size=1.0, feature_dim=4, num_classes=3)
    fusion.add(np.array([[0.2, 0.2, 0.2]]), unit(4, 0)[None], np.array([0]), np.array([0.9]), np.array([[1.0, 0, 0]]), 0)
    fusion.add(np.array([[0.4, 0.6, 0.8]]), unit(4, 1)[None], np.array([1]), np.array([0.3]), np.array([[0, 1.0, 0]]), 1)
    out = fusion.finalize()
    assert len(out) == 1
    # mean feature direction 0.9 e0 + 0.3 e1, normalised
    expected = np.array([0.9, 0.3, 0, 0]) / np.hypot(0.9, 0.3)
    np.testing.assert_allclose(out.feature[0], expected, rtol=1e-6)
    assert out.label[0] == 0
    np.testing.assert_allclose(out.vote_share[0], 0.9 / 1.2, rtol=1e-6)
    np.testing.assert_allclose(out.weight[0], 1.2, rtol=1e-6)
    assert out.num_views[0] == 2
    np.testing.assert_allclose(out.xyz[0], [0.3, 0.4, 0.5], rtol=1e-6)  # sample mean, not voxel centre
    np.testing.assert_allclose(out.rgb[0], [0.5, 0.5, 0.0], rtol=1e-6)


def test_label_histogram_ignore_and_views():
    fusion = VoxelFeatureFusion(voxel_size=1.0, feature_dim=3, num_classes=3, features_from_ignored=False)
    xyz = np.array([[0.5, 0.5, 0.5]] * 5 + [[1.5, 0.5, 0.5]])
    labels = np.array([2, 2, 1, IGNORE, 1, IGNORE])
    conf = np.array([0.5, 0.5, 0.4, 10.0, 0.4, 1.0])
    feats = np.stack([unit(3, 2), unit(3, 2), unit(3, 1), unit(3, 0), unit(3, 1), unit(3, 0)])
    rgb = np.zeros((6, 3))
    fusion.add(xyz[:3], feats[:3], labels[:3], conf[:3], rgb[:3], view_id=7)
    fusion.add(xyz[3:], feats[3:], labels[3:], conf[3:], rgb[3:], view_id=7)  # same view in a second chunk
    out = fusion.finalize(drop_featureless=False)
    assert len(out) == 2
    # voxel 0: votes class2 = 1.0, class1 = 0.8; the IGNORE pixel adds neither vote nor feature
    assert out.label[0] == 2 and out.num_views[0] == 1
    np.testing.assert_allclose(out.vote_share[0], 1.0 / 1.8, rtol=1e-6)
    np.testing.assert_allclose(out.feature[0], np.array([0, 0.8, 1.0]) / np.hypot(0.8, 1.0), rtol=1e-6)
    # voxel 1: only an IGNORE pixel: no votes, zero feature, still geometry
    assert out.label[1] == IGNORE and out.vote_share[1] == 0 and out.weight[1] == 0
    np.testing.assert_allclose(out.xyz[1], [1.5, 0.5, 0.5])
    assert len(fusion.finalize()) == 1  # featureless voxels dropped by default
    assert len(fusion.finalize(min_views=2, drop_featureless=False)) == 0


def test_a_points_voxel_key_is_its_samples_voxel_where_its_float32_mean_rounds_onto_the_face():
    fusion = VoxelFeatureFusion(voxel_size=0.5, feature_dim=3, num_classes=2)
    below_face = 2.0 - 1e-9  # in voxel 3 along x; its float32 mean is 2.0, voxel 4's face
    xyz = np.array([[below_face, 0.25, 0.25], [below_face - 2e-9, 0.25, 0.25], [2.25, 0.25, 0.25]])
    fusion.add(xyz, np.stack([unit(3, 0)] * 3), np.array([0, 0, 1]), None, np.zeros((3, 3)), view_id=0)
    out = fusion.finalize()
    assert out.xyz[0, 0] == np.float32(2.0) and voxel_keys(out.xyz[:1], 0.5)[0] == voxel_keys(xyz[2:], 0.5)[0]
    np.testing.assert_array_equal(out.voxel_key, voxel_keys(xyz[1:], 0.5))
    np.testing.assert_array_equal(out.subset(np.array([1])).voxel_key, voxel_keys(xyz[2:], 0.5))


def test_labelled_share_counts_samples_and_can_unname_a_mostly_ignored_voxel():
    fusion = VoxelFeatureFusion(voxel_size=1.0, feature_dim=3, num_classes=2, features_from_ignored=True)
    # voxel 0: one labelled sample among four (crr ignored the rest); voxel 1: two of two labelled
    xyz = np.array([[0.5, 0.5, 0.5]] * 4 + [[1.5, 0.5, 0.5]] * 2)
    labels = np.array([1, IGNORE, IGNORE, IGNORE, 0, 0])
    conf = np.array([0.9, 0.1, 0.1, 0.1, 0.5, 0.5])  # shares count samples, not confidence
    fusion.add(xyz, np.tile(unit(3, 0), (6, 1)), labels, conf, np.zeros((6, 3)), view_id=np.array([0, 1, 2, 3, 0, 1]))
    named = fusion.finalize()
    np.testing.assert_allclose(named.labelled_share, [0.25, 1.0])
    assert named.label.tolist() == [1, 0], "by default any labelled sample names the point"
    strict = fusion.finalize(min_labelled_share=0.5)
    assert strict.label.tolist() == [IGNORE, 0]
    np.testing.assert_allclose(strict.feature, named.feature)  # only the label changes
    assert fusion.finalize(min_labelled_share=0.25).label.tolist() == [1, 0], "the share is a lower bound"
    with pytest.raises(EconsgError, match=r"min_labelled_share: expected a fraction in \[0, 1\], got 1.5"):
        fusion.finalize(min_labelled_share=1.5)


def test_agreement_is_the_share_of_a_voxels_samples_with_the_same_decision():
    fusion = VoxelFeatureFusion(voxel_size=1.0, feature_dim=3, num_classes=3)
    # voxel 0 seen by five views: three say class 1, one says class 2 (confidently: agreement counts samples), one
    # ignored it; voxel 1: two views, both ignored
    xyz = np.array([[0.5, 0.5, 0.5]] * 5 + [[1.5, 0.5, 0.5]] * 2)
    labels = np.array([1, 1, 1, 2, IGNORE, IGNORE, IGNORE])
    conf = np.array([0.2, 0.2, 0.2, 1.0, 0.1, 0.1, 0.1])
    fusion.add(xyz, np.tile(unit(3, 0), (7, 1)), labels, conf, np.zeros((7, 3)), view_id=np.array([0, 1, 2, 3, 4, 0, 1]))
    asked = np.array([[0.1, 0.9, 0.2], [0.7, 0.3, 0.6], [0.5, 0.5, 0.5], [0.9, 0.1, 0.9], [1.2, 0.4, 0.5], [5.5, 0.5, 0.5]])
    got = fusion.agreement(asked, np.array([1, 2, IGNORE, 0, IGNORE, 1]))
    np.testing.assert_allclose(got[:5], [3 / 5, 1 / 5, 1 / 5, 0.0, 1.0], rtol=1e-6)
    assert np.isnan(got[5]), "a voxel no view hit has no agreement"
    assert fusion.num_voxels == 2, "asking does not occupy voxels"
    with pytest.raises(EconsgError, match=r"labels: expected 2 entries like xyz, got 1"):
        fusion.agreement(asked[:2], np.array([1]))
    with pytest.raises(EconsgError, match=r"labels: expected class ids in \[0, 3\) or -1, got range \[0, 3\]"):
        fusion.agreement(asked[:2], np.array([0, 3]))


def test_several_views_in_one_add_equal_one_add_per_view():
    rng = np.random.default_rng(3)
    n_views, per_view, D, C = 5, 400, 8, 4
    xyz = rng.uniform(0, 3, (n_views * per_view, 3))
    table = rng.normal(size=(30, D)).astype(np.float32)
    index = rng.integers(0, 30, (n_views * per_view, 4))
    mix = rng.dirichlet(np.ones(4), n_views * per_view).astype(np.float32)
    labels = rng.integers(-1, C, n_views * per_view)
    conf = rng.uniform(0.1, 1, n_views * per_view)
    rgb = rng.uniform(0, 1, (n_views * per_view, 3))
    views = np.repeat(np.array([4, 9, 9, 2, 7]), per_view)  # unsorted ids, view 9 in two chunks
    one_by_one = VoxelFeatureFusion(0.5, D, C)
    for start in range(0, len(xyz), per_view):
        sl = slice(start, start + per_view)
        one_by_one.add(xyz[sl], table, labels[sl], conf[sl], rgb[sl], view_id=int(views[start]),
                       feature_index=index[sl], feature_mix=mix[sl])  # fmt: skip
    batched = VoxelFeatureFusion(0.5, D, C)
    half = 2 * per_view  # two calls: the second continues view 9, which the first ended with
    for sl in (slice(0, half + per_view // 2), slice(half + per_view // 2, None)):
        batched.add(xyz[sl], table, labels[sl], conf[sl], rgb[sl], view_id=views[sl], feature_index=index[sl],
                    feature_mix=mix[sl])  # fmt: skip
    a, b = one_by_one.finalize(), batched.finalize()
    assert len(a) == len(b) > 0
    order_a, order_b = np.lexsort(a.xyz.T), np.lexsort(b.xyz.T)
    np.testing.assert_array_equal(a.num_views[order_a], b.num_views[order_b])
    assert a.num_views.max() >= 2
    np.testing.assert_array_equal(a.label[order_a], b.label[order_b])
    np.testing.assert_allclose(a.feature[order_a], b.feature[order_b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.xyz[order_a], b.xyz[order_b], rtol=1e-6)
    with pytest.raises(EconsgError, match=r"view_id: expected one int or \[3\] ids"):
        batched.add(xyz[:3], table, labels[:3], conf[:3], rgb[:3], view_id=np.zeros(2, int), feature_index=index[:3])


@pytest.mark.parametrize("n_views", [3, 2000])  # few views: flag table of (voxel, view) pairs; many: sort
def test_view_counts_are_distinct_views_per_voxel(n_views):
    rng = np.random.default_rng(5)
    p = 4000
    xyz = rng.uniform(0, 2, (p, 3))
    view_ids = rng.integers(0, n_views, p) * 3 + 1  # sparse, unsorted ids
    fusion = VoxelFeatureFusion(0.1, 2, 1)
    fusion.add(xyz, np.ones((p, 2), np.float32), np.zeros(p, int), None, np.zeros((p, 3)), view_id=view_ids)
    fused = fusion.finalize()
    keys = voxel_keys(xyz, 0.1)
    expected = {k: len(set(view_ids[keys == k])) for k in np.unique(keys)}
    got = dict(zip(voxel_keys(fused.xyz, 0.1), fused.num_views))
    assert got == expected and max(expected.values()) >= 2


def test_the_librarys_defaults_are_the_stages():
    assert VoxelFeatureFusion(0.1, 3, 2).features_from_ignored == FuseParams().features_from_ignored


def test_features_from_ignored_option():
    fusion = VoxelFeatureFusion(voxel_size=1.0, feature_dim=3, num_classes=2, features_from_ignored=True)
    fusion.add(np.zeros((1, 3)), unit(3, 0)[None], np.array([IGNORE]), None, np.zeros((1, 3)), 0)
    out = fusion.finalize()
    assert len(out) == 1 and out.label[0] == IGNORE
    np.testing.assert_allclose(out.feature[0], unit(3, 0))
    # off, an ignored pixel adds no feature: its voxel is featureless, dropped unless kept
    labelled_only = VoxelFeatureFusion(voxel_size=1.0, feature_dim=3, num_classes=2, features_from_ignored=False)
    labelled_only.add(np.zeros((1, 3)), unit(3, 0)[None], np.array([IGNORE]), None, np.zeros((1, 3)), 0)
    assert len(labelled_only.finalize()) == 0
    kept = labelled_only.finalize(drop_featureless=False)
    assert len(kept) == 1 and kept.weight[0] == 0 and not kept.feature[0].any()


def random_plane_view(rng, n, d, rows):
    xyz = np.column_stack([rng.uniform(0, 2, n), rng.uniform(0, 2, n), np.full(n, 1.0)])
    return xyz, rng.normal(size=(rows, d)).astype(np.float32), rng.integers(0, rows, n)


def test_streaming_state_does_not_grow_with_views():
    rng = np.random.default_rng(1)
    fusion = VoxelFeatureFusion(voxel_size=0.25, feature_dim=16, num_classes=4)
    sizes = []
    for view in range(40):
        xyz, table, index = random_plane_view(rng, 2000, 16, 8)
        labels = rng.integers(-1, 4, len(xyz))
        fusion.add(xyz, table, labels, rng.uniform(size=len(xyz)), rng.uniform(size=(len(xyz), 3)), view, feature_index=index)
        sizes.append((fusion.num_voxels, fusion.nbytes))
    assert fusion.num_voxels == 64  # 8 x 8 voxels cover the 2 m x 2 m plane
    assert len(set(sizes[5:])) == 1  # neither voxels nor bytes grow once the surface is covered
    assert fusion.finalize().num_views.max() == 40


def test_table_path_matches_dense_reference():
    rng = np.random.default_rng(2)
    xyz, table, index = random_plane_view(rng, 3000, 8, 5)
    mix_index = np.stack([index, rng.integers(0, 5, len(index))], 1)
    mix = rng.uniform(size=mix_index.shape)
    labels = rng.integers(-1, 3, len(xyz))
    conf = rng.uniform(size=len(xyz))
    rgb = rng.uniform(size=(len(xyz), 3))
    fast = VoxelFeatureFusion(0.3, 8, 3)
    fast.add(xyz, table, labels, conf, rgb, 0, feature_index=mix_index, feature_mix=mix)
    dense_features = (table[mix_index] * mix[..., None]).sum(1)
    ref = VoxelFeatureFusion(0.3, 8, 3)
    ref.add(xyz, dense_features, labels, conf, rgb, 0)  # the same mixed features as dense rows
    a, b = fast.finalize(), ref.finalize()
    np.testing.assert_allclose(a.feature, b.feature, rtol=1e-5, atol=1e-6)  # float32 sums in another order
    np.testing.assert_allclose(a.xyz, b.xyz, rtol=1e-6)
    assert np.array_equal(a.num_views, b.num_views) and np.array_equal(a.label, b.label)


def test_table_path_keeps_confidence_weighted_votes():
    """Mixing weights spread features over rows, but label votes weigh by confidence alone."""
    fusion = VoxelFeatureFusion(1.0, 2, 2)
    fusion.add(np.zeros((2, 3)), np.eye(2, dtype=np.float32), np.array([0, 1]), np.array([0.3, 0.6]),
               np.zeros((2, 3)), 0, feature_index=np.array([[0, 1], [1, 1]]), feature_mix=np.array([[0.5, 0.5], [1.0, 0.0]]))  # fmt: skip
    out = fusion.finalize()
    # feature sum = 0.3 * (0.5 e0 + 0.5 e1) + 0.6 * e1 = (0.15, 0.75); weight = 0.3 + 0.6
    np.testing.assert_allclose(out.feature[0], np.array([0.15, 0.75]) / np.hypot(0.15, 0.75), rtol=1e-6)
    np.testing.assert_allclose(out.weight[0], 0.9, rtol=1e-6)
    assert out.label[0] == 1 and np.isclose(out.vote_share[0], 0.6 / 0.9)


def test_bilinear_index_matches_torch_interpolate():
    rng = np.random.default_rng(3)
    grid = rng.normal(size=(3, 5, 4)).astype(np.float32)
    index, mix = bilinear_feature_index(3, 5, 11, 17)
    ours = (grid.reshape(-1, 4)[index] * mix[..., None]).sum(1).reshape(11, 17, 4)
    ref = torch.nn.functional.interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=(11, 17),
                                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix.sum(1), 1.0, rtol=1e-6)


def plane_views(n_views: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(c2w, z-depth, labels) of cameras looking at the plane z = 2.03, left half class 0, right half class 1."""
    rng = np.random.default_rng(4)
    views = []
    for _ in range(n_views):
        c2w = pose(rotation_y(rng.uniform(-10, 10)), [rng.uniform(-0.2, 0.2), 0.0, 0.0])
        # make the plane z = 2.03 in the world: z-depth of a tilted camera along each pixel ray
        ray_cam = np.stack(np.meshgrid((np.arange(W) + 0.5 - K[0, 2]) / K[0, 0], (np.arange(H) + 0.5 - K[1, 2]) / K[1, 1]), -1)
        ray_cam = np.concatenate([ray_cam, np.ones((H, W, 1))], -1)
        depth = 2.03 / (ray_cam @ c2w[:3, :3].T)[..., 2]  # plane inside a voxel layer, not on its face
        labels = np.where(np.arange(W)[None, :] < W // 2, 0, 1).repeat(H, 0)
        views.append((c2w, depth, labels))
    return views


def fuse_plane(views, samples) -> FusedPoints:
    """Fuse the plane views as the fuse stage does, each view's (xyz, pixel) samples from `samples(c2w, depth)`;
    a pixel's feature is the one-hot row of its label."""
    fusion = VoxelFeatureFusion(0.1, 6, 2)
    for v, (c2w, depth, labels) in enumerate(views):
        xyz, pixel = samples(c2w, depth)
        label = labels.reshape(-1)[pixel]
        fusion.add(xyz, np.eye(6, dtype=np.float32), label, np.ones(len(pixel)), np.full((len(pixel), 3), 0.5), v,
                   feature_index=label)
    return fusion.finalize()


def test_depth_maps_and_a_point_cloud_fuse_the_same_surface():
    """fuse.source depth and points: the plane back-projected from depth, and the fused points themselves seen again
    through the same cameras without depth, give the same surface with the same labels."""
    views = plane_views(3)
    fused = fuse_plane(views, lambda c2w, depth: backproject_depth(depth, K, c2w))
    np.testing.assert_allclose(fused.xyz[:, 2], 2.03, atol=1e-6)
    assert fused.num_views.max() == 3 and set(np.unique(fused.label)) == {0, 1}
    cloud = fused.xyz.astype(np.float64)
    again = fuse_plane(views, lambda c2w, depth: points_seen_in_view(cloud, K, c2w, W, H, depth_tolerance=0.05))
    assert len(again) > 0.9 * len(fused)
    np.testing.assert_allclose(again.xyz[:, 2], 2.03, atol=1e-6)
    assert (again.vote_share > 0.5).all()
    left = again.xyz[:, 0] < np.median(again.xyz[:, 0])  # the plane's left half is class 0 in every view
    assert (again.label[left] == 0).mean() > 0.9 and (again.label[~left] == 1).mean() > 0.9


def test_bad_inputs_name_the_argument():
    fusion = VoxelFeatureFusion(0.1, 4, 3)
    with pytest.raises(EconsgError, match=r"feature_table: expected shape \[R, 4\]"):
        fusion.add(np.zeros((2, 3)), np.zeros((2, 5)), np.zeros(2), None, np.zeros((2, 3)), 0)
    with pytest.raises(EconsgError, match="labels: expected class ids in"):
        fusion.add(np.zeros((2, 3)), np.zeros((2, 4)), np.array([0, 3]), None, np.zeros((2, 3)), 0)
    with pytest.raises(EconsgError, match="confidence: expected finite weights >= 0"):
        fusion.add(np.zeros((2, 3)), np.zeros((2, 4)), np.array([0, 1]), np.array([1.0, -1.0]), np.zeros((2, 3)), 0)
    for bad in (np.nan, -0.5):  # the voxel was dropped from finalize() without a word
        with pytest.raises(EconsgError, match="feature_mix: expected finite weights >= 0"):
            fusion.add(np.zeros((2, 3)), np.zeros((2, 4)), np.array([0, 1]), None, np.zeros((2, 3)), 0,
                       feature_index=np.array([[0, 1], [1, 0]]), feature_mix=np.array([[0.5, bad], [0.5, 0.5]]))
    with pytest.raises(EconsgError, match="voxel_size: expected a positive size"):
        VoxelFeatureFusion(0.0, 4, 3)
    with pytest.raises(EconsgError, match="depth: expected an"):
        backproject_depth(np.zeros(5), K, np.eye(4))
    with pytest.raises(EconsgError, match="c2w: expected a 4x4"):
        project_points(np.zeros((1, 3)), K, np.eye(3), W, H)


def test_fuse_params_validation():
    with pytest.raises(ValueError):
        FuseParams(voxel_size=0)
    with pytest.raises(ValueError):
        FuseParams(source="lidar")
    with pytest.raises(ValueError):
        FuseParams(voxelsize=0.1)


def test_fuse_summary_warns_when_min_views_drops_most_voxels():
    """fuse's one-line report: counts always; a warning naming fuse.min_views only when most voxels were dropped,
    and the fuse.max_points cap reported apart from it."""
    from stages.fuse import fused_summary

    kept_most = fused_summary(occupied=1000, fused=900, kept=900, labelled=800, min_views=1)
    assert kept_most.startswith("fuse: 900 points (800 labelled) from 1,000 occupied voxels") and "warning" not in kept_most
    dropped = fused_summary(occupied=30_329, fused=626, kept=626, labelled=536, min_views=3)
    assert "warning: fuse.min_views=3" in dropped and "dropped 98%" in dropped
    capped = fused_summary(occupied=1000, fused=900, kept=300, labelled=250, min_views=1)
    assert "fuse.max_points kept 300 of 900" in capped and "warning" not in capped


def test_median_depth_and_auto_scene_lengths_scale_with_the_scene():
    """A scene in other units (COLMAP's): scaling points and camera centres by s scales the median depth, and so the
    `auto` voxel size, by s; a number far off `auto` draws a warning that names the field."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 1.0, (2000, 3)) + [0.0, 0.0, 4.0]
    c2ws = np.stack([np.eye(4)] * 3)
    c2ws[1, :3, :3], c2ws[2, :3, :3] = rotation_y(8), rotation_y(-8)
    c2ws[:, 0, 3] = [0.0, -0.5, 0.5]
    Ks = np.stack([K] * 3)
    base = median_view_depth(points, Ks, c2ws, W, H)
    assert 3.0 < base < 5.0
    scaled = c2ws.copy()
    scaled[:, :3, 3] *= 10
    assert median_view_depth(points * 10, Ks, scaled, W, H) == pytest.approx(10 * base)

    assert resolve_scene_length("fuse.voxel_size", "auto", base, 40) == (pytest.approx(base / 40), None)
    assert resolve_scene_length("fuse.voxel_size", 3 * base / 40, base, 40) == (pytest.approx(3 * base / 40), None)
    size, warning = resolve_scene_length("fuse.voxel_size", 0.08, 10 * base, 40)
    assert size == 0.08 and "fuse.voxel_size" in warning and "auto" in warning
    assert resolve_scene_length("fuse.voxel_size", 0.08, base / 10, 40)[1] is not None  # far too coarse too
    # the near plane: only a plane too far out loses anything
    assert resolve_scene_length("splat.near_plane", 0.01, 100 * base, 300, warn_if_smaller=False) == (0.01, None)
    near, warning = resolve_scene_length("splat.near_plane", 0.01, base / 100, 300, warn_if_smaller=False)
    assert near == 0.01 and "splat.near_plane 0.01 is" in warning and "larger" in warning

    with pytest.raises(EconsgError, match="none falls inside a training view"):
        median_view_depth(points * [1, 1, -1], Ks, c2ws, W, H)  # every point behind the cameras


def test_median_depth_of_a_long_sequence_is_taken_in_an_even_stride_of_its_views():
    from econsg.fusion import MEDIAN_DEPTH_VIEWS

    rng = np.random.default_rng(1)
    points = rng.uniform(-1.0, 1.0, (500, 3)) + [0.0, 0.0, 4.0]
    count = 2 * MEDIAN_DEPTH_VIEWS + 3  # a stride of 3 leaves at most MEDIAN_DEPTH_VIEWS views
    c2ws = np.stack([np.eye(4)] * count)
    c2ws[:, 2, 3] = np.linspace(-3.0, 2.0, count)  # each view nearer the points than the last
    Ks = np.stack([K] * count)
    strided = median_view_depth(points, Ks[::3], c2ws[::3], W, H)
    assert median_view_depth(points, Ks, c2ws, W, H) == strided
    assert median_view_depth(points, Ks[:MEDIAN_DEPTH_VIEWS], c2ws[:MEDIAN_DEPTH_VIEWS], W, H) != strided  # all of them


def test_points_seen_in_a_view_leave_out_those_beyond_max_depth():
    """fuse from a point cloud (COLMAP scenes) honours fuse.max_depth as fuse from depth does."""
    from econsg.fusion import points_seen_in_view

    points = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 10.0], [0.0, 0.3, 1.5]])  # apart in the image, no occlusion
    xyz, pixel = points_seen_in_view(points, K, np.eye(4), W, H, 0.05)
    assert len(xyz) == 3
    near, near_pixel = points_seen_in_view(points, K, np.eye(4), W, H, 0.05, max_depth=2.0)
    np.testing.assert_array_equal(near, points[[0, 2]])
    np.testing.assert_array_equal(near_pixel, pixel[[0, 2]])


def test_fuse_takes_a_pixels_own_feature_at_unit_length_as_crr_and_autoencode_do():
    """Between two orthogonal patches the bilinear mix is 0.71 long; renormalised, an in-between pixel weighs in a
    voxel's mean as much as a patch centre or a mask-refined pixel does."""
    from econsg.crr import map_refined_features
    from stages.fuse import refined_feature_rows

    H, W = 4, 8
    grid = np.zeros((1, 2, 3), np.float32)
    grid[0, 0, 0] = grid[0, 1, 1] = 1.0
    table_rows = np.array([[0.0, 0.0, 1.0]], np.float32)
    source = np.full((H, W), -1, np.int32)
    source[0, 0] = 0  # one pixel refined by a mask
    table, index, mix = refined_feature_rows(grid, source, table_rows, bilinear_feature_index(1, 2, H, W))
    pixels = (table[index] * mix[..., None]).sum(axis=1).reshape(H, W, 3)
    np.testing.assert_allclose(np.linalg.norm(pixels, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pixels, map_refined_features(lambda rows: rows, grid, source, table_rows, H, W), atol=1e-6)


def test_fuse_takes_a_painted_mask_feature_where_a_pixel_keeps_its_own():
    """The mask-crop backend's table and id map: fuse's table rows and taps give every pixel the feature crr and
    autoencode give it (map_refined_features), refined pixels their mask-class row, the others their painted mask's."""
    from econsg.crr import map_refined_features
    from stages.fuse import refined_feature_rows
    from tests.helpers import painted_example

    grid, painted, cube = painted_example()
    H, W, D = cube.shape
    table_rows = np.eye(D, dtype=np.float32)[:1]
    source = np.full((H, W), -1, np.int32)
    source[0, :3] = 0  # three pixels refined by a mask class (inside the large painted mask)
    table, index, mix = refined_feature_rows(grid, source, table_rows, bilinear_feature_index(2, 2, H, W), painted)
    pixels = (table[index] * mix[..., None]).sum(axis=1).reshape(H, W, D)
    expected = map_refined_features(lambda rows: rows, grid, source, table_rows, H, W, painted=painted)
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    np.testing.assert_allclose(pixels[0, :3], table_rows[[0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(pixels[painted.ids == 1], cube[painted.ids == 1], atol=1e-6)


def test_zbuffer_tolerance_is_relative_to_the_nearest_depth():
    Kz = np.array([[10.0, 0, 4.0], [0, 10.0, 4.0], [0, 0, 1]])
    points = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 10.3], [0.0, 0.0, 10.6]])  # all on pixel (4, 4) = 36
    hit = visible_points_depth_test(points, Kz, np.eye(4), 8, 8, depth_tolerance=0.05)
    assert hit.tolist() == [36, 36, -1]  # 10.3 <= 10 x 1.05 < 10.6
