"""The synthetic teacher: an offline stand-in for dense CLIP features + SAM masks, built from ground truth.

It is the one extract backend that reads ground-truth class and instance maps, and it reads them only
through this degradation model (all knobs in `SyntheticTeacherParams`):

Features (mimicking pixel-level CLIP: blurry at boundaries, noisy, sometimes confidently wrong)
1. Segments: every ground-truth instance (pixels of one instance id and class) is a segment; labelled pixels
   without an instance id form one segment per connected component of their class. Unlabelled pixels (-1)
   carry an uninformative "stuff" feature, the normalised mean of all class embeddings.
2. Instance confusion: with probability `confusion_prob` a segment's feature is pulled toward a confusable
   class: normalize((1 - w) t_true + w t_other), w ~ U(confusion_weight_min, confusion_weight_max); the
   partner is drawn from `confusions` (pairs, both ways) or, for a class without a listed partner in the
   scene (or when class names are not given), is its nearest class in text space. w > 0.5 flips the whole
   instance: no mask can repair that. With `confusion_scope: view` (the default) the draw is the view's own,
   so an object confused in one view is mostly right in the others and 3D fusion can outvote it; with
   `object` it is keyed by the object (instance id, else class) and the run's seed, the same in every view.
3. Patch pooling: the per-pixel clean feature (the segment's) is average-pooled over cells of about
   `patch_size` pixels (grid h = round(H / patch_size), w = round(W / patch_size); pixel centre y falls in
   cell floor(y * h / H)), so cells straddling a boundary mix classes; optional Gaussian blur of the grid
   (`grid_blur`, in cells).
4. Noise: i.i.d. Gaussian noise per cell and component, drawn afresh in every view (so fusing views averages
   it, where a real VLM's error on a surface is partly the same from view to view), std feature_noise / sqrt(D)
   (so `feature_noise` is the expected noise norm relative to the unit clean feature); renormalise; float16. Bilinear
   up-sampling turns the noise into blotches inside objects, which mask votes can repair.
5. Labels and confidence: argmax and max of softmax(cos(F, t) / T) over the training vocabulary, exactly as
   a real backend computes them (`pixel_probabilities`).

Masks (mimicking SAM's automatic masks)
6. One mask per segment, then per mask: dropped with `p_drop`; merged with a touching segment with
   `p_merge` (the partner's own mask is not emitted); cut in two by a random line through a random pixel of
   it with `p_split`; boundaries dilated or eroded by a random 0..`boundary_jitter` pixels.
7. `part_masks` random part masks per view: a disc around a random pixel of a random mask, intersected with it.
8. Masks under `min_area` pixels are removed. Scores: predicted IoU and stability drawn near 0.9, lowered by
   each degradation the mask suffered; area in pixels. Masks are sorted by decreasing area.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from econsg.config.extract import SyntheticTeacherParams
from econsg.errors import EconsgError
from econsg.features.base import ViewFeatures, normalize_rows, pixel_labels

_CROSS = ndimage.generate_binary_structure(2, 1)


def ground_truth_segments(gt_class: np.ndarray, gt_instance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Segment map [H, W] int32 (-1 = unlabelled) and each segment's class [S] int64.

    A segment is one (instance id > 0, class) pair, or a connected component of a class's pixels that carry
    no instance id (or of every class when gt_instance is None).
    """
    gt_class = np.asarray(gt_class).astype(np.int64)
    segment = np.full(gt_class.shape, -1, dtype=np.int32)
    classes: list[int] = []
    labelled = gt_class >= 0
    with_instance = labelled & (np.asarray(gt_instance) > 0) if gt_instance is not None else np.zeros_like(labelled)
    if with_instance.any():
        # one int64 key per (instance, class) pair, ordered as the pairs are: a 1-D unique is ~20x faster than axis=0
        instance, cls = np.asarray(gt_instance)[with_instance].astype(np.int64), gt_class[with_instance]
        base = int(cls.max()) + 1
        unique, inverse = np.unique(instance * base + cls, return_inverse=True)
        segment[with_instance] = inverse.ravel().astype(np.int32)
        classes.extend(int(c) for c in unique % base)
    rest = labelled & ~with_instance
    for c in np.unique(gt_class[rest]):
        components, n = ndimage.label(rest & (gt_class == c), structure=_CROSS)
        inside = components > 0
        segment[inside] = components[inside] - 1 + len(classes)
        classes.extend([int(c)] * n)
    return segment, np.asarray(classes, dtype=np.int64)


def confusion_partners(
    class_embeddings: np.ndarray, class_names: list[str] | None, confusions: list[tuple[str, str]]
) -> list[list[int]]:
    """For every scene class, the class ids it may be confused with (listed pairs, else its nearest class)."""
    K = len(class_embeddings)
    partners: list[list[int]] = [[] for _ in range(K)]
    if class_names is not None:
        index = {name: i for i, name in enumerate(class_names)}
        for a, b in confusions:
            if a in index and b in index:
                partners[index[a]].append(index[b])
                partners[index[b]].append(index[a])
    if K > 1:
        cosine = class_embeddings @ class_embeddings.T
        np.fill_diagonal(cosine, -np.inf)
        nearest = cosine.argmax(axis=1)
        for k in range(K):
            if not partners[k]:
                partners[k] = [int(nearest[k])]
    return [sorted(set(p)) for p in partners]


def confusion_generators(
    segment: np.ndarray,
    segment_class: np.ndarray,
    gt_instance: np.ndarray | None,
    scope: str,
    rng: np.random.Generator,
    object_seed: int | None,
) -> list[np.random.Generator]:
    """The generator each segment's confusion is drawn from (step 2): the view's own, or one per object, keyed by
    the segment's instance id (0 for a segment without one, so by its class) and the run's seed."""
    if scope == "view":
        return [rng] * len(segment_class)
    if object_seed is None:
        raise EconsgError("extract.synthetic.confusion_scope: 'object' needs the run's seed (object_seed), got None")
    instances = np.zeros(len(segment_class), dtype=np.int64)
    if gt_instance is not None:
        inside = segment >= 0
        instances[segment[inside]] = np.maximum(np.asarray(gt_instance)[inside], 0)
    return [np.random.default_rng([object_seed, 3, int(i), int(k)]) for i, k in zip(instances, segment_class)]


def confused_segment_features(
    segment_class: np.ndarray,
    class_embeddings: np.ndarray,
    partners: list[list[int]],
    params: SyntheticTeacherParams,
    generators: list[np.random.Generator],
) -> np.ndarray:
    """[S, D] float32 unit clean features of the segments after instance confusion (step 2)."""
    features = class_embeddings[segment_class].astype(np.float32)
    for s, (k, rng) in enumerate(zip(segment_class, generators)):
        confused = rng.random() < params.confusion_prob
        weight = rng.uniform(params.confusion_weight_min, params.confusion_weight_max)
        choice = rng.integers(1 << 30)
        if confused and partners[k]:
            other = partners[k][choice % len(partners[k])]
            features[s] = (1.0 - weight) * class_embeddings[k] + weight * class_embeddings[other]
    return normalize_rows(features)


def feature_grid_shape(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Grid (h, w) of about patch_size pixels per cell, at least 1 x 1."""
    return max(1, round(height / patch_size)), max(1, round(width / patch_size))


def pool_to_patch_grid(
    segment: np.ndarray, segment_features: np.ndarray, background: np.ndarray, grid: tuple[int, int]
) -> np.ndarray:
    """[h, w, D] float32 average of the per-pixel clean features over each grid cell (step 3, before blur)."""
    H, W = segment.shape
    h, w = grid
    S = len(segment_features)
    rows = ((np.arange(H) + 0.5) * h / H).astype(np.int64)
    cols = ((np.arange(W) + 0.5) * w / W).astype(np.int64)
    cell = rows[:, None] * w + cols[None, :]
    seg = np.where(segment >= 0, segment, S).astype(np.int64)  # background is the extra last segment
    counts = np.bincount((cell * (S + 1) + seg).ravel(), minlength=h * w * (S + 1)).reshape(h * w, S + 1)
    table = np.concatenate([segment_features, background[None]], axis=0)
    pooled = counts.astype(np.float32) @ table / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return pooled.reshape(h, w, -1).astype(np.float32)


def _split_by_line(mask: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    ys, xs = np.nonzero(mask)
    pick = rng.integers(len(ys))
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.nonzero(np.ones_like(mask))
    side = ((xx - xs[pick]) * np.cos(angle) + (yy - ys[pick]) * np.sin(angle) >= 0).reshape(mask.shape)
    return [mask & side, mask & ~side]


def _jitter(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius > 0:
        return ndimage.binary_dilation(mask, structure=_CROSS, iterations=radius)
    if radius < 0:
        return ndimage.binary_erosion(mask, structure=_CROSS, iterations=-radius)
    return mask


def degraded_instance_masks(
    segment: np.ndarray, params: SyntheticTeacherParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """SAM-like masks [M, H, W] bool (decreasing area) and scores [M, 3] float32 (steps 6-8)."""
    H, W = segment.shape
    S = int(segment.max()) + 1 if segment.size else 0
    consumed = np.zeros(S, dtype=bool)
    out: list[tuple[np.ndarray, int]] = []  # (mask, number of degradations)
    for s in range(S):
        drop, merge, split = rng.random(3)
        mask = segment == s
        if consumed[s] or not mask.any():
            continue
        consumed[s] = True
        if drop < params.p_drop:
            continue
        damage = 0
        if merge < params.p_merge:
            ring = ndimage.binary_dilation(mask, structure=_CROSS) & ~mask
            neighbours = [int(n) for n in np.unique(segment[ring]) if n >= 0 and not consumed[n]]
            if neighbours:
                partner = neighbours[rng.integers(len(neighbours))]
                mask = mask | (segment == partner)
                consumed[partner] = True
                damage += 1
        pieces = [mask]
        if split < params.p_split and mask.sum() >= 2:
            pieces = _split_by_line(mask, rng)
            damage += 1
        for piece in pieces:
            radius = int(rng.integers(-params.boundary_jitter, params.boundary_jitter + 1))
            out.append((_jitter(piece, radius), damage + (radius != 0)))
    for _ in range(params.part_masks if out else 0):
        base, damage = out[rng.integers(len(out))]
        ys, xs = np.nonzero(base)
        if len(ys) == 0:
            continue
        pick = rng.integers(len(ys))
        radius = rng.uniform(0.25, 0.6) * np.sqrt(len(ys) / np.pi)
        yy, xx = np.mgrid[0:H, 0:W]
        disc = (yy - ys[pick]) ** 2 + (xx - xs[pick]) ** 2 <= radius**2
        out.append((base & disc, damage + 1))
    kept = [(m, d) for m, d in out if m.sum() >= params.min_area]
    if not kept:
        return np.zeros((0, H, W), dtype=bool), np.zeros((0, 3), dtype=np.float32)
    masks = np.stack([m for m, _ in kept])
    damage = np.array([d for _, d in kept], dtype=np.float32)
    area = masks.reshape(len(masks), -1).sum(axis=1).astype(np.float32)
    iou = np.clip(rng.normal(0.92, 0.03, len(masks)) - 0.08 * damage, 0.3, 1.0)
    stability = np.clip(rng.normal(0.95, 0.02, len(masks)) - 0.05 * damage, 0.3, 1.0)
    order = np.argsort(-area, kind="stable")
    scores = np.stack([iou, stability, area], axis=1).astype(np.float32)
    return masks[order], scores[order]


def synthetic_teacher_view(
    gt_class: np.ndarray,
    gt_instance: np.ndarray | None,
    class_embeddings: np.ndarray,
    vocabulary_embeddings: np.ndarray,
    params: SyntheticTeacherParams,
    temperature: float,
    rng: np.random.Generator,
    *,
    class_names: list[str] | None = None,
    object_seed: int | None = None,
    confidence: str = "softmax",
) -> ViewFeatures:
    """One view of the synthetic teacher (degradation model in the module docstring).

    gt_class [H, W] int (scene class ids, -1 unlabelled); gt_instance [H, W] int (0 = none) or None;
    class_embeddings [K, D]: text embeddings of ALL scene classes (the truth side, open-set classes too);
    vocabulary_embeddings [C, D]: the training vocabulary the labels are scored against; temperature T > 0;
    rng: the view's source of randomness; class_names [K]: scene class names, needed for params.confusions
    (without them every class is confused with its nearest class in text space); object_seed: the run's seed,
    which keys the confusions when params.confusion_scope is 'object'; confidence: what the view's confidence is,
    'softmax' or 'cosine' (`econsg.features.base.pixel_labels`).
    """
    gt_class = np.asarray(gt_class)
    if gt_class.ndim != 2 or min(gt_class.shape) < 1:
        raise EconsgError(f"gt_class: got shape {gt_class.shape}, expected a non-empty [H, W] class map")
    if gt_instance is not None and np.shape(gt_instance) != gt_class.shape:
        raise EconsgError(f"gt_instance: got shape {np.shape(gt_instance)}, expected {gt_class.shape} like gt_class")
    class_embeddings = np.asarray(class_embeddings, dtype=np.float32)
    if class_embeddings.ndim != 2 or len(class_embeddings) < 1:
        raise EconsgError(f"class_embeddings: got shape {class_embeddings.shape}, expected [K, D] with K >= 1")
    K, D = class_embeddings.shape
    if gt_class.max() >= K or gt_class.min() < -1:
        raise EconsgError(f"gt_class: values in [{gt_class.min()}, {gt_class.max()}], expected -1 or class ids below {K}")
    vocabulary_embeddings = np.asarray(vocabulary_embeddings, dtype=np.float32)
    if vocabulary_embeddings.ndim != 2 or vocabulary_embeddings.shape[1] != D or len(vocabulary_embeddings) < 1:
        raise EconsgError(f"vocabulary_embeddings: got shape {vocabulary_embeddings.shape}, expected [C, {D}]")
    if class_names is not None and len(class_names) != K:
        raise EconsgError(f"class_names: got {len(class_names)} names, expected {K} like class_embeddings")
    H, W = gt_class.shape
    class_embeddings = normalize_rows(class_embeddings)

    # one stream per step, so that a knob of one step (feature_noise, patch_size, confusion_scope) redraws no other's
    confusion_rng, noise_rng, mask_rng = rng.spawn(3)
    segment, segment_class = ground_truth_segments(gt_class, gt_instance)
    partners = confusion_partners(class_embeddings, class_names, [tuple(p) for p in params.confusions])
    generators = confusion_generators(segment, segment_class, gt_instance, params.confusion_scope, confusion_rng,
                                      object_seed)
    segment_features = confused_segment_features(segment_class, class_embeddings, partners, params, generators)
    background = normalize_rows(class_embeddings.mean(axis=0))
    grid = pool_to_patch_grid(segment, segment_features, background, feature_grid_shape(H, W, params.patch_size))
    if params.grid_blur > 0:
        grid = ndimage.gaussian_filter(grid, sigma=(params.grid_blur, params.grid_blur, 0), mode="nearest")
    if params.feature_noise > 0:
        grid = grid + noise_rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(params.feature_noise / np.sqrt(D))
    features = normalize_rows(grid).astype(np.float16)

    labels, k = pixel_labels(features, vocabulary_embeddings, H, W, temperature, confidence=confidence)
    masks, scores = degraded_instance_masks(segment, params, mask_rng)
    return ViewFeatures(features=features, labels=labels, confidence=k, masks=masks, mask_scores=scores)
