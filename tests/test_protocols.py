"""Benchmark scoring protocols on hand-made cases with known answers."""

import numpy as np
import pytest

from econsg.errors import EconsgError
from econsg.protocols import (
    box_smooth,
    majority_smooth,
    scannet_subset,
    scannet_subset_names,
    score_lerf,
    score_ovs3d,
    score_paper,
    summarise_lerf,
)
from econsg.scene.readers.lerf import LerfQueryTruth


def test_score_paper_over_present_classes_accumulates_views():
    gt = np.array([[[0, 0], [1, -1]], [[1, 1], [1, 1]]])
    pred = np.array([[[0, 1], [1, 2]], [[1, 1], [1, -1]]])
    scores = score_paper(pred, gt, 3)
    # class 0: tp 1, gt 2, pred 1 -> IoU 1/2, acc 1/2; class 1: tp 4, gt 5, pred 5 -> IoU 4/6, acc 4/5; class 2 absent
    assert scores["present"] == [0, 1]
    assert scores["miou"] == pytest.approx((1 / 2 + 4 / 6) / 2)
    assert scores["macc"] == pytest.approx((1 / 2 + 4 / 5) / 2)
    assert np.isnan(scores["per_class_iou"][2])


def test_score_ovs3d_counts_all_classes_and_subset_accuracy():
    masks = np.zeros((3, 2, 2), bool)
    masks[0] = [[1, 1], [0, 0]]
    masks[1] = [[0, 0], [1, 0]]  # pixel (1, 1) has no class; class 2 is absent
    pred = np.array([[0, 1], [1, 1]])
    scores = score_ovs3d(pred, masks, ["a", "b", "c"])
    # IoU a = 1/2, b = 1/3 (inter 1, union 3), c = 0 (empty union counts 0): mean over all 3 classes
    assert scores["miou"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert scores["per_class_iou"]["b"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == pytest.approx(0.5)  # (0,0) and (1,0) right; the unlabelled pixel is always wrong


def test_score_ovs3d_counts_a_pixel_no_gaussian_reached_as_wrong():
    masks = np.zeros((2, 2, 2), bool)
    masks[0] = [[1, 1], [0, 0]]
    masks[1] = [[0, 0], [1, 0]]  # pixel (1, 1) has no class
    scores = score_ovs3d(np.array([[0, -1], [1, -1]]), masks, ["a", "b"])
    # a: inter 1, union 2; b: 1 of 1; accuracy: (0,0) and (1,0) right, the unreached ones wrong, unlabelled or not
    assert scores["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1.0}) and scores["accuracy"] == pytest.approx(0.5)
    with pytest.raises(EconsgError, match=r"expected 0..1 \(argmax over classes.txt\) or -1"):
        score_ovs3d(np.array([[0, -2], [1, 1]]), masks, ["a", "b"])


def test_score_ovs3d_means_over_views_and_validates():
    masks = np.stack([np.eye(2, dtype=bool)[:, :, None].repeat(2, 2)] * 2)  # [V=2, C=2, 2, 2]: class c = row c
    pred = np.array([[[0, 0], [1, 1]], [[1, 1], [1, 1]]])
    scores = score_ovs3d(pred, masks, ["x", "y"])
    assert scores["per_view_miou"] == pytest.approx([1.0, (0 + 0.5) / 2])
    assert scores["miou"] == pytest.approx(0.625) and scores["accuracy"] == pytest.approx(0.75)
    with pytest.raises(EconsgError, match="expected 0..1"):
        score_ovs3d(pred + 1, masks, ["x", "y"])
    with pytest.raises(EconsgError, match="expected"):
        score_ovs3d(pred, masks[:, :1], ["x", "y"])


def test_box_smooth_matches_a_reflect101_box_sum():
    rng = np.random.default_rng(1)
    image = rng.random((37, 41))
    padded = np.pad(image, 15, mode="reflect")  # numpy 'reflect' = OpenCV BORDER_REFLECT_101
    brute = np.array([[padded[i : i + 30, j : j + 30].mean() for j in range(41)] for i in range(37)])  # rows i-15..i+14
    np.testing.assert_allclose(box_smooth(image), brute, atol=1e-12)


def test_majority_smooth_window_quirks():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 5:] = 1
    out = majority_smooth(mask)
    assert out[4, 5] == 1 and out[4, 4] == 0  # 4 of 7 columns vs 3 of 7
    single = np.zeros((10, 10), np.uint8)
    single[4, 4] = 1
    assert majority_smooth(single).sum() == 0  # isolated pixels vanish
    tie = np.zeros((10, 10), np.uint8)
    tie[:, 7:] = 1  # pixel (5, 9): window columns 6..8 (the last column is excluded): 2 ones, 1 zero
    assert majority_smooth(tie)[5, 9] == 1 and majority_smooth(tie)[5, 6] == 0


def half_plane(height=40, width=80, right=True):
    mask = np.zeros((height, width), bool)
    if right:
        mask[:, width // 2 :] = True
    else:
        mask[:, : width // 2] = True
    return mask


def test_score_lerf_localization_and_iou_known_answers():
    right = half_plane()
    relevancy = np.stack([right.astype(float), right.astype(float)])  # [Q=2, H, W]
    truths = [
        LerfQueryTruth("mug", np.array([[60, 10, 70, 20]]), right),  # peak plateau (cols >= 55) is inside the box
        LerfQueryTruth("plate", np.array([[0, 0, 10, 10], [20, 30, 10, 35]]), half_plane(right=False)),
    ]
    scores = score_lerf(relevancy, truths)
    assert scores["hit"] == [True, False]
    # v = (smooth + r) / 2 is 0.75 at the step's first column and <= 0.25 left of it: threshold 0.4 on 2v - 1
    # keeps exactly the right half, and the majority vote keeps a straight edge
    assert scores["iou"] == pytest.approx([1.0, 0.0])
    # threshold 0.9 keeps 2v - 1 > 0.9, i.e. box coverage (j - 25) / 30 > 0.9: columns 53..79 of the 40 right ones
    assert score_lerf(relevancy[:1], truths[:1], threshold=0.9)["iou"] == pytest.approx([27 / 40])
    assert summarise_lerf([scores, scores]) == {"localization_accuracy": 0.5, "miou": 0.5, "queries": 4}


def test_score_lerf_picks_the_level_with_the_highest_peak():
    right = half_plane()
    weak = 0.2 * half_plane(right=False).astype(float)  # level 0 points at the wrong half, weakly
    strong = right.astype(float)
    scores = score_lerf(np.stack([weak, strong])[:, None], [(np.array([60, 10, 70, 20]), right)])
    assert scores["localization_level"] == [1] and scores["iou_level"] == [1]
    assert scores["hit"] == [True] and scores["iou"] == pytest.approx([1.0])
    with pytest.raises(EconsgError, match="expected"):
        score_lerf(np.zeros((3, 40, 80)), [(np.zeros(4), right)])


def test_scannet_subsets():
    names19, names15, names10 = (scannet_subset_names(k) for k in (19, 15, 10))
    assert len(names19) == 19 and len(names15) == 15 and len(names10) == 10
    assert "otherfurniture" not in names19 and set(names10) <= set(names15) <= set(names19)
    labels = np.array([0, 10, 32, 38, -1, 23])  # wall, picture, toilet, otherfurniture, unlabelled, refrigerator
    assert scannet_subset(labels, 19).tolist() == [0, 10, 16, -1, -1, 14]
    assert scannet_subset(labels, 15).tolist() == [0, -1, 13, -1, -1, -1]
    assert scannet_subset(labels, 10).tolist() == [0, -1, 9, -1, -1, -1]
    with pytest.raises(EconsgError, match="not one of"):
        scannet_subset(labels, 20)
    with pytest.raises(EconsgError, match=r"\[40\]"):
        scannet_subset(np.array([40]), 19)
