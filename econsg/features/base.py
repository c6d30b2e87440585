"""What every extract backend returns, and the per-pixel class probabilities shared by extract, crr and evaluate.

Features live on a native grid [h, w, D] (a ViT patch grid); pixel features are its bilinear up-sampling
to pixel centres with `align_corners=False` semantics (grid cell j covers image columns
[j * W / w, (j + 1) * W / w); the image pixel centre x = col + 0.5 maps to grid coordinate
x * w / W - 0.5, clamped at the borders), renormalised to unit length. The SAM-mask-crop backend adds a mask
table and an id map (`PaintedMasks`, METHOD.md section 1): a pixel some mask covers takes the feature of the
smallest such mask, exactly, whatever the grid's cell size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from econsg.errors import EconsgError

# Rows of pixels up-sampled at once, so an [H, W, D] float32 cube never has to exist in full.
_ROW_CHUNK = 64


@dataclass
class ViewFeatures:
    """One view's extract output.

    features:    [h, w, D] float16, L2-normalised, native grid (patch grid).
    labels:      [H, W] int16, argmax over the training vocabulary.
    confidence:  [H, W] float32, max softmax probability of that argmax.
    masks:       [M, H, W] bool, SAM(-like) masks, sorted by decreasing area.
    mask_scores: [M, 3] float32: predicted_iou, stability_score, area (pixels).
    painted:     the mask table and id map painted over the grid (mask crops), or None.
    """

    features: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    masks: np.ndarray
    mask_scores: np.ndarray
    painted: PaintedMasks | None = None


@dataclass(frozen=True)
class PaintedMasks:
    """Mask features painted over their masks' pixels: the pixel feature F(u) is features[ids[u]] where
    ids[u] >= 0, the grid's bilinear sample elsewhere.

    ids:      [H, W] int, the smallest mask covering each pixel (`smallest_covering_mask`), -1 where none does.
    features: [M, D] unit rows, one per mask (float16 as stored).
    """

    ids: np.ndarray
    features: np.ndarray

    def __post_init__(self):
        if self.ids.ndim != 2 or self.features.ndim != 2 or self.ids.max(initial=-1) >= len(self.features):
            raise EconsgError(f"painted masks: ids {tuple(self.ids.shape)} up to {self.ids.max(initial=-1)} and features "
                              f"{tuple(self.features.shape)}; expected [H, W] ids below the [M, D] table's M rows")


def smallest_covering_mask(masks: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """[H, W] int32: index of the smallest (eligible, default every) mask of [M, H, W] containing each pixel, -1
    where none does. Overlaps go to the smaller mask; equal areas to the lower index."""
    M, H, W = masks.shape
    covering = np.full((H, W), -1, dtype=np.int32)
    areas = masks.reshape(M, H * W).sum(axis=1)
    # Paint the largest first so smaller masks overwrite; among equal areas the lower index is painted last.
    order = sorted((m for m in range(M) if eligible is None or eligible[m]), key=lambda m: (-areas[m], -m))
    for m in order:
        covering[masks[m]] = m
    return covering


def stored_painted_masks(extract_group, view: int) -> PaintedMasks | None:
    """The PaintedMasks extract.zarr stored for `view` (the mask-crop backend), else None."""
    if "mask_ids" not in extract_group:
        return None
    return PaintedMasks(np.asarray(extract_group["mask_ids"][view]), np.asarray(extract_group["mask_features"][view]))


def paint_pixels(out: np.ndarray, values: np.ndarray, painted: PaintedMasks) -> np.ndarray:
    """`out` [H, W, k] with the painted pixels' rows taken from `values` [M, k] (a function of their mask's feature)."""
    covered = painted.ids >= 0
    out[covered] = values[painted.ids[covered]]
    return out


@runtime_checkable
class TextEncoder(Protocol):
    """A text tower: prompts -> [P, dim] L2-normalised embeddings (float32)."""

    dim: int

    def encode(self, prompts: Sequence[str]) -> np.ndarray: ...


def normalize_rows(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """x / ||x|| along `axis` (float32); all-zero vectors stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def bilinear_weights(size_out: int, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices i0, i1 [size_out] int64 and weight a [size_out] float32 of i1, align_corners=False.

    Output sample k (centre k + 0.5 in output pixels) reads input coordinate (k + 0.5) * size_in / size_out - 0.5,
    clamped to [0, size_in - 1]: value = (1 - a) * in[i0] + a * in[i1].
    """
    coord = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    coord = np.clip(coord, 0.0, size_in - 1)
    i0 = np.floor(coord).astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    return i0, i1, (coord - i0).astype(np.float32)


def _check_grid(features: np.ndarray, height: int, width: int) -> None:
    if features.ndim != 3 or min(features.shape) < 1:
        raise EconsgError(f"features: got shape {tuple(features.shape)}, expected a [h, w, D] grid")
    if int(height) < 1 or int(width) < 1:
        raise EconsgError(f"height, width: got {height} x {width}, expected positive image size")


def upsample_feature_rows(features: np.ndarray, height: int, width: int, rows: slice | None = None,
                          painted: PaintedMasks | None = None) -> np.ndarray:
    """Pixel features [r, W, D] float32 (unit length) for image rows `rows` (default all: the [H, W, D] bilinear
    up-sampling of the [h, w, D] grid, see module doc, with `painted` masks' features) of an H x W image."""
    r0, r1, _ = (rows or slice(0, height)).indices(height)
    ys, xs = np.repeat(np.arange(r0, r1), width), np.tile(np.arange(width), max(r1 - r0, 0))
    pixels = upsample_feature_pixels(features, height, width, ys, xs, painted)
    return pixels.reshape(len(range(r0, r1)), width, features.shape[-1])


def upsample_feature_pixels(features: np.ndarray, height: int, width: int, ys: np.ndarray, xs: np.ndarray,
                            painted: PaintedMasks | None = None) -> np.ndarray:
    """Pixel features [P, D] float32 (unit length) of the pixels (ys, xs) of an H x W image, without forming the
    others: two linear passes, y on the grid rows of the image rows the pixels lie in, then x at each pixel; a
    pixel a `painted` mask covers takes that mask's feature (the grid is sampled for the others alone)."""
    _check_grid(features, height, width)
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    if painted is None:
        return _bilinear_pixels(features, height, width, ys, xs)
    ids = painted.ids[ys, xs]
    on_grid = ids < 0
    out = np.empty((len(ys), features.shape[-1]), np.float32)
    out[~on_grid] = normalize_rows(painted.features)[ids[~on_grid]]
    if on_grid.any():
        out[on_grid] = _bilinear_pixels(features, height, width, ys[on_grid], xs[on_grid])
    return out


def _bilinear_pixels(features: np.ndarray, height: int, width: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The grid's renormalised bilinear samples [P, D] at the pixels (ys, xs) (int64), `upsample_feature_pixels`'s."""
    h, w, _ = features.shape
    y0, y1, ay = bilinear_weights(height, h)
    x0, x1, ax = bilinear_weights(width, w)
    grid = np.asarray(features, dtype=np.float32)
    rows, row_of = np.unique(ys, return_inverse=True)
    part = grid[y0[rows]] * (1.0 - ay[rows, None, None]) + grid[y1[rows]] * ay[rows, None, None]  # [rows, w, D]
    mix = ax[xs, None]
    return normalize_rows(part[row_of, x0[xs]] * (1.0 - mix) + part[row_of, x1[xs]] * mix)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis` (float32)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z.astype(np.float32, copy=False)


def bilinear_pixel_weights(grid_shape: tuple[int, int], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid cells and weights of every pixel's bilinear sample (align_corners=False).

    Returns cells [H, W, 4] int64 (flat indices y * w + x of the corners 00, 01, 10, 11, with y1 = min(y0 + 1,
    h - 1), x1 = min(x0 + 1, w - 1)) and weights [H, W, 4] float32 summing to 1.
    """
    h, w = grid_shape
    y0, y1, ay = bilinear_weights(height, h)
    x0, x1, ax = bilinear_weights(width, w)
    cells = np.stack(
        [y0[:, None] * w + x0[None], y0[:, None] * w + x1[None], y1[:, None] * w + x0[None], y1[:, None] * w + x1[None]],
        axis=-1,
    )
    ay, ax = ay[:, None], ax[None, :]
    weights = np.stack([(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax], axis=-1).astype(np.float32)
    return cells, weights


def interpolated_feature_norms(features: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] float32 length of each pixel's bilinear sample of the grid BEFORE renormalisation.

    Exact without forming the [H, W, D] cube: ||sum_k w_k g_k||^2 = sum_kl w_k w_l <g_k, g_l> over the 4
    corners, with the corner dot products precomputed on the grid (O(h w D + H W)).
    """
    _check_grid(features, height, width)
    grid = np.asarray(features, dtype=np.float32)
    h, w, _ = grid.shape
    ys = np.minimum(np.arange(h) + 1, h - 1)
    xs = np.minimum(np.arange(w) + 1, w - 1)
    g00, g01, g10, g11 = grid, grid[:, xs], grid[ys], grid[ys][:, xs]
    # dot products of the corner pairs of the cell quad anchored at every (y0, x0)
    pairs = {
        (0, 0): (g00 * g00).sum(-1), (1, 1): (g01 * g01).sum(-1), (2, 2): (g10 * g10).sum(-1), (3, 3): (g11 * g11).sum(-1),
        (0, 1): (g00 * g01).sum(-1), (0, 2): (g00 * g10).sum(-1), (0, 3): (g00 * g11).sum(-1),
        (1, 2): (g01 * g10).sum(-1), (1, 3): (g01 * g11).sum(-1), (2, 3): (g10 * g11).sum(-1),
    }
    cells, weights = bilinear_pixel_weights((h, w), height, width)
    anchor = cells[..., 0]  # y0 * w + x0: the quad's dot products are stored at its 00 corner
    norm2 = np.zeros((height, width), dtype=np.float64)
    for (a, b), dots in pairs.items():
        factor = 1.0 if a == b else 2.0
        norm2 += factor * weights[..., a] * weights[..., b] * dots.ravel()[anchor]
    return np.sqrt(np.maximum(norm2, 0.0)).astype(np.float32)


PROBABILITY_BAND_VALUES = 1 << 22  # pixels x classes per band of `pixel_probabilities` (a 64 MB corner gather)


def pixel_cosines(
    features: np.ndarray, text_embeddings: np.ndarray, height: int, width: int, painted: PaintedMasks | None = None,
) -> np.ndarray:
    """Per-pixel cosines cos(F(u), t_c), [H, W, C] float32.

    features: [h, w, D] grid (any float dtype); text_embeddings: [C, D] (normalised here);
    F(u) = bilinear up-sampling of the grid to pixel centres, renormalised, or the feature of the `painted` mask
    covering u.
    Fast path: <F~(u), t> is linear in the grid, so the grid's [h, w, C] cosines are interpolated and divided by
    the exact interpolated norm (`interpolated_feature_norms`); `pixel_probabilities_reference` is the plain twin.
    """
    features, text = _check_text(features, text_embeddings, height, width)
    h, w, _ = features.shape
    grid_dots = (features.reshape(h * w, -1).astype(np.float32) @ text.T)  # [h*w, C]
    cells, weights = bilinear_pixel_weights((h, w), height, width)
    norms = np.maximum(interpolated_feature_norms(features, height, width), 1e-12)
    out = np.empty((height, width, text.shape[0]), dtype=np.float32)
    # rows a band at a time: the gathered corner cosines are [rows, W, 4, C], 4x the output's band
    for rows in _bands(height, width, text.shape[0]):
        out[rows] = np.einsum("hwk,hwkc->hwc", weights[rows], grid_dots[cells[rows]]) / norms[rows, :, None]
    if painted is not None:
        paint_pixels(out, normalize_rows(painted.features) @ text.T, painted)
    return out


def _bands(height: int, width: int, classes: int) -> list[slice]:
    band = max(1, PROBABILITY_BAND_VALUES // (width * classes))
    return [slice(r0, min(r0 + band, height)) for r0 in range(0, height, band)]


def probabilities_from_cosines(cosines: np.ndarray, temperature: float) -> np.ndarray:
    """softmax_c(cosines / T) over [H, W, C] cosines, in place, a band of rows at a time; temperature T > 0."""
    _check_temperature(temperature)
    height, width, classes = cosines.shape
    for rows in _bands(height, width, classes):
        cosines[rows] = softmax(cosines[rows] / np.float32(temperature))
    return cosines


def pixel_probabilities(
    features: np.ndarray, text_embeddings: np.ndarray, height: int, width: int, temperature: float,
    painted: PaintedMasks | None = None,
) -> np.ndarray:
    """Per-pixel class probabilities p(u) = softmax_c(cos(F(u), t_c) / T), [H, W, C] float32, from `pixel_cosines`
    (which says what F(u) is); temperature T > 0 (unitless)."""
    return probabilities_from_cosines(pixel_cosines(features, text_embeddings, height, width, painted), temperature)


def label_cosines(cosines: np.ndarray) -> np.ndarray:
    """[H, W] float32 max_c of [H, W, C] cosines, the label's own cosine, at least 0 (a confidence, in [0, 1] as the
    softmax's is): the confidence of the authors' code (`extract.confidence: cosine`)."""
    return np.maximum(cosines.max(axis=2), 0.0)


def pixel_labels(
    features: np.ndarray, text_embeddings: np.ndarray, height: int, width: int, temperature: float,
    painted: PaintedMasks | None = None, confidence: str = "softmax",
) -> tuple[np.ndarray, np.ndarray]:
    """A view's labels l(u) = argmax_c p(u) [H, W] int16 and confidence k(u) [H, W] float32, from one pass over its
    cosines: k = max_c p(u) for 'softmax' (METHOD.md), the label's cosine for 'cosine' (`label_cosines`)."""
    if confidence not in ("softmax", "cosine"):
        raise EconsgError(f"confidence: got {confidence!r}, expected 'softmax' or 'cosine'")
    cosines = pixel_cosines(features, text_embeddings, height, width, painted)
    own = label_cosines(cosines) if confidence == "cosine" else None
    labels, probability = labels_and_confidence(probabilities_from_cosines(cosines, temperature))
    return labels, probability if own is None else own


def pixel_probabilities_reference(
    features: np.ndarray, text_embeddings: np.ndarray, height: int, width: int, temperature: float,
    painted: PaintedMasks | None = None,
) -> np.ndarray:
    """Plain twin of `pixel_probabilities`: up-sample the features row chunk by row chunk, then cosine, softmax."""
    _check_temperature(temperature)
    features, text = _check_text(features, text_embeddings, height, width)
    out = np.empty((height, width, text.shape[0]), dtype=np.float32)
    for r0 in range(0, height, _ROW_CHUNK):
        rows = slice(r0, min(r0 + _ROW_CHUNK, height))
        pixels = upsample_feature_rows(features, height, width, rows, painted)
        out[rows] = softmax(pixels @ text.T / np.float32(temperature))
    return out


def _check_text(features, text_embeddings, height, width) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features)
    _check_grid(features, height, width)
    text = np.asarray(text_embeddings)
    if text.ndim != 2 or text.shape[0] < 1 or text.shape[1] != features.shape[2]:
        raise EconsgError(
            f"text_embeddings: got shape {tuple(text.shape)}, expected [C, {features.shape[2]}] matching the feature width"
        )
    return features, np.ascontiguousarray(normalize_rows(text))


def _check_temperature(temperature: float) -> None:
    if not np.isfinite(temperature) or temperature <= 0:
        raise EconsgError(f"temperature: got {temperature}, expected a positive number")


def labels_and_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From [H, W, C] probabilities: labels [H, W] int16 (argmax) and confidence [H, W] float32 (max)."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[2] < 1:
        raise EconsgError(f"probs: got shape {tuple(probs.shape)}, expected [H, W, C] with C >= 1")
    if probs.shape[2] > np.iinfo(np.int16).max:
        raise EconsgError(f"probs: {probs.shape[2]} classes do not fit int16 labels")
    labels = probs.argmax(axis=2)
    confidence = np.take_along_axis(probs, labels[..., None], axis=2)[..., 0]
    return labels.astype(np.int16), confidence.astype(np.float32)
