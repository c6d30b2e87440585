"""Segmentation metrics and multi-view consistency on hand-made cases with known answers."""

import numpy as np
import pytest

from econsg.errors import EconsgError
from econsg.evaluation import gaussian_ground_truth_labels, rescore_evaluate, selection_iou
from econsg.metrics import confusion_matrix, miou, multiview_consistency, segmentation_scores

IGN = -1


def test_confusion_rows_gt_columns_pred_and_ignore_handling():
    gt = np.array([0, 0, 1, IGN, 2])
    pred = np.array([0, 1, 1, 2, IGN])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.shape == (3, 4) and conf.dtype == np.int64
    expected = np.zeros((3, 4), np.int64)
    expected[0, 0] = 1
    expected[0, 1] = 1
    expected[1, 1] = 1
    expected[2, 3] = 1  # an IGNORE prediction goes to the "no prediction" column
    np.testing.assert_array_equal(conf, expected)  # the gt-IGNORE pixel is not counted at all


def test_confusion_accepts_maps_and_sums_over_views():
    gt = np.array([[0, 1], [1, 1]])
    pred = np.array([[0, 0], [1, 1]])
    total = confusion_matrix(pred, gt, 2) + confusion_matrix(pred.reshape(-1), gt.reshape(-1), 2)
    assert total.sum() == 8 and total[1, 0] == 2 and total[1, 1] == 4


def test_scores_known_values_with_absent_class_and_ignore():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, IGN])
    pred = np.array([0, 0, 1, 1, 1, 3, IGN, 2])
    scores = segmentation_scores(confusion_matrix(pred, gt, 4))
    # class 0: tp 2, gt 3, pred 2; class 1: tp 2, gt 2, pred 3; class 2: tp 0, gt 2; class 3 absent
    np.testing.assert_allclose(scores["iou"][:3], [2 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(scores["acc"][:3], [2 / 3, 1.0, 0.0])
    assert np.isnan(scores["iou"][3]) and np.isnan(scores["acc"][3])
    assert scores["present"].tolist() == [True, True, True, False]
    assert scores["miou"] == pytest.approx(4 / 9)
    assert scores["macc"] == pytest.approx(5 / 9)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 7)
    assert scores["num_present"] == 3


def test_ignore_prediction_counts_as_wrong():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, IGN, 1, 1])
    scores = segmentation_scores(confusion_matrix(pred, gt, 2))
    assert scores["acc"][0] == pytest.approx(0.5)
    assert scores["iou"][0] == pytest.approx(0.5)
    assert scores["iou"][1] == pytest.approx(1.0)  # the miss is not a false positive of class 1
    assert miou(pred, gt, 2) == pytest.approx(0.75)


def test_predicted_but_absent_class_only_lowers_nothing_but_itself():
    gt = np.array([0, 0, 0, 0])
    assert miou(np.array([0, 0, 0, 1]), gt, 2) == pytest.approx(0.75)  # only class 0 is averaged
    assert miou(np.array([0, 0, 0, 0]), gt, 2) == pytest.approx(1.0)


def test_square_confusion_accepted_and_nothing_present_is_nan():
    scores = segmentation_scores(np.array([[3, 1], [0, 0]]))
    assert scores["miou"] == pytest.approx(0.75) and scores["present"].tolist() == [True, False]
    assert np.isnan(segmentation_scores(np.zeros((2, 3), np.int64))["miou"])


def test_bad_inputs_raise():
    with pytest.raises(EconsgError, match="shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(EconsgError, match=r"ground-truth ids \[5\]"):
        confusion_matrix(np.zeros(2, int), np.array([0, 5]), 2)
    with pytest.raises(EconsgError, match="integer"):
        confusion_matrix(np.zeros(2), np.zeros(2, int), 2)
    with pytest.raises(EconsgError, match=r"\[C, C\]"):
        segmentation_scores(np.zeros((2, 5)))


# ---- multi-view consistency: a fronto-parallel plane z = 2 seen by two cameras -----------------------

FX, H, W, Z = 10.0, 4, 8, 2.0
K = np.array([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]])


def camera_at(x: float, y: float = 0.0) -> np.ndarray:
    c2w = np.eye(4)
    c2w[0, 3], c2w[1, 3] = x, y
    return c2w


def world_x_labels(c2w: np.ndarray) -> np.ndarray:
    """Label 1 where the world X of the plane point seen through each pixel centre is > 0, else 0."""
    u = np.arange(W) + 0.5
    world_x = (u - K[0, 2]) * Z / FX + c2w[0, 3]
    return np.tile((world_x > 0).astype(np.int16), (H, 1))


def test_consistency_is_one_for_world_consistent_labels():
    # B sits 0.2 m to the right: a shift of exactly FX * 0.2 / Z = 1 pixel, so centres map onto centres
    a, b = camera_at(0.0), camera_at(0.2)
    depth = np.full((H, W), Z)
    agree, count = multiview_consistency(depth, K, a, world_x_labels(a), depth, K, b, world_x_labels(b))
    assert agree == pytest.approx(1.0)
    assert count == H * (W - 1)  # A's first column falls left of B's image


def test_consistency_known_fraction_occlusion_and_ignore():
    a, b = camera_at(0.0), camera_at(0.2)
    depth = np.full((H, W), Z)
    labels_a = np.zeros((H, W), np.int16)
    labels_b = np.zeros((H, W), np.int16)
    labels_b[:, 0] = 1  # A's column 1 lands on B's column 0: 4 disagreements of 28
    agree, count = multiview_consistency(depth, K, a, labels_a, depth, K, b, labels_b)
    assert count == 28 and agree == pytest.approx(24 / 28)

    occluded = depth.copy()
    occluded[:, 3] = 1.0  # something in front of the plane in B's column 3: A's column 4 is hidden
    labels_b[0, 5] = IGN  # and one B pixel is unlabelled
    agree, count = multiview_consistency(depth, K, a, labels_a, occluded, K, b, labels_b)
    assert count == 28 - 4 - 1 and agree == pytest.approx(19 / 23)


def test_consistency_rotated_view_and_nothing_visible():
    a = np.eye(4)
    angle = np.deg2rad(8.0)
    b = np.eye(4)
    b[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    b[0, 3] = -0.3
    # B's z-depth of the plane Z = 2 through each pixel centre: ray d = R K^-1 [u, v, 1], t = (2 - o_z) / d_z
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = b[:3, :3] @ (np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)]))
    depth_b = ((Z - b[2, 3]) / rays[2]).reshape(H, W)
    labels = np.full((H, W), 3, np.int16)
    agree, count = multiview_consistency(np.full((H, W), Z), K, a, labels, depth_b, K, b, labels)
    assert agree == pytest.approx(1.0) and count > H * W // 2
    behind = np.eye(4)
    behind[:3, :3] = np.diag([-1.0, 1.0, -1.0])  # looking away from the plane
    agree, count = multiview_consistency(np.full((H, W), Z), K, a, labels, depth_b, K, behind, labels)
    assert count == 0 and np.isnan(agree)


def test_gaussian_ground_truth_labels_vote_on_the_visible_surface_only():
    K = np.array([[4.0, 0, 4.0], [0, 4.0, 4.0], [0, 0, 1]])
    c2w = np.eye(4)[None].repeat(2, axis=0)
    gt = np.zeros((8, 8), np.int64)
    gt[:, 4:] = 1
    gt[:2, :] = -1  # unlabelled rows
    depth = np.full((8, 8), 2.0)
    # on the surface at the left half, on the surface at the right half, in front of the surface (not what the
    # view sees), outside the image, on the surface over an unlabelled row
    means = np.array([[-1.0, 0.5, 2.0], [1.0, 0.5, 2.0], [-1.0, 0.5, 1.0], [9.0, 0.0, 2.0], [0.0, -1.7, 2.0]])
    labels = gaussian_ground_truth_labels(means, [0, 1], classes=lambda v: gt, depth=lambda v: depth, Ks=K[None].repeat(2, 0),
                                          c2w=c2w, num_classes=2)
    assert labels.tolist() == [0, 1, -1, -1, -1]


def test_selection_iou_counts_only_the_gaussians_a_view_sees_and_is_nan_for_an_absent_class():
    labels = np.array([0, 0, 0, 1, 1, IGN, IGN])
    # selects two of class 0's three, one of class 1's and both unseen ones: 2 / (3 + 1)
    selected = np.array([True, True, False, True, False, True, True])
    assert selection_iou(selected, labels, 0) == pytest.approx(0.5)
    assert selection_iou(selected, labels, 1) == pytest.approx(1 / 4)  # Gaussian 3 right; 0 and 1 wrong, 4 missed
    assert selection_iou(labels == 0, labels, 0) == 1.0
    assert selection_iou(np.zeros(7, bool), labels, 0) == 0.0
    assert np.isnan(selection_iou(selected, labels, 2))


def _evaluate_group(path, pred, teacher, gt, names, vocabulary, has_truth=True):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    for name, value in (("pred_labels", pred), ("teacher_labels", teacher), ("gt_labels", gt)):
        group.create_array(name, data=np.asarray(value, np.int16))
    group.attrs.update({"class_names": names, "eval_vocabulary": vocabulary, "has_ground_truth": has_truth})
    return group


def test_rescore_evaluate_known_values_over_views_subsets_and_the_teacher(tmp_path):
    gt = [[[0, 0, 1, 1]], [[2, 2, -1, 0]]]  # two one-row views; -1 ignored
    pred = [[[0, 1, 1, 1]], [[2, 0, 1, 0]]]  # class 0: TP 2, gt 3, pred 3 -> 0.5; class 1: 2/3; class 2: 1/2
    teacher = [[[0, 0, 1, 1]], [[2, 2, 2, 0]]]  # perfect where labelled
    group = _evaluate_group(tmp_path / "e.zarr", pred, teacher, gt, ["a", "b", "c", "d"], ["a", "b", "c", "d"])
    result = rescore_evaluate(group)
    assert result["classes"] == ["a", "b", "c"], "class d has no ground-truth pixel and enters no mean"
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert result["macc"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert result["teacher_miou"] == pytest.approx(1.0)
    assert result["per_class"]["a"] == {"iou": pytest.approx(0.5), "acc": pytest.approx(2 / 3),
                                        "teacher_iou": pytest.approx(1.0), "pixels": 3}
    only = rescore_evaluate(group, ["b", "c"])
    assert only["classes"] == ["b", "c"] and only["miou"] == pytest.approx((2 / 3 + 0.5) / 2)
    twice = rescore_evaluate(group, ["b", "c", "c"])
    assert twice["classes"] == ["b", "c"] and twice["miou"] == pytest.approx(only["miou"]), "a class given twice counts once"


def test_rescore_evaluate_defaults_to_the_evaluation_vocabulary_and_names_bad_input(tmp_path):
    gt = [[[0, 1, 2]]]
    group = _evaluate_group(tmp_path / "e.zarr", gt, gt, gt, ["a", "b", "c"], ["a", "c"])
    assert rescore_evaluate(group)["classes"] == ["a", "c"]
    with pytest.raises(EconsgError, match=r"\['sofa'\] are not classes of this scene"):
        rescore_evaluate(group, ["a", "sofa"])
    with pytest.raises(EconsgError, match=r"exclude: \['cc'\] are not classes"):  # a misspelt exclusion is not ignored
        rescore_evaluate(group, exclude=["cc"])
    assert rescore_evaluate(group, exclude=["c"])["classes"] == ["a"]
    with pytest.raises(EconsgError, match=r"no class is left .*\(chose \['a'\], excluded \['a'\]\); expected some of \['a', 'c'\]"):
        rescore_evaluate(group, ["a"], exclude=["a"])  # nothing left to average: no mean of nothing
    unlabelled = _evaluate_group(tmp_path / "u.zarr", gt, gt, gt, ["a", "b", "c"], ["a"], has_truth=False)
    with pytest.raises(EconsgError, match="no ground-truth label maps, so there is nothing to score against here"):
        rescore_evaluate(unlabelled)


def test_rescore_ignores_pixels_of_classes_the_evaluation_vocabulary_lacks(tmp_path):
    """A vocabulary without 'b' cannot name b's pixels: they are ignored, not counted against the class they got
    (as evaluate and the ScanNet-subset protocol score them)."""
    gt = [[[0, 0, 1, 1, 2, 2]]]
    pred = [[[0, 0, 0, 0, 2, 2]]]  # b's pixels went to a, the nearest class the vocabulary has
    group = _evaluate_group(tmp_path / "e.zarr", pred, pred, gt, ["a", "b", "c"], ["a", "c"])
    result = rescore_evaluate(group)
    assert result["classes"] == ["a", "c"] and result["miou"] == pytest.approx(1.0)
    assert result["per_class"]["a"]["pixels"] == 2
    with pytest.raises(EconsgError, match=r"classes: \['b'\] are not in this run's evaluation vocabulary"):
        rescore_evaluate(group, ["a", "b"])


def test_stage_scores_read_a_scene_without_labels_as_such_and_a_broken_one_as_an_error(tmp_path):
    from econsg.artifacts import ARTIFACT_SCHEMAS, ArtifactWriter
    from econsg.errors import ArtifactError
    from econsg.evaluation import score_crr_labels

    scene = tmp_path / "scene.zarr"
    with ArtifactWriter(scene, stage="ingest", params={}) as out:  # a scene store of the right arrays, no gt_class
        for name, dims in ARTIFACT_SCHEMAS["ingest"].items():
            out.create_array(name, (1,) * len(dims), "float32")
    score = dict(views=[0], raw=lambda v: np.zeros((2, 2), np.int16), refined=lambda v: np.zeros((2, 2), np.int16),
                 vocabulary=["a"])  # fmt: skip
    assert score_crr_labels(scene, **score) == {"has_ground_truth": False}
    with pytest.raises(ArtifactError):
        score_crr_labels(tmp_path / "missing.zarr", **score)


def test_crr_scores_count_a_word_the_scene_lacks_as_a_wrong_label_not_an_ignored_pixel(tmp_path):
    """A vocabulary word outside the scene's classes (a distractor) labels pixels wrongly; before, mapped to no scene
    class, its pixels were dropped from the refined scores as if crr had ignored them, a gain from nothing."""
    from econsg.artifacts import ARTIFACT_SCHEMAS, ArtifactWriter
    from econsg.evaluation import score_crr_labels

    scene = tmp_path / "scene.zarr"
    gt = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.int16)
    with ArtifactWriter(scene, stage="ingest", params={}) as out:
        for name, dims in ARTIFACT_SCHEMAS["ingest"].items():
            out.create_array(name, (1,) * len(dims), "float32")
        out.create_array("gt_class", (1, 2, 4), "int16", data=gt[None])
        out.attrs["class_names"] = ["wall", "bed"]
    labels = gt.copy()
    labels[0, :2] = 2  # "window", which the scene lacks, on half the wall
    same = dict(views=[0], raw=lambda v: labels, refined=lambda v: labels, vocabulary=["wall", "bed", "window"])
    scores = score_crr_labels(scene, **same)
    assert scores["refined_miou"] == scores["raw_miou"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["miou_gain"] == 0.0 and scores["refined_coverage"] == 1.0
    ignored = labels.copy()
    ignored[0, :2] = -1  # crr's ignore is left out of the refined scores
    scores = score_crr_labels(scene, **same | {"refined": lambda v: ignored})
    assert scores["refined_miou"] == 1.0 and scores["refined_coverage"] == 0.75


def test_view_bootstrap_collapses_on_identical_views_and_pairs_the_margin(tmp_path):
    names = ["a", "b", "c"]
    same = [[[0, 1, 1, 2]]] * 4
    wrong = [[[0, 0, 1, 2]]] * 4
    flat = rescore_evaluate(_evaluate_group(tmp_path / "same.zarr", wrong, same, same, names, names), bootstrap=200)
    assert flat["bootstrap"]["miou"] == pytest.approx([flat["miou"]] * 2), "every resample of identical views is the same"
    assert flat["bootstrap"]["over_teacher"] == pytest.approx([flat["miou"] - 1.0] * 2)
    # views that differ: econsg's interval opens, but where the teacher says the same as econsg the paired margin
    # stays 0 in every resample (an unpaired difference of the two intervals would not)
    gt = [[[0, 1, 1, 2]], [[0, 0, 0, 2]], [[1, 1, 2, 2]], [[0, 1, 2, 2]]]
    pred = [[[0, 1, 1, 2]], [[1, 1, 0, 2]], [[1, 1, 1, 1]], [[0, 0, 0, 2]]]
    group = _evaluate_group(tmp_path / "differ.zarr", pred, pred, gt, names, names)
    result = rescore_evaluate(group, bootstrap=300, seed=3)
    low, high = result["bootstrap"]["miou"]
    assert low < result["miou"] < high
    assert result["bootstrap"]["over_teacher"] == pytest.approx([0.0, 0.0])
    assert rescore_evaluate(group, bootstrap=300, seed=3)["bootstrap"] == result["bootstrap"], "seeded"
    assert result["bootstrap"]["scored"] == 300, "every resample holds a pixel of a, b or c"
    # class b lives in views 0, 2 and 3: a resample of view 1 alone (1 in 4^4 = 256 draws, 0.4 %) has no mean
    only_b = rescore_evaluate(group, ["b"], bootstrap=2000, seed=0)["bootstrap"]
    assert 0 < 2000 - only_b["scored"] < 40 and only_b["rounds"] == 2000
    assert "bootstrap" not in rescore_evaluate(group)


def test_confusion_picture_colours_each_cell_by_its_share_of_the_ground_truth_row():
    from econsg.viz import CONFUSION_ORIGIN, colour_scalar, confusion_picture

    # rows = ground truth: class 0 always predicted 1; class 1 half right, half 2; class 2 absent; the last column
    # (IGNORE predictions) counts in the row sum
    confusion = np.array([[0, 10, 0, 0], [0, 4, 2, 2], [0, 0, 0, 0]])
    cell = 20
    image = np.asarray(confusion_picture(confusion, ["a", "b", "c"], cell=cell))
    left, top = CONFUSION_ORIGIN

    def corner(i, j):  # a cell's top-left pixel, clear of the per-cent text in its middle
        return image[top + i * cell + 1, left + j * cell + 1].tolist()

    for (i, j), share in {(0, 1): 1.0, (0, 0): 0.0, (1, 1): 0.5, (1, 2): 0.25, (2, 2): 0.0}.items():
        assert corner(i, j) == colour_scalar(np.array([share], np.float32))[0].tolist(), (i, j)


def test_confusion_picture_prints_each_rows_unreached_share_only_where_there_is_one():
    """Pixels no Gaussian reached counted in a row's sum but were drawn nowhere: a wall row of 70 % right and 30 %
    unreached showed 70 and nothing else, under 'cells: % of the row's pixels'."""
    from econsg.viz import CONFUSION_ORIGIN, confusion_picture

    cell, names = 20, ["wall", "floor"]
    reached = np.asarray(confusion_picture(np.array([[70, 0, 0], [0, 100, 0]]), names, cell=cell))
    unreached = np.asarray(confusion_picture(np.array([[70, 0, 30], [0, 100, 0]]), names, cell=cell))
    assert unreached.shape[1] > reached.shape[1], "a 'none' column beside pixels and IoU"
    left, top = CONFUSION_ORIGIN

    def ink(image, i):  # dark pixels of row i's text right of the matrix (pixel count, IoU and any 'none' share)
        return int((image[top + i * cell : top + (i + 1) * cell, left + len(names) * cell :] < 128).sum())

    for i in (0, 1):  # the wall's 30 % and the floor's 0 %, so that the column reads as one
        assert ink(unreached, i) > ink(reached, i), i


def test_consistency_never_compares_a_source_pixel_labelled_ignore():
    a, b = camera_at(0.0), camera_at(0.2)  # A's column j lands on B's column j - 1; A's column 0 falls outside
    depth = np.full((H, W), Z)
    labels_a = np.zeros((H, W), np.int16)
    labels_a[:, 4] = IGN  # 4 of A's 28 in-view pixels carry no label: not compared
    agree, count = multiview_consistency(depth, K, a, labels_a, depth, K, b, np.zeros((H, W), np.int16))
    assert count == 28 - 4 and agree == 1.0


def test_consistency_depth_tolerance_is_relative_to_the_points_own_depth():
    a = camera_at(0.0)
    labels = np.zeros((H, W), np.int16)
    # B sees a surface at 2.105 where A's points lie at z = 2: |2.105 - 2| = 0.105 > 0.05 x 2, another surface
    agree, count = multiview_consistency(np.full((H, W), Z), K, a, labels, np.full((H, W), 2.105), K, a, labels)
    assert count == 0 and np.isnan(agree)
    agree, count = multiview_consistency(np.full((H, W), Z), K, a, labels, np.full((H, W), 2.095), K, a, labels)
    assert count == H * W and agree == 1.0  # 0.095 <= 0.1: the same surface


def test_consistency_backprojects_pixel_centres_in_both_axes():
    # B moved (0.05, 0.05) m: a quarter pixel. A's centre (j + 0.5, i + 0.5) lands at (j + 0.25, i + 0.25) in B:
    # the same pixel (i, j). Through a pixel corner (j, i) it would land at (j - 0.25, i - 0.25): pixel (i-1, j-1).
    a, b = camera_at(0.0), camera_at(0.05, 0.05)
    depth = np.full((H, W), Z)
    ids = np.arange(H * W, dtype=np.int16).reshape(H, W)  # every pixel its own label
    agree, count = multiview_consistency(depth, K, a, ids, depth, K, b, ids)
    assert count == H * W and agree == 1.0


def test_confusion_refuses_negative_gt_ids_other_than_the_ignore_value():
    with pytest.raises(EconsgError, match=r"ground-truth ids \[-2\]"):
        confusion_matrix(np.zeros(2, int), np.array([0, -2]), 2)
    conf = confusion_matrix(np.array([0, 1]), np.array([0, 255]), 2, ignore=255)  # 255 is the ignore value here
    assert conf.tolist() == [[1, 0, 0], [0, 0, 0]]


def test_a_null_consistency_is_said_with_its_reason(capsys):
    from stages.evaluate import reported_consistency

    assert reported_consistency(0.9, 3) == 0.9 and capsys.readouterr().err == ""
    assert reported_consistency(None, 1) is None
    assert "consistency is null" in (err := capsys.readouterr().err) and "one held-out view" in err
    assert reported_consistency(None, 4) is None and "of the 4 held-out views" in capsys.readouterr().err
