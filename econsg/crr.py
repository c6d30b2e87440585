"""Confidence-guided Region Regularization (CRR, METHOD.md section 2), one view at a time.

a) High-confidence pixels H_v = {u : k_v(u) >= tau1}, with k_v(u) = p_v(u, l_v(u)) (or extract's stored k under
   extract.confidence: cosine, the label's cosine: the k tau1 was chosen from).
b) Each mask m gets L(m) = majority vote of l_v over H_v within m, if at least `min_votes` pixels of H_v lie
   in m (ties go to the smaller class id); otherwise m stays unlabelled (-1).
c) Refined label: inside H_v keep l_v(u); outside H_v take L(m) of the covering mask, the smallest labelled
   mask containing u (smaller masks win overlaps; equal areas: the lower mask index wins); else IGNORE.
d) A pixel whose probability for its final label is below tau2 becomes IGNORE.
Refined features: a labelled pixel u with final label c and covering mask m gets the mean (renormalised)
pixel feature of m's high-confidence pixels of class c; every other pixel keeps its own (the bilinearly
up-sampled grid), or, with `ignored_features="mask"`, an IGNORE pixel that no labelled mask covers takes the
mean feature of all the pixels of its smallest mask (LangSplat-style mask pooling of what crr could not name;
tau2's boundary pixels, inside a labelled mask, keep their own; in the artifact such a pixel is IGNORE with
feature_source >= 0). Pixel features are never stored at full resolution: `feature_source` points into a
small per-view table `mask_class_features`; `map_refined_features` applies a function (autoencode's encoder) to
each of a view's distinct refined features once, a bounded number of pixels at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from econsg.config.crr import CrrParams
from econsg.errors import EconsgError
from econsg.features.base import (
    PaintedMasks,
    bilinear_pixel_weights,
    interpolated_feature_norms,
    normalize_rows,
    smallest_covering_mask,
    upsample_feature_pixels,
)

IGNORE = -1
# Resolution of the streaming confidence histogram used by tau1_mode="quantile" (confidences lie in [0, 1]).
QUANTILE_BINS = 4096
CHUNK_PIXELS = 65_536  # own-feature pixels up-sampled and mapped at once by `map_refined_features`


@dataclass
class CRRResult:
    """What CRR decided for one view (all of it auditable).

    refined_labels:      [H, W] int16, IGNORE = -1.
    high_confidence:     [H, W] bool, the pixels of H_v.
    mask_labels:         [M] int16, L(m) or -1 when the mask had fewer than min_votes votes.
    covering_mask:       [H, W] int32, the smallest labelled mask containing the pixel (-1 none); it supplied
                         the label of pixels outside H_v and the feature of every labelled pixel.
    feature_source:      [H, W] int32, row of mask_class_features giving the pixel's refined feature
                         (-1 = the pixel keeps its own feature).
    mask_class_features: [R, D] float16, unit mean feature of mask m's high-confidence pixels of class c,
                         one row per (m, c) pair in use (see pair_index).
    pair_index:          [R, 2] int32, the (mask, class) of each row; class -1 = all of the mask's pixels.
    counts:              pixel and mask counts of what changed.
    """

    refined_labels: np.ndarray
    high_confidence: np.ndarray
    mask_labels: np.ndarray
    covering_mask: np.ndarray
    feature_source: np.ndarray
    mask_class_features: np.ndarray
    pair_index: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def histogram_and_extremes(confidence: np.ndarray, bins: int = QUANTILE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([bins] int64 counts, [bins] smallest, [bins] largest) of confidences in [0, 1] (values outside are clipped;
    inf / -inf where a bin is empty); sums, np.minimum and np.maximum of these merge views."""
    values = np.clip(np.asarray(confidence, dtype=np.float64).ravel(), 0.0, 1.0)
    values = values[np.isfinite(values)]
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    lowest, highest = np.full(bins, np.inf), np.full(bins, -np.inf)
    np.minimum.at(lowest, index, values)
    np.maximum.at(highest, index, values)
    return np.bincount(index, minlength=bins).astype(np.int64), lowest, highest


def quantile_from_histogram(histogram: np.ndarray, q: float, extremes: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """The q-quantile of the confidences a [bins] histogram over [0, 1] counts, to within 1 / bins.

    The first bin at which the cumulative share reaches q, interpolated linearly within it (its values taken as spread
    evenly), so that a share of about 1 - q lies at or above it. (Its upper edge would leave out the whole bin: a
    confident teacher with 45 % of its pixels in the last bin, above 0.9998, got tau1 = 1.0 and no pixel kept.) With
    the bins' `extremes` (histogram_and_extremes), a bin that holds one value alone (many pixels at one confidence: a saturated
    or quantised teacher) gives that value, as an exact quantile would: interpolating past it would drop them all;
    and the threshold stays within the bin's smallest and largest values.
    """
    histogram = np.asarray(histogram)
    total = histogram.sum()
    if histogram.ndim != 1 or total <= 0:
        raise EconsgError(f"histogram: expected a 1-D array of counts with a positive total, got shape {histogram.shape}, total {total}")
    if not 0.0 < q <= 1.0:
        raise EconsgError(f"q: got {q}, expected a quantile in (0, 1]")
    cumulative = np.cumsum(histogram) / total
    first = min(int(np.searchsorted(cumulative, q - 1e-12)), len(histogram) - 1)
    first = max(first, int(np.flatnonzero(histogram)[0]))  # a q below 1e-12 found the empty bins before the first value
    if extremes is not None and extremes[0][first] == extremes[1][first]:
        return float(extremes[0][first])
    before = float(cumulative[first - 1]) if first else 0.0
    inside = (q - before) / max(float(cumulative[first]) - before, 1e-300)
    value = float((first + min(max(inside, 0.0), 1.0)) / len(histogram))
    # within the bin's values: no higher than its largest (they may crowd below the point interpolation reaches: keep
    # them) and no lower than its smallest (a vanishing q is the smallest confidence, as an exact quantile is)
    return min(max(value, float(extremes[0][first])), float(extremes[1][first])) if extremes is not None else value


def crr_threshold(confidences: Iterable[np.ndarray], *, mode: str, tau1: float) -> np.ndarray:
    """The tau1 of every view, [V] float32.

    confidences: per-view [H, W] confidence maps, consumed one at a time (a generator is fine).
    mode "absolute": tau1 itself for every view; "quantile": the tau1-quantile of all views' confidences
    (one global value, from a streaming histogram with QUANTILE_BINS bins and each bin's extremes);
    "relative": tau1 x each view's max
    confidence (the authors' rule with tau1 = 0.5).
    """
    if not np.isfinite(tau1) or not 0.0 < tau1 <= 1.0:
        raise EconsgError(f"tau1: got {tau1}, expected a value in (0, 1]")
    if mode not in ("absolute", "quantile", "relative"):
        raise EconsgError(f"mode: got {mode!r}, expected 'absolute', 'quantile' or 'relative'")
    if mode == "relative":
        values = [tau1 * float(np.max(c)) if np.size(c) else tau1 for c in confidences]
        return np.asarray(values, dtype=np.float32)
    total = lowest = highest = None
    count = 0
    for c in confidences:
        count += 1
        if mode == "quantile":
            h, lo, hi = histogram_and_extremes(c)
            total = h if total is None else total + h
            lowest = lo if lowest is None else np.minimum(lowest, lo)
            highest = hi if highest is None else np.maximum(highest, hi)
    if mode == "absolute":
        return np.full(count, tau1, dtype=np.float32)
    if total is None:
        return np.zeros(0, dtype=np.float32)
    return np.full(count, quantile_from_histogram(total, tau1, (lowest, highest)), dtype=np.float32)


def _check_inputs(labels, probs, masks, features_grid) -> None:
    if labels.ndim != 2:
        raise EconsgError(f"labels: got shape {labels.shape}, expected [H, W]")
    H, W = labels.shape
    if probs.ndim != 3 or probs.shape[:2] != (H, W) or probs.shape[2] < 1:
        raise EconsgError(f"probs: got shape {probs.shape}, expected [{H}, {W}, C] like labels")
    C = probs.shape[2]
    if labels.size and (labels.max() >= C or labels.min() < IGNORE):
        raise EconsgError(f"labels: values in [{labels.min()}, {labels.max()}], expected class ids in [0, {C}) or -1")
    if masks.ndim != 3 or masks.shape[1:] != (H, W):
        raise EconsgError(f"masks: got shape {masks.shape}, expected [M, {H}, {W}]")
    if features_grid.ndim != 3:
        raise EconsgError(f"features_grid: got shape {features_grid.shape}, expected [h, w, D]")


def mask_votes(labels: np.ndarray, high_confidence: np.ndarray, masks: np.ndarray, num_classes: int) -> np.ndarray:
    """[M, C] int64: how many high-confidence pixels of each class each mask holds.

    Counted mask by mask: a float [M, P] copy of the masks and a [P, C] one-hot took ~6x the masks' own memory
    (9.6 GB at 4000 x 3000 with 128 masks), and float32 sums are exact only below 2^24 pixels.
    """
    voters = high_confidence & (labels >= 0)
    votes = np.zeros((masks.shape[0], num_classes), dtype=np.int64)
    for m, mask in enumerate(masks):
        votes[m] = np.bincount(labels[mask & voters], minlength=num_classes)
    return votes


def vote_mask_labels(votes: np.ndarray, min_votes: int) -> np.ndarray:
    """[M] int16 L(m): argmax of the votes (ties: smaller class id), -1 when fewer than min_votes were cast."""
    labels = votes.argmax(axis=1).astype(np.int16) if votes.shape[1] else np.zeros(len(votes), np.int16)
    labels[votes.sum(axis=1) < min_votes] = IGNORE
    return labels


def refine_labels_crr(
    labels: np.ndarray,
    probs: np.ndarray,
    masks: np.ndarray,
    features_grid: np.ndarray,
    *,
    tau1_value: float,
    min_votes: int,
    tau2: float,
    ignored_features: Literal["own", "mask"] = CrrParams().ignored_features,  # the stage's default
    painted: PaintedMasks | None = None,
    confidence: np.ndarray | None = None,
) -> CRRResult:
    """Refine one view's labels and features with its masks (steps a-d of the module docstring).

    labels [H, W] int (raw argmax l_v, -1 allowed), probs [H, W, C] float (p_v, which tau2 reads), confidence [H, W]
    (k_v, which tau1_value thresholds: extract's stored confidence, from which the threshold was chosen; default
    p_v(l_v), the paper's),
    masks [M, H, W] bool, features_grid [h, w, D] (the extract features; pixel features are its bilinear
    up-sampling, or the `painted` mask-crop feature where one is painted). tau1_value: this view's threshold;
    min_votes >= 1; tau2 in [0, 1).
    ignored_features: "own" (METHOD.md: an IGNORE pixel keeps its own feature) or "mask" (an IGNORE pixel that no
    labelled mask covers takes the mean feature of its smallest mask, where one covers it).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    masks = np.asarray(masks, dtype=bool)
    features_grid = np.asarray(features_grid)
    _check_inputs(labels, probs, masks, features_grid)
    _check_settings(tau1_value, min_votes, tau2, ignored_features)
    H, W = labels.shape
    C = probs.shape[2]
    valid = labels >= 0
    safe = np.where(valid, labels, 0).astype(np.int64)
    if confidence is None:
        confidence = np.take_along_axis(probs, safe[..., None], axis=2)[..., 0]
    elif np.shape(confidence) != (H, W):
        raise EconsgError(f"confidence: got shape {np.shape(confidence)}, expected the labels' {(H, W)}")
    confidence = np.where(valid, confidence, 0.0)

    # a) high-confidence pixels; b) mask votes
    high = valid & (confidence >= tau1_value)
    votes = mask_votes(labels, high, masks, C)
    mask_labels = vote_mask_labels(votes, int(min_votes))
    covering = smallest_covering_mask(masks, mask_labels >= 0)

    # c) keep l inside H_v, take L(covering mask) outside, else ignore
    from_mask = ~high & (covering >= 0)
    refined = np.full((H, W), IGNORE, dtype=np.int16)
    refined[high] = labels[high]
    refined[from_mask] = mask_labels[covering[from_mask]]

    # d) boundary regularization
    labelled = refined >= 0
    final_prob = np.take_along_axis(probs, np.where(labelled, refined, 0).astype(np.int64)[..., None], axis=2)[..., 0]
    dropped = labelled & (final_prob < tau2)
    refined[dropped] = IGNORE
    labelled &= ~dropped

    # Refined features: one table row per (covering mask, final label) pair in use; (mask, -1) = the whole mask.
    feature_source, pair_index = feature_rows(refined, covering, masks, C, ignored_features)
    table = mask_class_mean_features(features_grid, masks, labels, high, pair_index, painted)

    counts = {
        "pixels": int(H * W),
        "high_confidence": int(high.sum()),
        "labelled_by_mask": int((from_mask & labelled).sum()),
        "changed": int((labelled & (refined != labels)).sum()),
        "ignored": int((~labelled).sum()),
        "ignored_by_tau2": int(dropped.sum()),
        "masks": int(masks.shape[0]),
        "labelled_masks": int((mask_labels >= 0).sum()),
        "feature_rows": int(len(pair_index)),
    }
    return CRRResult(
        refined_labels=refined,
        high_confidence=high,
        mask_labels=mask_labels,
        covering_mask=covering,
        feature_source=feature_source,
        mask_class_features=table.astype(np.float16),
        pair_index=pair_index,
        counts=counts,
    )


def _check_settings(tau1_value: float, min_votes: int, tau2: float, ignored_features: str) -> None:
    if not np.isfinite(tau1_value) or not 0.0 <= tau1_value <= 1.0:
        raise EconsgError(f"tau1_value: got {tau1_value}, expected a confidence in [0, 1]")
    if int(min_votes) != min_votes or min_votes < 1:
        raise EconsgError(f"min_votes: got {min_votes}, expected an integer >= 1")
    if not 0.0 <= tau2 < 1.0:
        raise EconsgError(f"tau2: got {tau2}, expected a probability in [0, 1)")
    if ignored_features not in ("own", "mask"):
        raise EconsgError(f"ignored_features: got {ignored_features!r}, expected 'own' or 'mask'")


def feature_rows(
    refined: np.ndarray, covering: np.ndarray, masks: np.ndarray, num_classes: int,
    ignored_features: Literal["own", "mask"],
) -> tuple[np.ndarray, np.ndarray]:
    """Which row of the refined-feature table each pixel takes: (feature_source [H, W] int32, -1 = the pixel keeps
    its own feature; pair_index [R, 2] int32, each row's (mask, class)). A labelled pixel in its covering mask takes
    the row of (that mask, its refined label). With "mask", an ignored pixel no labelled mask covers takes the row
    (its smallest mask, -1), the whole mask; tau2's boundary pixels, which a labelled mask covers, keep their own."""
    labelled = refined >= 0
    use = labelled & (covering >= 0)
    pixel_mask = covering
    if ignored_features == "mask":
        any_covering = smallest_covering_mask(masks, np.ones(len(masks), dtype=bool))
        pooled = ~labelled & (covering < 0) & (any_covering >= 0)
        pixel_mask = np.where(pooled, any_covering, covering)
        use = use | pooled
    # a pooled pixel's class is IGNORE = -1
    keys = pixel_mask[use].astype(np.int64) * (num_classes + 1) + refined[use].astype(np.int64) + 1
    pairs, inverse = np.unique(keys, return_inverse=True)
    feature_source = np.full(refined.shape, -1, dtype=np.int32)
    feature_source[use] = inverse.astype(np.int32)
    pair_index = (np.stack([pairs // (num_classes + 1), pairs % (num_classes + 1) - 1], axis=1).astype(np.int32)
                  if len(pairs) else np.zeros((0, 2), np.int32))
    return feature_source, pair_index


def mask_class_mean_features(
    features_grid: np.ndarray, masks: np.ndarray, labels: np.ndarray, high_confidence: np.ndarray, pair_index: np.ndarray,
    painted: PaintedMasks | None = None,
) -> np.ndarray:
    """[R, D] float32: for each (m, c) row of pair_index, the renormalised mean up-sampled pixel feature of
    mask m's high-confidence pixels of class c (zero if it has none); for c = -1, of all of m's pixels.

    Each pixel feature is sum_k w_k g_k / ||sum_k w_k g_k|| over its 4 bilinear grid corners, so the sum over a
    pixel set is A @ grid with A [R, h*w] the scattered weights w_k / norm: no [H, W, D] cube is formed. A pixel a
    `painted` mask covers adds that mask's feature instead: B @ table, B [R, M] the counts.
    """
    R = len(pair_index)
    H, W = labels.shape
    h, w, D = features_grid.shape
    if R == 0:
        return np.zeros((0, D), dtype=np.float32)
    cells, weights = bilinear_pixel_weights((h, w), H, W)
    scaled = weights / np.maximum(interpolated_feature_norms(features_grid, H, W), 1e-12)[..., None]
    # each row's pixels from its mask's pixel list (no [R, H, W] selection: 128 masks x 20 classes at 640x480 took
    # 0.8 GB), in row-major order row by row, so that the sums below add in the same order as a dense selection's
    mask_pixels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows, ys, xs = [], [], []
    for r, (m, c) in enumerate(pair_index.tolist()):
        if m not in mask_pixels:
            mask_pixels[m] = np.nonzero(masks[m])
        y, x = mask_pixels[m]
        if c >= 0:
            keep = high_confidence[y, x] & (labels[y, x] == c)
            y, x = y[keep], x[keep]
        rows.append(np.full(len(y), r, np.int64))
        ys.append(y)
        xs.append(x)
    row, y, x = np.concatenate(rows), np.concatenate(ys), np.concatenate(xs)
    ids = painted.ids[y, x] if painted is not None else np.full(len(y), -1)
    on_grid = ids < 0
    flat = (row[on_grid, None] * (h * w) + cells[y[on_grid], x[on_grid]]).ravel()
    A = np.bincount(flat, weights=scaled[y[on_grid], x[on_grid]].ravel(), minlength=R * h * w).reshape(R, h * w)
    sums = A.astype(np.float32) @ np.asarray(features_grid, dtype=np.float32).reshape(h * w, D)
    if not on_grid.all():
        M = len(painted.features)
        B = np.bincount(row[~on_grid] * M + ids[~on_grid], minlength=R * M).reshape(R, M)
        sums += B.astype(np.float32) @ normalize_rows(painted.features)
    return normalize_rows(sums)


def map_refined_features(
    fn: Callable[[np.ndarray], np.ndarray],
    features_grid: np.ndarray,
    feature_source: np.ndarray,
    mask_class_features: np.ndarray,
    height: int,
    width: int,
    chunk_pixels: int = CHUNK_PIXELS,
    painted: PaintedMasks | None = None,
) -> np.ndarray:
    """fn applied to one view's refined pixel features: [H, W, k], without the [H, W, D] feature cube.

    fn maps [N, D] float32 feature rows to [N, k] (autoencode: the encoder, k = d). Each distinct refined feature
    goes through it once: the R rows of `mask_class_features` (the pixels whose feature_source is >= 0), then the
    bilinearly up-sampled grid feature (or `painted` mask feature) of each pixel whose feature_source is -1,
    `chunk_pixels` at a time, so that memory stays at chunk_pixels x D whatever the view's size (a 640x480 view at
    D = 768 would be 0.9 GB at once).
    """
    feature_source = np.asarray(feature_source)
    if feature_source.shape != (height, width):
        raise EconsgError(f"feature_source: got shape {feature_source.shape}, expected [{height}, {width}]")
    table = np.asarray(mask_class_features, dtype=np.float32)
    features_grid = np.asarray(features_grid)
    if table.ndim != 2 or table.shape[1] != features_grid.shape[-1]:
        raise EconsgError(f"mask_class_features: got shape {table.shape}, expected [R, {features_grid.shape[-1]}]")
    if feature_source.size and feature_source.max() >= len(table):
        raise EconsgError(f"feature_source: row {feature_source.max()} out of range for a table of {len(table)} rows")
    mapped_table = np.asarray(fn(table))
    out = np.empty((height, width, *mapped_table.shape[1:]), mapped_table.dtype)
    from_table = feature_source >= 0
    out[from_table] = mapped_table[feature_source[from_table]]
    ys, xs = np.nonzero(~from_table)
    for start in range(0, len(ys), chunk_pixels):
        y, x = ys[start : start + chunk_pixels], xs[start : start + chunk_pixels]
        out[y, x] = fn(upsample_feature_pixels(features_grid, height, width, y, x, painted))
    return out


def identity_crr(labels: np.ndarray, feature_dim: int) -> CRRResult:
    """CRR switched off: refined labels = raw labels, every pixel keeps its own feature, no mask is used."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise EconsgError(f"labels: got shape {labels.shape}, expected [H, W]")
    H, W = labels.shape
    refined = labels.astype(np.int16)
    return CRRResult(
        refined_labels=refined,
        high_confidence=refined >= 0,
        mask_labels=np.zeros(0, np.int16),
        covering_mask=np.full((H, W), -1, np.int32),
        feature_source=np.full((H, W), -1, np.int32),
        mask_class_features=np.zeros((0, int(feature_dim)), np.float16),
        pair_index=np.zeros((0, 2), np.int32),
        counts={"pixels": int(H * W), "high_confidence": int((refined >= 0).sum()), "labelled_by_mask": 0, "changed": 0,
                "ignored": int((refined < 0).sum()), "ignored_by_tau2": 0, "masks": 0, "labelled_masks": 0, "feature_rows": 0},
    )
