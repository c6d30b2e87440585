"""The synthetic teacher (degradation model) and the shared per-pixel probability maths of features.base."""

import numpy as np
import pytest
import zarr

from econsg.config import Params
from econsg.config.extract import ExtractParams, SyntheticTeacherParams
from econsg.errors import EconsgError
from econsg.features.backends import absent_open_set_warning, coarse_grid_warning, training_vocabulary
from econsg.features.base import (
    bilinear_weights,
    interpolated_feature_norms,
    label_cosines,
    labels_and_confidence,
    pixel_cosines,
    pixel_probabilities,
    pixel_probabilities_reference,
    softmax,
    upsample_feature_rows,
)
from econsg.features.teacher import confusion_partners, ground_truth_segments, synthetic_teacher_view
from econsg.features.text import HashedTextEncoder, encode_vocabulary
from econsg.scene.ingest import write_scene
from econsg.scene.readers import read_scene
from econsg.scene.store import open_scene
from stages import extract
from tests.helpers import write_tiny_blender

NAMES = ["wall", "floor", "sofa", "chair", "lamp"]
H, W = 24, 32
PERFECT = SyntheticTeacherParams(
    patch_size=1, feature_noise=0.0, confusion_prob=0.0, p_split=0.0, p_merge=0.0, p_drop=0.0,
    boundary_jitter=0, part_masks=0, min_area=1,
)


def tiny_room():
    """wall on top, floor below, a sofa and a chair (instances 3, 4) and a lamp (no instance id)."""
    cls = np.zeros((H, W), np.int16)
    inst = np.ones((H, W), np.int32)
    cls[14:] = 1
    inst[14:] = 2
    cls[8:18, 3:13] = 2
    inst[8:18, 3:13] = 3
    cls[10:20, 18:26] = 3
    inst[10:20, 18:26] = 4
    cls[2:7, 27:31] = 4
    inst[2:7, 27:31] = 0
    cls[0:2, 0:4] = -1  # unlabelled
    inst[0:2, 0:4] = 0
    return cls, inst


@pytest.fixture(scope="module")
def embeddings():
    enc = HashedTextEncoder(dim=64, seed=0)
    t = encode_vocabulary(enc, NAMES)
    return t, t  # scene classes = vocabulary here


def accuracy(view, cls):
    keep = cls >= 0
    return float((view.labels[keep] == cls[keep]).mean())


def test_teacher_is_deterministic_for_a_seed(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    params = SyntheticTeacherParams(patch_size=4, part_masks=2)
    a = synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(7), class_names=NAMES)
    b = synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(7), class_names=NAMES)
    c = synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(8), class_names=NAMES)
    for name in ("features", "labels", "confidence", "masks", "mask_scores"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.features, c.features)


def test_a_knob_of_one_step_redraws_no_other_steps_draws(embeddings):
    """Features and masks come from streams of their own: a sweep of a feature knob compares the same masks, and a
    sweep of a mask knob the same features."""
    cls, inst = tiny_room()
    t, v = embeddings
    base = SyntheticTeacherParams(patch_size=4, part_masks=2)

    def view(**change):
        return synthetic_teacher_view(cls, inst, t, v, base.model_copy(update=change), 0.05, np.random.default_rng(7),
                                      class_names=NAMES, object_seed=0)

    reference = view()
    for change in ({"feature_noise": 0.0}, {"patch_size": 2}, {"confusion_scope": "object"}, {"confusion_prob": 0.9}):
        other = view(**change)
        assert not np.array_equal(other.features, reference.features), change
        np.testing.assert_array_equal(other.masks, reference.masks)
        np.testing.assert_array_equal(other.mask_scores, reference.mask_scores)
    for change in ({"p_drop": 0.9}, {"boundary_jitter": 0}):
        other = view(**change)
        np.testing.assert_array_equal(other.features, reference.features)
        assert len(other.masks) != len(reference.masks) or not np.array_equal(other.masks, reference.masks), change


def test_all_knobs_at_zero_give_a_perfect_teacher(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    view = synthetic_teacher_view(cls, inst, t, v, PERFECT, 0.05, np.random.default_rng(0), class_names=NAMES)
    assert view.features.shape == (H, W, 64) and view.features.dtype == np.float16
    assert accuracy(view, cls) == 1.0
    segment, _ = ground_truth_segments(cls, inst)
    truth = {segment_mask.tobytes() for segment_mask in (segment == s for s in range(segment.max() + 1))}
    assert {m.tobytes() for m in view.masks} == truth
    assert view.confidence[cls >= 0].min() > 0.5


def test_patch_pooling_blurs_only_boundaries(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    params = PERFECT.model_copy(update={"patch_size": 4})
    view = synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(0))
    assert view.features.shape == (6, 8, 64)
    wrong = (view.labels != cls) & (cls >= 0)
    assert 0 < wrong.sum() < 0.25 * wrong.size
    # errors sit within a patch of a class boundary
    from scipy import ndimage

    edge = np.zeros_like(wrong)
    for c in np.unique(cls):
        region = cls == c
        edge |= ndimage.binary_dilation(region, iterations=4) & ~region
    assert not (wrong & ~edge).any()


def test_more_noise_or_confusion_lowers_accuracy(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    base = PERFECT.model_copy(update={"patch_size": 2})

    def mean_accuracy(params):
        return np.mean([accuracy(synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(s)), cls) for s in range(4)])

    clean = mean_accuracy(base)
    noisy = mean_accuracy(base.model_copy(update={"feature_noise": 12.0}))
    confused = mean_accuracy(
        base.model_copy(update={"confusion_prob": 1.0, "confusion_weight_min": 0.9, "confusion_weight_max": 0.95})
    )
    assert noisy < clean - 0.2
    assert confused < clean - 0.5  # every instance flips to its partner


def test_listed_confusions_are_used_both_ways(embeddings):
    t, _ = embeddings
    partners = confusion_partners(t, NAMES, [("sofa", "chair"), ("wall", "floor")])
    assert partners[2] == [3] and partners[3] == [2] and partners[0] == [1]
    assert len(partners[4]) == 1 and partners[4][0] != 4  # lamp: nearest class in text space
    cls, inst = tiny_room()
    params = PERFECT.model_copy(update={"confusion_prob": 1.0, "confusion_weight_min": 0.9, "confusion_weight_max": 0.9})
    view = synthetic_teacher_view(cls, inst, t, t, params, 0.05, np.random.default_rng(0), class_names=NAMES)
    assert (view.labels[cls == 2] == 3).all() and (view.labels[cls == 3] == 2).all()


def test_object_scope_confuses_an_object_alike_in_every_view(embeddings):
    """'view' draws each view's confusions afresh, so an object flips in some views only and fusion can outvote it;
    'object' keys the draw by the object and the run's seed, so it flips in every view or in none."""
    cls, inst = tiny_room()
    t, v = embeddings
    flips = PERFECT.model_copy(update={"confusion_prob": 0.5, "confusion_weight_min": 0.9, "confusion_weight_max": 0.9})

    def labels(scope, view_seed, object_seed=0):
        params = flips.model_copy(update={"confusion_scope": scope})
        return synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(view_seed),
                                      class_names=NAMES, object_seed=object_seed).labels

    per_view = [labels("view", s) for s in range(8)]
    assert any(not np.array_equal(per_view[0], other) for other in per_view[1:])
    for object_seed in range(4):
        per_object = [labels("object", s, object_seed) for s in range(8)]
        assert all(np.array_equal(per_object[0], other) for other in per_object[1:])
    # the object draw does confuse: some seed flips an object
    assert any((labels("object", 0, seed)[cls >= 0] != cls[cls >= 0]).any() for seed in range(4))
    with pytest.raises(EconsgError, match="object_seed"):
        labels("object", 0, object_seed=None)


def test_instances_are_none_without_instance_maps_and_extract_runs(tmp_path):
    """ScanNet and NICE-SLAM Replica have class maps but no instance maps: the teacher then takes connected
    components as segments, instead of extract failing."""
    import json

    from econsg.scene.store import open_ground_truth

    root = write_tiny_blender(tmp_path / "data", views=4)
    for split in ("train", "test"):
        path = root / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        for frame in meta["frames"]:
            del frame["instance_file_path"]
        path.write_text(json.dumps(meta))
    params = Params.model_validate({"paths": {"artifacts": str(tmp_path / "a"), "metrics": str(tmp_path / "m")}})
    write_scene(read_scene(root), params.paths.artifact("ingest"), params={}, downscale=1, sparse_views=None,
                max_init_points=1000, init_voxel_size=0.01, rng=np.random.default_rng(0))
    assert open_ground_truth(params.paths.artifact("ingest")).instances(0) is None
    extract.run(params)
    labels = zarr.open_group(params.paths.artifact("extract"), mode="r")["labels"][...]
    assert labels.shape[0] == 4 and (labels >= 0).any()


def test_the_teacher_on_a_scene_without_labels_names_the_backend_to_use_before_any_store(tmp_path):
    from tests.dataset_fixtures import PLANE_Z, synthetic_views, write_colmap

    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 9), np.linspace(-2, 2, 9), [PLANE_Z]), -1).reshape(-1, 3)
    write_colmap(tmp_path / "data", synthetic_views(n=4, width=16, height=12), points=grid)
    params = Params.model_validate({"paths": {"artifacts": str(tmp_path / "a"), "metrics": str(tmp_path / "m")},
                                    "extract": {"vocabulary": ["wall", "floor"], "open_set_classes": []}})
    write_scene(read_scene(tmp_path / "data"), params.paths.artifact("ingest"), params={}, downscale=1, sparse_views=None,
                max_init_points=1000, init_voxel_size=0.01, rng=np.random.default_rng(0))
    with pytest.raises(EconsgError, match="extract.backend: 'synthetic' builds its features from ground-truth labels.*"
                                          "set extract.backend: openclip_sam"):
        extract.run(params)
    assert not params.paths.artifact("extract").exists()


def test_degraded_masks_stay_valid(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    params = SyntheticTeacherParams(p_split=0.5, p_merge=0.5, boundary_jitter=3, part_masks=4, min_area=6)
    for seed in range(5):
        view = synthetic_teacher_view(cls, inst, t, v, params, 0.05, np.random.default_rng(seed))
        M = len(view.masks)
        assert view.masks.shape == (M, H, W) and view.masks.dtype == bool
        assert view.mask_scores.shape == (M, 3)
        area = view.masks.reshape(M, -1).sum(1)
        np.testing.assert_array_equal(view.mask_scores[:, 2], area)
        assert (area >= 6).all() and (np.diff(area) <= 0).all()
        assert ((view.mask_scores[:, :2] > 0) & (view.mask_scores[:, :2] <= 1)).all()


def test_drop_all_masks_and_segments_without_instances():
    cls, inst = tiny_room()
    segment, seg_class = ground_truth_segments(cls, None)
    assert segment[0, 0] == -1 and len(seg_class) == 5  # wall, floor, sofa, chair, lamp components
    params = PERFECT.model_copy(update={"p_drop": 1.0})
    t = encode_vocabulary(HashedTextEncoder(dim=16), NAMES)
    view = synthetic_teacher_view(cls, inst, t, t, params, 0.05, np.random.default_rng(0))
    assert view.masks.shape == (0, H, W) and view.mask_scores.shape == (0, 3)


def test_teacher_rejects_bad_input(embeddings):
    cls, inst = tiny_room()
    t, v = embeddings
    with pytest.raises(EconsgError, match="gt_instance"):
        synthetic_teacher_view(cls, inst[:3], t, v, PERFECT, 0.05, np.random.default_rng(0))
    with pytest.raises(EconsgError, match="gt_class"):
        synthetic_teacher_view(cls + 10, inst, t, v, PERFECT, 0.05, np.random.default_rng(0))
    with pytest.raises(EconsgError, match="vocabulary_embeddings"):
        synthetic_teacher_view(cls, inst, t, v[:, :5], PERFECT, 0.05, np.random.default_rng(0))


def test_params_validation():
    with pytest.raises(ValueError, match="confusion_weight_min"):
        SyntheticTeacherParams(confusion_weight_min=0.9, confusion_weight_max=0.5)
    with pytest.raises(ValueError, match="different"):
        SyntheticTeacherParams(confusions=[("sofa", "sofa")])
    with pytest.raises(ValueError, match="open_set_classes"):
        ExtractParams(vocabulary=["chair", "plant"], open_set_classes=["plant"])
    with pytest.raises(ValueError, match="template"):
        ExtractParams(templates=["no slot"])


def test_training_vocabulary_holds_out_open_set_classes_and_warns_of_absent_ones():
    scene_classes = ["wall", "chair", "plant"]
    assert training_vocabulary(ExtractParams(open_set_classes=["plant"]), scene_classes) == ["wall", "chair"]
    assert training_vocabulary(ExtractParams(open_set_classes=[]), scene_classes) == scene_classes
    assert absent_open_set_warning(ExtractParams(open_set_classes=["plant"]), scene_classes) is None
    misspelt = ExtractParams(open_set_classes=["plants"])
    assert training_vocabulary(misspelt, scene_classes) == scene_classes
    assert "open_set_classes ['plants'] not among the scene's classes" in absent_open_set_warning(misspelt, scene_classes)
    # a given vocabulary decides the training classes itself: nothing to warn of
    assert absent_open_set_warning(ExtractParams(vocabulary=["wall"], open_set_classes=["plants"]), scene_classes) is None


def test_a_teacher_patch_as_large_as_the_image_is_warned_of():
    big = ExtractParams(synthetic=SyntheticTeacherParams(patch_size=64))
    assert "patch_size 64 is not below the images' shorter side (36 of 48 x 36)" in coarse_grid_warning(big, 36, 48)
    assert coarse_grid_warning(ExtractParams(), 192, 256) is None
    assert coarse_grid_warning(big.model_copy(update={"backend": "openclip_sam"}), 36, 48) is None, "no teacher there"


def test_a_vocabulary_word_naming_a_scene_class_in_another_case_is_refused():
    """'Bed' embeds as 'bed' (the text towers lower-case) but would match no ground-truth class by name."""
    scene_classes = ["wall", "bed", "plant"]
    with pytest.raises(EconsgError, match=r"extract.vocabulary: 'Bed' for 'bed': the scene's class in another case"):
        training_vocabulary(ExtractParams(vocabulary=["wall", "Bed"], open_set_classes=["plant"]), scene_classes)
    assert training_vocabulary(ExtractParams(vocabulary=["wall", "bed", "mug"], open_set_classes=[]), scene_classes) == [
        "wall", "bed", "mug"], "a word the scene lacks in any case is a text of its own"


# ---- features.base: bilinear up-sampling and probabilities --------------------------------------------


def test_upsampling_follows_align_corners_false():
    grid = np.zeros((1, 2, 2), np.float32)
    grid[0, 0] = [1, 0]
    grid[0, 1] = [0, 1]
    up = upsample_feature_rows(grid, 1, 4)  # pixel centres 0.5..3.5 -> grid x = -0.25, 0.25, 0.75, 1.25
    np.testing.assert_allclose(up[0, 0], [1, 0], atol=1e-6)  # clamped at the border
    np.testing.assert_allclose(up[0, 3], [0, 1], atol=1e-6)
    expected = np.array([0.75, 0.25]) / np.linalg.norm([0.75, 0.25])
    np.testing.assert_allclose(up[0, 1], expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5, 16), (1, 1, 8), (6, 4, 8)])
def test_fast_probabilities_match_the_reference_twin(shape):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal(shape).astype(np.float16)
    text = rng.standard_normal((4, shape[2]))
    fast = pixel_probabilities(grid, text, 13, 11, 0.05)
    slow = pixel_probabilities_reference(grid, text, 13, 11, 0.05)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=2e-5)  # float32 round-off in two summation orders
    np.testing.assert_allclose(fast.sum(-1), 1.0, atol=1e-5)
    # the norm identity against a direct evaluation of the un-normalised interpolation
    raw = np.asarray(grid, np.float32)
    y0, y1, ay = bilinear_weights(13, shape[0])
    x0, x1, ax = bilinear_weights(11, shape[1])
    rows = raw[y0] * (1 - ay)[:, None, None] + raw[y1] * ay[:, None, None]
    direct = rows[:, x0] * (1 - ax)[None, :, None] + rows[:, x1] * ax[None, :, None]
    np.testing.assert_allclose(interpolated_feature_norms(raw, 13, 11), np.linalg.norm(direct, axis=-1), rtol=1e-4)


def test_cosine_confidence_is_the_labels_cosine_clipped_at_zero():
    rng = np.random.default_rng(3)
    grid = rng.standard_normal((3, 4, 8)).astype(np.float16)
    text = rng.standard_normal((5, 8))
    up = upsample_feature_rows(grid, 9, 10)  # the plain twin's unit pixel features
    cosines = up @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    np.testing.assert_allclose(pixel_cosines(grid, text, 9, 10), cosines, atol=2e-5)
    labels, _ = labels_and_confidence(pixel_probabilities(grid, text, 9, 10, 0.05))
    label_cosine = np.take_along_axis(cosines, labels[..., None].astype(np.int64), axis=2)[..., 0]
    np.testing.assert_allclose(label_cosines(pixel_cosines(grid, text, 9, 10)), np.maximum(label_cosine, 0), atol=2e-5)
    assert (label_cosine < 0).any() and label_cosines(pixel_cosines(grid, text, 9, 10)).min() == 0.0
    # the probabilities are the softmax of these very cosines, to the bit
    np.testing.assert_array_equal(pixel_probabilities(grid, text, 9, 10, 0.05),
                                  softmax(pixel_cosines(grid, text, 9, 10) / np.float32(0.05)))


def test_extract_stores_the_cosine_confidence_when_asked_and_the_same_labels(tmp_path):
    root = write_tiny_blender(tmp_path / "data", views=3)
    runs = {}
    for confidence in ("softmax", "cosine"):
        params = Params.model_validate({"paths": {"artifacts": str(tmp_path / confidence), "metrics": str(tmp_path / "m")},
                                        "extract": {"confidence": confidence, "open_set_classes": []}})
        write_scene(read_scene(root), params.paths.artifact("ingest"), params={}, downscale=1, sparse_views=None,
                    max_init_points=1000, init_voxel_size=0.01, rng=np.random.default_rng(0))
        extract.run(params)
        runs[confidence] = zarr.open_group(params.paths.artifact("extract"), mode="r")
    softmax_run, cosine_run = runs["softmax"], runs["cosine"]
    np.testing.assert_array_equal(softmax_run["labels"][...], cosine_run["labels"][...])
    text = cosine_run["text_embeddings"][...]
    for v in range(3):
        expected = label_cosines(pixel_cosines(cosine_run["features"][v], text, 12, 16))
        np.testing.assert_array_equal(cosine_run["confidence"][v], expected)
    assert not np.allclose(cosine_run["confidence"][...], softmax_run["confidence"][...])


def test_labels_and_confidence_and_bad_temperature():
    probs = np.array([[[0.2, 0.8], [0.6, 0.4]]], np.float32)
    labels, conf = labels_and_confidence(probs)
    np.testing.assert_array_equal(labels, [[1, 0]])
    np.testing.assert_allclose(conf, [[0.8, 0.6]])
    assert labels.dtype == np.int16 and conf.dtype == np.float32
    with pytest.raises(EconsgError, match="temperature"):
        pixel_probabilities(np.ones((2, 2, 3)), np.ones((2, 3)), 4, 4, 0.0)
    with pytest.raises(EconsgError, match="text_embeddings"):
        pixel_probabilities(np.ones((2, 2, 3)), np.ones((2, 4)), 4, 4, 0.1)


def test_a_sparse_selection_leaves_the_teacher_unchanged_on_the_views_it_keeps(tmp_path):
    """The teacher's draws follow a view's place in the dataset, not in the selection: the held-out view (and
    every kept training view) gets the same features and labels in a sparse-view run as in the full run, so
    the two settings are scored against the same teacher baseline."""
    root = write_tiny_blender(tmp_path / "data", views=6)
    stores = {}
    for name, sparse_views in (("full", None), ("sparse", 2)):
        params = Params.model_validate({"paths": {"artifacts": str(tmp_path / name), "metrics": str(tmp_path / name / "m")}})
        write_scene(read_scene(root), params.paths.artifact("ingest"), params={}, downscale=1, sparse_views=sparse_views,
                    max_init_points=1000, init_voxel_size=0.01, rng=np.random.default_rng(0))
        extract.run(params)
        stores[name] = (open_scene(params.paths.artifact("ingest")), zarr.open_group(params.paths.artifact("extract"), mode="r"))
    (_, full), (sparse_scene, sparse) = stores["full"], stores["sparse"]
    assert sparse_scene.dataset_views.tolist() == [0, 4, 5]
    for v, dataset_view in enumerate(sparse_scene.dataset_views):
        np.testing.assert_array_equal(sparse["features"][v], full["features"][dataset_view])
        np.testing.assert_array_equal(sparse["labels"][v], full["labels"][dataset_view])
    # and the draws do differ from view to view, so the check above could fail
    assert not np.array_equal(full["features"][4], full["features"][5])


def test_a_one_class_vocabulary_is_warned_about_naming_the_class():
    from econsg.features.backends import one_class_warning

    assert "one class, 'chair': every pixel takes it at confidence 1" in one_class_warning(["chair"])
    assert one_class_warning(["chair", "wall"]) is None


def test_painted_masks_give_each_of_their_pixels_the_mask_feature_whatever_the_grid():
    """METHOD.md's mask crops: a mask's feature covers its own pixels, a 4-pixel mask on a 2 x 2 grid of a 12 x 16
    view included (painted on the grid, it would have lost them to its cell's majority)."""
    from econsg.features.base import softmax
    from tests.helpers import painted_example

    grid, painted, cube = painted_example()
    text = np.random.default_rng(1).standard_normal((3, grid.shape[2]))
    unit_text = text / np.linalg.norm(text, axis=1, keepdims=True)
    expected = softmax(cube @ unit_text.T.astype(np.float32) / np.float32(0.05))
    fast = pixel_probabilities(grid, text, 12, 16, 0.05, painted)
    np.testing.assert_allclose(fast, expected, atol=2e-5)
    np.testing.assert_allclose(pixel_probabilities_reference(grid, text, 12, 16, 0.05, painted), expected, atol=2e-5)
    np.testing.assert_allclose(upsample_feature_rows(grid, 12, 16, painted=painted), cube, atol=1e-6)
    small = painted.ids == 1
    assert small.sum() == 4 and np.allclose(fast[small], fast[small][0]), "the small mask's pixels share its feature"
    plain = pixel_probabilities(grid, text, 12, 16, 0.05)
    uncovered = painted.ids < 0
    np.testing.assert_array_equal(fast[uncovered], plain[uncovered])  # the grid's pixels are as without masks
