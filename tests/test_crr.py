"""CRR on hand-built views whose answers are known (METHOD.md section 2, steps a-d)."""

import numpy as np
import pytest

from econsg.config.crr import CrrParams
from econsg.crr import (
    QUANTILE_BINS,
    IGNORE,
    crr_threshold,
    identity_crr,
    map_refined_features,
    mask_class_mean_features,
    refine_labels_crr,
)
from econsg.errors import EconsgError
from econsg.features.base import upsample_feature_rows

C = 3


def make_probs(labels, confidence):
    """probs with p(label) = confidence and the rest shared equally by the other classes."""
    H, W = labels.shape
    probs = np.repeat(((1 - confidence) / (C - 1))[..., None], C, axis=2).astype(np.float32)
    np.put_along_axis(probs, labels[..., None].astype(np.int64), confidence[..., None], axis=2)
    return probs


def view(labels, confidence, masks, D=4):
    labels = np.asarray(labels, np.int16)
    confidence = np.asarray(confidence, np.float32)
    grid = np.tile(np.eye(D, dtype=np.float32)[0], labels.shape + (1,))
    return labels, make_probs(labels, confidence), np.asarray(masks, bool), grid


def run(labels, confidence, masks, tau1=0.7, min_votes=2, tau2=0.0):
    l, p, m, f = view(labels, confidence, masks)
    return refine_labels_crr(l, p, m, f, tau1_value=tau1, min_votes=min_votes, tau2=tau2)


# one row of 6 pixels: the first five lie in mask 0; pixel 4 is uncertain
LABELS = [[0, 0, 1, 0, 2, 1]]
CONF = [[0.9, 0.9, 0.9, 0.8, 0.5, 0.4]]
MASK0 = [[1, 1, 1, 1, 1, 0]]


def test_majority_vote_labels_uncertain_pixels_and_keeps_confident_ones():
    r = run(LABELS, CONF, [MASK0])
    assert r.mask_labels.tolist() == [0]  # votes: 0, 0, 1, 0 -> class 0
    # the confident dissenter (pixel 2, class 1) keeps its label; pixel 4 takes the mask's; pixel 5 has no mask
    assert r.refined_labels.tolist() == [[0, 0, 1, 0, 0, IGNORE]]
    assert r.high_confidence.tolist() == [[True, True, True, True, False, False]]
    assert r.covering_mask.tolist() == [[0, 0, 0, 0, 0, -1]]
    assert r.counts["labelled_by_mask"] == 1 and r.counts["changed"] == 1 and r.counts["ignored"] == 1


def test_tau1_thresholds_the_confidence_it_is_given_and_tau2_the_probability():
    """Under extract.confidence: cosine, k is the label's cosine, not its probability: tau1 (chosen from k) must
    threshold k, while tau2 still reads the probability of the final label."""
    labels, probs, masks, grid = view(LABELS, CONF, [MASK0])
    cosines = np.array([[0.3, 0.1, 0.3, 0.3, 0.05, 0.3]], np.float32)  # pixel 1 confident by probability, not by k
    r = refine_labels_crr(labels, probs, masks, grid, tau1_value=0.2, min_votes=2, tau2=0.45, confidence=cosines)
    assert r.high_confidence.tolist() == [[True, False, True, True, False, True]]
    # pixel 1 takes its mask's label; pixels 4 (mask label 0 at p 0.25) and 5 (high by k, p 0.4) fall to tau2
    assert r.refined_labels.tolist() == [[0, 0, 1, 0, IGNORE, IGNORE]]
    assert r.counts["ignored_by_tau2"] == 2 and r.counts["labelled_by_mask"] == 1
    with pytest.raises(EconsgError, match="confidence: got shape"):
        refine_labels_crr(labels, probs, masks, grid, tau1_value=0.2, min_votes=2, tau2=0.0, confidence=cosines.T)


def test_min_votes_leaves_a_mask_unlabelled():
    r = run(LABELS, CONF, [MASK0], min_votes=5)  # only 4 high-confidence pixels in the mask
    assert r.mask_labels.tolist() == [IGNORE]
    assert r.refined_labels.tolist() == [[0, 0, 1, 0, IGNORE, IGNORE]]
    assert (r.covering_mask == -1).all()


def test_smaller_mask_wins_overlaps():
    small = [[0, 0, 1, 0, 1, 0]]  # votes: pixel 2 (class 1) only; covers uncertain pixel 4
    r = run(LABELS, CONF, [MASK0, small], min_votes=1)
    assert r.mask_labels.tolist() == [0, 1]
    assert r.refined_labels[0, 4] == 1 and r.covering_mask[0, 4] == 1
    # order of the masks in the list does not matter
    r2 = run(LABELS, CONF, [small, MASK0], min_votes=1)
    assert r2.refined_labels[0, 4] == 1 and r2.covering_mask[0, 4] == 0


def test_unlabelled_smaller_mask_does_not_hide_a_labelled_larger_one():
    small = [[0, 0, 0, 0, 1, 1]]  # no high-confidence pixel inside -> no label
    r = run(LABELS, CONF, [MASK0, small], min_votes=1)
    assert r.mask_labels.tolist() == [0, IGNORE]
    assert r.refined_labels.tolist() == [[0, 0, 1, 0, 0, IGNORE]]


def test_tau2_drops_pixels_unlikely_under_their_final_label():
    labels = [[0, 0, 0, 1, 1]]
    conf = [[0.9, 0.9, 0.9, 0.6, 0.3]]
    # pixel 3: label 1 with 0.6 -> p(class 0) = 0.2; pixel 4: label 1 with 0.3 -> p(class 0) = 0.35
    r = run(labels, conf, [[[1, 1, 1, 1, 1]]], tau2=0.3)
    assert r.refined_labels.tolist() == [[0, 0, 0, IGNORE, 0]]
    assert r.counts["ignored_by_tau2"] == 1
    r0 = run(labels, conf, [[[1, 1, 1, 1, 1]]], tau2=0.0)
    assert r0.refined_labels.tolist() == [[0, 0, 0, 0, 0]]


def test_ignore_raw_labels_neither_vote_nor_count_as_confident():
    labels = [[IGNORE, IGNORE, 2, 2]]
    conf = [[1.0, 1.0, 0.9, 0.9]]
    l = np.asarray(labels, np.int16)
    probs = make_probs(np.maximum(l, 0), np.asarray(conf, np.float32))
    r = refine_labels_crr(l, probs, np.ones((1, 1, 4), bool), np.ones((1, 1, 2)), tau1_value=0.7, min_votes=2, tau2=0.0)
    assert r.mask_labels.tolist() == [2]
    assert r.high_confidence.tolist() == [[False, False, True, True]]
    assert r.refined_labels.tolist() == [[2, 2, 2, 2]]


def test_no_masks_keeps_only_confident_pixels():
    r = run(LABELS, CONF, np.zeros((0, 1, 6)))
    assert r.refined_labels.tolist() == [[0, 0, 1, 0, IGNORE, IGNORE]]
    assert r.mask_labels.shape == (0,) and r.mask_class_features.shape == (0, 4)


def test_refined_features_are_mask_class_means():
    # full-resolution grid (h = H, w = W) so pixel features are the grid cells themselves
    labels = np.array([[0, 0, 1, 0]], np.int16)
    conf = np.array([[0.9, 0.9, 0.9, 0.2]], np.float32)
    grid = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]], np.float32)
    masks = np.array([[[1, 1, 1, 1]]], bool)
    r = refine_labels_crr(labels, make_probs(labels, conf), masks, grid, tau1_value=0.7, min_votes=1, tau2=0.0)
    assert r.refined_labels.tolist() == [[0, 0, 1, 0]]
    assert r.pair_index.tolist() == [[0, 0], [0, 1]]
    mean0 = np.array([1, 1, 0]) / np.sqrt(2)  # mean of class-0 confident pixels 0 and 1, renormalised
    np.testing.assert_allclose(r.mask_class_features[0], mean0, atol=1e-3)
    np.testing.assert_allclose(r.mask_class_features[1], [0, 0, 1], atol=1e-3)
    assert r.feature_source.tolist() == [[0, 0, 1, 0]]
    refined = map_refined_features(lambda rows: rows, grid, r.feature_source, r.mask_class_features, 1, 4)
    np.testing.assert_allclose(refined[0, 3], mean0, atol=1e-3)  # the uncertain pixel takes the mean too
    np.testing.assert_allclose(refined[0, 2], [0, 0, 1], atol=1e-3)


def test_map_refined_features_maps_each_distinct_feature_once_a_chunk_at_a_time():
    rng = np.random.default_rng(1)
    H, W, D = 7, 10, 6
    grid = rng.standard_normal((3, 4, D)).astype(np.float16)
    table = rng.standard_normal((3, D)).astype(np.float16)
    source = rng.integers(-1, 3, (H, W)).astype(np.int32)
    own = source < 0
    calls = []

    def fn(rows):
        calls.append(len(rows))
        return rows[:, :2] * 2  # any row-wise map: here to k = 2

    mapped = map_refined_features(fn, grid, source, table, H, W, chunk_pixels=5)
    assert calls[0] == 3 and sum(calls) == 3 + own.sum() and max(calls[1:]) == 5  # each feature once, 5 at a time
    expected = upsample_feature_rows(grid, H, W)
    expected[~own] = table.astype(np.float32)[source[~own]]
    np.testing.assert_array_equal(mapped, expected[..., :2] * 2)  # the same numbers as the full up-sampled map
    whole = map_refined_features(lambda rows: rows, grid, source, table, H, W)
    np.testing.assert_array_equal(whole, expected)
    every_pixel_own = map_refined_features(lambda rows: rows, grid, np.full((H, W), -1, np.int32), table, H, W)
    np.testing.assert_array_equal(every_pixel_own, upsample_feature_rows(grid, H, W))
    calls.clear()
    map_refined_features(fn, grid, np.zeros((H, W), np.int32), table, H, W)
    assert calls == [3]
    with pytest.raises(EconsgError, match="feature_source: row 3 out of range"):
        map_refined_features(fn, grid, np.full((H, W), 3, np.int32), table, H, W)


def test_mask_class_means_match_brute_force_on_an_upsampled_grid():
    rng = np.random.default_rng(0)
    H, W, D = 9, 12, 5
    grid = rng.standard_normal((3, 4, D)).astype(np.float32)
    labels = rng.integers(0, 2, (H, W)).astype(np.int16)
    high = rng.random((H, W)) < 0.6
    masks = rng.random((2, H, W)) < 0.5
    pairs = np.array([[0, 0], [0, 1], [1, 1]], np.int32)
    fast = mask_class_mean_features(grid, masks, labels, high, pairs)
    pixels = upsample_feature_rows(grid, H, W)
    for row, (m, c) in enumerate(pairs):
        mean = pixels[masks[m] & high & (labels == c)].mean(0)
        np.testing.assert_allclose(fast[row], mean / np.linalg.norm(mean), atol=1e-5)


def test_thresholds_absolute_relative_quantile():
    a = np.array([[0.2, 0.8]], np.float32)
    b = np.array([[0.1, 0.6]], np.float32)
    np.testing.assert_allclose(crr_threshold([a, b], mode="absolute", tau1=0.7), [0.7, 0.7])
    np.testing.assert_allclose(crr_threshold([a, b], mode="relative", tau1=0.5), [0.4, 0.3])
    values = np.linspace(0, 1, 1001, dtype=np.float32)[None]
    q = crr_threshold(iter([values[:, :500], values[:, 500:]]), mode="quantile", tau1=0.25)  # a generator streams
    assert q.shape == (2,) and q[0] == q[1] and abs(q[0] - 0.25) < 2e-3


def test_a_quantile_in_a_crowded_bin_keeps_the_share_asked_for():
    """A confident teacher puts half its pixels above 0.99976, in the histogram's last bin: the 0.55 quantile falls
    inside that bin and must keep about 45 %, not take the bin's upper edge (1.0) and keep none."""
    rng = np.random.default_rng(0)
    last_bin = 1.0 - 1.0 / QUANTILE_BINS
    confident = np.concatenate([rng.uniform(0.0, 0.5, 50_000), rng.uniform(last_bin, 1.0, 50_000)])
    tau1 = crr_threshold([confident], mode="quantile", tau1=0.55)[0]
    assert (confident >= tau1).mean() == pytest.approx(0.45, abs=0.01)
    uniform = rng.uniform(0.0, 1.0, 100_000).astype(np.float32)
    for q in (0.3, 0.55, 0.9):
        assert (uniform >= crr_threshold([uniform], mode="quantile", tau1=q)[0]).mean() == pytest.approx(1 - q, abs=0.005)


def test_a_quantile_at_a_block_of_equal_confidences_keeps_the_block():
    """60 % of the pixels at 0.5 and 40 % at 0.9: the exact 0.55 quantile is 0.5, which keeps every pixel; a threshold
    interpolated inside 0.5's bin as if its values were spread would drop the whole block."""
    confidence = np.concatenate([np.full(6_000, 0.5), np.full(4_000, 0.9)]).astype(np.float32)
    tau1 = crr_threshold([confidence[:5_000], confidence[5_000:]], mode="quantile", tau1=0.55)[0]
    assert tau1 == pytest.approx(np.quantile(confidence, 0.55)) and (confidence >= tau1).all()


def test_a_quantile_never_passes_the_largest_value_of_its_bin():
    """Nine in ten pixels just above a bin's lower edge: interpolated as if spread over the bin, the 0.91 quantile
    landed above every value in it and kept no pixel at all; capped at the bin's largest value, it keeps those."""
    from econsg.crr import QUANTILE_BINS

    low = np.float32(3686.01 / QUANTILE_BINS)  # just above a bin's lower edge
    top = np.nextafter(np.nextafter(low, np.float32(1)), np.float32(1))
    confidence = np.concatenate([np.full(100, 0.3), np.full(899, low), [top]]).astype(np.float32)
    tau1 = crr_threshold([confidence], mode="quantile", tau1=0.91)[0]
    assert low < tau1 <= top and (confidence >= tau1).any()


def test_a_vanishing_quantile_is_the_smallest_confidence():
    """A quantile below 1e-12 searched the histogram's empty bins below the first value and came out -inf, which crr
    then refused as a bad view; it is the smallest confidence, and keeps every labelled pixel."""
    confidence = np.random.default_rng(0).uniform(0.3, 0.9, 1_000).astype(np.float32)
    for q in (1e-15, 1e-12):
        tau1 = crr_threshold([confidence], mode="quantile", tau1=q)[0]
        assert tau1 == confidence.min() and (confidence >= tau1).all()


def test_bad_arguments_are_refused():
    l, p, m, f = view(LABELS, CONF, [MASK0])
    with pytest.raises(EconsgError, match="mode"):
        crr_threshold([np.ones((2, 2))], mode="median", tau1=0.5)
    with pytest.raises(EconsgError, match="tau1"):
        crr_threshold([np.ones((2, 2))], mode="absolute", tau1=1.5)
    with pytest.raises(EconsgError, match="min_votes"):
        refine_labels_crr(l, p, m, f, tau1_value=0.5, min_votes=0, tau2=0.1)
    with pytest.raises(EconsgError, match="masks"):
        refine_labels_crr(l, p, m[:, :, :3], f, tau1_value=0.5, min_votes=1, tau2=0.1)
    with pytest.raises(EconsgError, match="labels"):
        refine_labels_crr(l + 5, p, m, f, tau1_value=0.5, min_votes=1, tau2=0.1)
    from econsg.config import parse_params
    from econsg.errors import ConfigError

    absolute = {"crr": {"tau1_mode": "absolute", "tau1": 0.5, "tau2": 0.6}}
    with pytest.raises(ConfigError) as refused:
        parse_params(absolute)
    assert refused.value.lines[0].startswith("crr.tau2: 0.6 must be below crr.tau1 (0.5)"), "named as a field's error"
    parse_params({**absolute, "extract": {"confidence": "cosine"}})  # tau1 a cosine, tau2 a probability: no order
    parse_params({"crr": {"tau1_mode": "quantile", "tau1": 0.3, "tau2": 0.4}})  # tau1 is a quantile there


def test_identity_crr_passes_labels_through():
    labels = np.array([[0, 1], [IGNORE, 2]], np.int16)
    r = identity_crr(labels, 8)
    np.testing.assert_array_equal(r.refined_labels, labels)
    assert (r.feature_source == -1).all() and r.mask_class_features.shape == (0, 8)


def test_ignored_pixels_pool_their_masks_feature_only_when_asked():
    # full-resolution grid: pixel features are the grid cells. Mask 0 (pixels 0-2) holds no confident pixel,
    # so it stays unlabelled and its pixels are ignored; pixel 3 lies in no mask; pixels 4-5 are confident.
    labels = np.array([[0, 1, 0, 1, 0, 0]], np.int16)
    conf = np.array([[0.3, 0.3, 0.3, 0.3, 0.9, 0.9]], np.float32)
    grid = np.array([[[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]]], np.float32)
    masks = np.array([[[1, 1, 1, 0, 0, 0]]], bool)
    common = dict(tau1_value=0.7, min_votes=1, tau2=0.0)
    own = refine_labels_crr(labels, make_probs(labels, conf), masks, grid, ignored_features="own", **common)
    assert own.refined_labels.tolist() == [[IGNORE, IGNORE, IGNORE, IGNORE, 0, 0]]
    assert (own.feature_source[0, :4] == -1).all()
    pooled = refine_labels_crr(labels, make_probs(labels, conf), masks, grid, ignored_features="mask", **common)
    assert pooled.refined_labels.tolist() == own.refined_labels.tolist()  # labels are untouched
    assert pooled.pair_index.tolist() == [[0, -1]]
    assert pooled.feature_source.tolist() == [[0, 0, 0, -1, -1, -1]]
    refined = map_refined_features(lambda rows: rows, grid, pooled.feature_source, pooled.mask_class_features, 1, 6)
    mean = np.array([1, 0, 0]) + np.array([0, 1, 0]) + np.array([1, 1, 0]) / np.sqrt(2)  # unit pixel features
    for u in range(3):
        np.testing.assert_allclose(refined[0, u], mean / np.linalg.norm(mean), atol=1e-3)
    np.testing.assert_allclose(refined[0, 3], [0, 0, 1], atol=1e-3)  # outside every mask: its own feature
    with pytest.raises(EconsgError, match="ignored_features"):
        refine_labels_crr(labels, make_probs(labels, conf), masks, grid, ignored_features="median", **common)


def test_a_boundary_pixel_tau2_dropped_inside_a_labelled_mask_keeps_its_own_feature():
    labels = np.array([[0, 0, 1]], np.int16)
    conf = np.array([[0.9, 0.9, 0.9]], np.float32)
    probs = make_probs(labels, conf)
    probs[0, 2] = [0.1, 0.8, 0.1]  # the mask says class 0, this pixel gives it 0.1 < tau2
    grid = np.array([[[1, 0, 0], [1, 0, 0], [0, 0, 1]]], np.float32)
    masks = np.array([[[1, 1, 1]]], bool)
    r = refine_labels_crr(labels, probs, masks, grid, tau1_value=0.85, min_votes=1, tau2=0.3, ignored_features="mask")
    assert r.mask_labels.tolist() == [0] and r.refined_labels.tolist() == [[0, 0, IGNORE]]
    assert r.feature_source[0, 2] == -1 and r.counts["ignored_by_tau2"] == 1


def test_audit_feature_tile_tells_own_class_mean_and_pooled_features_apart():
    from econsg.audit import feature_source_map

    refined = np.array([[0, IGNORE, IGNORE, 1]], np.int16)
    source = np.array([[0, 1, -1, -1]], np.int32)
    tile = feature_source_map(refined, source)
    own, class_mean, pooled = tile[0, 2], tile[0, 0], tile[0, 1]
    assert (tile[0, 3] == own).all()  # a labelled pixel with its own feature looks like an ignored one
    assert len({tuple(own), tuple(class_mean), tuple(pooled)}) == 3


def test_audit_agreement_tile_ramps_with_agreement_and_marks_pixels_without_a_sample():
    from econsg.audit import agreement_map

    tile = agreement_map(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32))
    contradicted, half, confirmed, unsampled = (tuple(int(c) for c in tile[0, j]) for j in range(4))
    assert contradicted[0] < half[0] < confirmed[0]  # brighter as more views agree
    assert unsampled[2] > unsampled[0] and unsampled != contradicted  # its own colour, not "contradicted"


@pytest.mark.parametrize(
    ("settings", "thresholds", "advice"),
    [
        (dict(tau1_mode="quantile", tau1=0.4, tau2=0.9), [0.34, 0.36], "lower crr.tau2 below tau1"),
        (dict(tau1_mode="quantile", tau1=1.0, tau2=0.25), [0.95, 0.97], "lower crr.tau1"),
        (dict(tau1_mode="absolute", tau1=1.0, tau2=0.25), [1.0], "use crr.tau1_mode: quantile"),
    ],
)
def test_a_crr_that_labels_nothing_names_the_threshold_to_lower(settings, thresholds, advice):
    """tau2 above the resolved tau1 drops every pixel: the error names tau2 then, and tau1 otherwise."""
    from stages.crr import nothing_labelled

    message = str(nothing_labelled(CrrParams(**settings), np.array(thresholds), [np.array([0.5, 0.89])]))
    assert advice in message and "reaches at most 0.890" in message
    assert ("crr.tau2 below" in message) == (advice == "lower crr.tau2 below tau1")


def test_a_tau1_resolved_below_tau2_is_warned_about_naming_both():
    from stages.crr import tau2_warning

    cfg = CrrParams(tau1_mode="quantile", tau1=0.55, tau2=0.25)
    assert tau2_warning(cfg, np.array([0.46, 0.5])) is None
    message = tau2_warning(cfg, np.array([0.23, 0.3, 0.24]))
    assert "in 2 of 3 views the quantile tau1 (lowest 0.23) is at or below crr.tau2 (0.25)" in message
    assert "lower crr.tau2" in message
    assert tau2_warning(cfg, np.array([0.23, 0.3, 0.24]), "cosine") is None, "a cosine and a probability: no order"


def test_a_crr_on_cosines_that_labels_nothing_names_both_thresholds():
    from stages.crr import nothing_labelled

    cfg = CrrParams(tau1_mode="relative", tau1=0.5, tau2=0.25)
    message = str(nothing_labelled(cfg, np.array([0.15]), [np.array([0.1, 0.3])], "cosine"))
    assert "lower crr.tau1 (it thresholds the label's cosine" in message and "or crr.tau2" in message


def test_mask_class_means_and_mapped_features_take_painted_masks_pixel_by_pixel():
    from tests.helpers import painted_example

    grid, painted, cube = painted_example()
    H, W = cube.shape[:2]
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (H, W)).astype(np.int16)
    high = rng.random((H, W)) < 0.7
    masks = np.stack([np.ones((H, W), bool), painted.ids >= 0])  # one over the painted and unpainted pixels alike
    pairs = np.array([[0, 0], [0, 1], [1, -1]], np.int32)
    fast = mask_class_mean_features(grid, masks, labels, high, pairs, painted)
    for row, (m, c) in enumerate(pairs):
        chosen = masks[m] & (high & (labels == c) if c >= 0 else True)
        mean = cube[chosen].mean(0)
        np.testing.assert_allclose(fast[row], mean / np.linalg.norm(mean), atol=1e-5)
    own = np.full((H, W), -1, np.int32)
    mapped = map_refined_features(lambda rows: rows, grid, own, np.zeros((0, grid.shape[2]), np.float32), H, W,
                                  chunk_pixels=7, painted=painted)
    np.testing.assert_allclose(mapped, cube, atol=1e-6)


def test_smallest_covering_mask_smaller_wins_ties_go_to_the_lower_index_and_no_mask_is_minus_one():
    from econsg.features.base import smallest_covering_mask

    masks = np.zeros((4, 8, 8), bool)
    masks[0, :4, :] = True  # top half
    masks[1, :4, 4:] = True  # top-right quarter, inside it
    masks[2, 6:, :2] = True
    masks[3, 6:, :2] = True  # the same area as mask 2, on the same pixels
    ids = smallest_covering_mask(masks)
    assert ids[0, 0] == 0 and ids[0, 7] == 1 and ids[7, 0] == 2 and ids[5, 5] == -1
    assert (ids == 1).sum() == 16 and (ids == 0).sum() == 16
    assert smallest_covering_mask(masks, np.array([True, False, False, True]))[0, 7] == 0  # only eligible masks
    assert smallest_covering_mask(masks, np.array([True, False, False, True]))[7, 0] == 3
    assert (smallest_covering_mask(np.zeros((0, 3, 5), bool)) == -1).all()  # a view without masks


def test_mask_votes_count_each_masks_high_confidence_labelled_pixels_by_class():
    from econsg.crr import mask_votes

    rng = np.random.default_rng(7)
    labels = rng.integers(-1, 4, size=(9, 11)).astype(np.int16)
    high = rng.random((9, 11)) < 0.6
    masks = rng.random((5, 9, 11)) < 0.4
    votes = mask_votes(labels, high, masks, 4)
    expected = [[int((masks[m] & high & (labels == c)).sum()) for c in range(4)] for m in range(5)]
    np.testing.assert_array_equal(votes, expected)
    assert votes.dtype == np.int64 and mask_votes(labels, high, masks[:0], 4).shape == (0, 4)


def test_a_pixel_at_exactly_tau1_is_high_confidence():
    """METHOD.md: k_v(u) >= tau1."""
    labels = np.array([[0, 1]], np.int16)
    r = refine_labels_crr(labels, make_probs(labels, np.array([[0.5, 0.25]], np.float32)), np.zeros((0, 1, 2), bool),
                          np.ones((1, 1, 2)), tau1_value=0.5, min_votes=1, tau2=0.0)
    assert r.high_confidence.tolist() == [[True, False]]
    assert r.refined_labels.tolist() == [[0, IGNORE]]


def test_a_tied_mask_vote_goes_to_the_smaller_class_id():
    labels = np.array([[1, 2, 0, 2]], np.int16)  # confident votes 1, 2, 0: a three-way tie; pixel 3 is uncertain
    r = refine_labels_crr(labels, make_probs(labels, np.array([[0.9, 0.9, 0.9, 0.3]], np.float32)),
                          np.ones((1, 1, 4), bool), np.ones((1, 1, 2)), tau1_value=0.7, min_votes=1, tau2=0.0)
    assert r.mask_labels.tolist() == [0]
    assert r.refined_labels.tolist() == [[1, 2, 0, 0]]
