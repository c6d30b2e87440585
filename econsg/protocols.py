"""Benchmarks' own scoring protocols, each reproducing the numbers its reference code reports.

- `score_paper`: econSG's protocol (paper, Sec. 4): mIoU and mAcc over the classes present in the
  ground truth, confusion accumulated over all evaluated pixels of all views (econsg.metrics).
- `score_ovs3d`: 3D-OVS (Kunhao-Liu/3D-OVS renderer.py `evaluation_segmentation_test`).
- `score_lerf` + `summarise_lerf`: LERF-OVS as LangSplat scores it (eval/evaluate_iou_loc.py).
- `scannet_subset`: the 19/15/10-class ScanNet subsets (OpenGaussian scripts/eval_scannet.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter

from econsg.errors import EconsgError
from econsg.metrics import confusion_matrix, segmentation_scores
from econsg.scene.data import IGNORE
from econsg.scene.readers.lerf import LerfQueryTruth
from econsg.scene.readers.scannet import NYU40_CLASS_NAMES, SCANNET_SUBSETS

LERF_SMOOTH_KERNEL = 30  # LangSplat: 30x30 box filter before the peak search and the IoU
LERF_MASK_THRESHOLD = 0.4  # LangSplat eval.sh / argparse default `mask_thresh`
LERF_MAJORITY_RADIUS = 3  # LangSplat eval/utils.py `smooth`: majority vote in a 7x7 window
LERF_CANONICAL = ("object", "things", "stuff", "texture")  # LERF's canonical negative phrases
LERF_RELEVANCY_TEMPERATURE = 0.1  # LangSplat eval/openclip_encoder.py `get_relevancy`: cosines x 10
LERF_BARE_PROMPT = ("{}",)  # LangSplat eval/openclip_encoder.py tokenizes each phrase alone, with no template


def score_paper(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> dict:
    """econSG protocol on label maps ([H,W] or [V,H,W], same shape): mIoU / mAcc over classes present.

    gt == ignore is skipped; a prediction of ignore counts as wrong. Returns `miou`, `macc`,
    `pixel_accuracy`, `per_class_iou` (list, NaN for absent classes), `present` (class ids averaged).
    """
    scores = segmentation_scores(confusion_matrix(pred, gt, num_classes, ignore))
    return {
        "miou": scores["miou"],
        "macc": scores["macc"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "per_class_iou": scores["iou"].tolist(),
        "present": np.flatnonzero(scores["present"]).tolist(),
    }


def score_ovs3d(pred: np.ndarray, gt_masks: np.ndarray, class_names: Sequence[str]) -> dict:
    """3D-OVS protocol. pred [V,H,W] (or [H,W]) class ids = argmax over the scene's classes.txt (sorted,
    as the reference sorts it); gt_masks [V,C,H,W] (or [C,H,W]) bool, one mask per class (a pixel may be
    in none or several).

    As the reference computes it (sklearn on the [pixels, C] indicator matrices of gt and one-hot pred):
    - per view and class, IoU = |gt_c AND pred_c| / |gt_c OR pred_c|, and 0 when the union is empty
      (sklearn's zero_division default); a view's mIoU is the mean over ALL C classes;
    - per view, accuracy = share of pixels whose whole indicator row matches (sklearn's subset accuracy):
      a pixel covered by no mask, or by several, is always wrong;
    - `miou` and `accuracy` are means over views. Also returns `per_view_miou`, `per_view_accuracy`,
      `per_class_iou` (mean over views).
    A pixel no Gaussian reaches (IGNORE, -1: no class, where the reference's argmax always names one) is wrong: it
    is in no class's prediction, and its row matches no mask.
    """
    pred = np.asarray(pred)
    gt_masks = np.asarray(gt_masks).astype(bool)
    if pred.ndim == 2:
        pred, gt_masks = pred[None], gt_masks[None]
    C = len(class_names)
    if gt_masks.ndim != 4 or gt_masks.shape[1] != C or gt_masks.shape[0] != pred.shape[0] or gt_masks.shape[2:] != pred.shape[1:]:
        raise EconsgError(
            f"score_ovs3d: masks have shape {gt_masks.shape}, expected [V, C={C}, H, W] matching predictions {pred.shape}"
        )
    if pred.size and (pred.min() < IGNORE or pred.max() >= C):
        raise EconsgError(f"score_ovs3d: predicted ids span {pred.min()}..{pred.max()}, expected 0..{C - 1} (argmax over "
                          f"classes.txt) or {IGNORE} (no class)")
    ious, accuracies = [], []
    for labels, masks in zip(pred, gt_masks):
        one_hot = labels[None] == np.arange(C)[:, None, None]
        inter = (one_hot & masks).sum(axis=(1, 2))
        union = (one_hot | masks).sum(axis=(1, 2))
        ious.append(np.where(union > 0, inter / np.maximum(union, 1), 0.0))
        accuracies.append(float((np.all(one_hot == masks, axis=0) & (labels != IGNORE)).mean()))
    ious = np.array(ious)
    return {
        "miou": float(ious.mean()),
        "accuracy": float(np.mean(accuracies)),
        "per_view_miou": ious.mean(axis=1).tolist(),
        "per_view_accuracy": accuracies,
        "per_class_iou": dict(zip(class_names, ious.mean(axis=0).tolist())),
    }


def box_smooth(relevancy: np.ndarray, size: int = LERF_SMOOTH_KERNEL) -> np.ndarray:
    """[...,H,W] mean over a size x size window per map, like cv2.filter2D with a normalised box kernel
    (anchor at size // 2, border BORDER_REFLECT_101 = scipy's 'mirror')."""
    return uniform_filter(np.asarray(relevancy, np.float64), size=(1,) * (relevancy.ndim - 2) + (size, size), mode="mirror")


def majority_smooth(mask: np.ndarray, radius: int = LERF_MAJORITY_RADIUS) -> np.ndarray:
    """[H,W] 0/1 majority vote as LangSplat's eval/utils.py `smooth` computes it: pixel (i, j) takes the
    majority of rows max(0, i-r) .. min(i+r+1, H-1) - 1 and the same for columns (its upper bound
    excludes the last row / column of the image); ties go to 0; an empty window gives 0."""
    mask = np.asarray(mask, np.int64)
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    i = np.arange(h)
    j = np.arange(w)
    r0, r1 = np.maximum(0, i - radius), np.minimum(i + radius + 1, h - 1)
    c0, c1 = np.maximum(0, j - radius), np.minimum(j + radius + 1, w - 1)
    r1 = np.maximum(r1, r0)
    c1 = np.maximum(c1, c0)
    ones = integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0]
    total = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return (2 * ones > total).astype(np.uint8)


def _truth(query) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(query, LerfQueryTruth):
        return np.asarray(query.boxes, np.float64).reshape(-1, 4), np.asarray(query.mask, bool)
    boxes, mask = query
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(mask, bool)


def score_lerf(relevancy: np.ndarray, truths: Sequence, threshold: float = LERF_MASK_THRESHOLD) -> dict:
    """LERF-OVS scoring of one frame, as LangSplat's eval/evaluate_iou_loc.py does it.

    relevancy: [Q,H,W] or [L,Q,H,W] relevancy maps (L = feature levels, e.g. LangSplat's 3 SAM levels;
    the reference's `get_max_across` output), one per query; truths: per query a LerfQueryTruth or a
    (boxes [B,4] x1 y1 x2 y2, mask [H,W]) pair.
    - Localization: each level's map is box-smoothed (30x30); the level with the highest smoothed peak is
      chosen; the query is a hit when any pixel (column x, row y) attaining that peak lies inside any GT
      box (bounds inclusive).
    - IoU: per level, v = (box_smooth(r) + r) / 2; v is min-max normalised to [0, 1] (+1e-9), mapped to
      2v - 1 and clipped to [0, 1]; mask = v > threshold, then `majority_smooth`; IoU against the GT
      mask. The level with the highest max(v) is chosen (independently of localization's choice).
    Returns per-query lists `hit`, `iou`, `localization_level`, `iou_level`.
    """
    relevancy = np.asarray(relevancy, np.float64)
    if relevancy.ndim == 3:
        relevancy = relevancy[None]
    if relevancy.ndim != 4 or relevancy.shape[1] != len(truths):
        raise EconsgError(f"score_lerf: relevancy has shape {relevancy.shape}, expected [Q={len(truths)}, H, W] or [L, Q, H, W]")
    smoothed = box_smooth(relevancy)
    hits, ious, loc_levels, iou_levels = [], [], [], []
    for q, query in enumerate(truths):
        boxes, gt_mask = _truth(query)
        if gt_mask.shape != relevancy.shape[2:]:
            raise EconsgError(f"score_lerf: query {q} mask is {gt_mask.shape}, relevancy maps are {relevancy.shape[2:]}")
        level = int(np.argmax(smoothed[:, q].reshape(len(smoothed), -1).max(axis=1)))
        peak = smoothed[level, q]
        rows, cols = np.nonzero(peak == peak.max())
        x_min, x_max = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
        y_min, y_max = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
        inside = (cols[:, None] >= x_min) & (cols[:, None] <= x_max) & (rows[:, None] >= y_min) & (rows[:, None] <= y_max)
        hits.append(bool(inside.any()))
        loc_levels.append(level)

        blended = 0.5 * (smoothed[:, q] + relevancy[:, q])
        level_ious = []
        for v in blended:
            v = v - v.min()
            v = np.clip(2.0 * v / (v.max() + 1e-9) - 1.0, 0.0, 1.0)
            mask = majority_smooth(v > threshold).astype(bool)
            union = np.logical_or(mask, gt_mask).sum()
            level_ious.append(float(np.logical_and(mask, gt_mask).sum() / union) if union else 0.0)
        chosen = int(np.argmax(blended.reshape(len(blended), -1).max(axis=1)))
        ious.append(level_ious[chosen])
        iou_levels.append(chosen)
    return {"hit": hits, "iou": ious, "localization_level": loc_levels, "iou_level": iou_levels}


def summarise_lerf(frame_scores: Sequence[dict]) -> dict:
    """LangSplat's totals over frames: localization accuracy = hits / (frame, query) pairs; mIoU = mean IoU."""
    hits = [h for s in frame_scores for h in s["hit"]]
    ious = [i for s in frame_scores for i in s["iou"]]
    if not hits:
        raise EconsgError("summarise_lerf: no queries were scored")
    return {"localization_accuracy": sum(hits) / len(hits), "miou": float(np.mean(ious)), "queries": len(hits)}


def scannet_subset_names(subset: int) -> list[str]:
    """NYU40 names of a ScanNet subset (19, 15 or 10 classes), in the subset's order."""
    if subset not in SCANNET_SUBSETS:
        raise EconsgError(f"scannet subset: {subset!r} is not one of {sorted(SCANNET_SUBSETS)}")
    return [NYU40_CLASS_NAMES[i - 1] for i in SCANNET_SUBSETS[subset]]


def scannet_subset(labels_nyu40: np.ndarray, subset: int) -> np.ndarray:
    """Labels in this project's ScanNet convention (index into NYU40_CLASS_NAMES = nyu40id - 1; IGNORE)
    -> subset indices 0..subset-1 (order of SCANNET_SUBSETS[subset]); other classes become IGNORE."""
    if subset not in SCANNET_SUBSETS:
        raise EconsgError(f"scannet subset: {subset!r} is not one of {sorted(SCANNET_SUBSETS)}")
    labels = np.asarray(labels_nyu40).astype(np.int64)
    bad = (labels != IGNORE) & ((labels < 0) | (labels >= len(NYU40_CLASS_NAMES)))
    if bad.any():
        raise EconsgError(f"scannet subset: label ids {sorted(set(labels[bad].tolist()))[:10]} are outside 0..39 (nyu40id - 1) and -1")
    lookup = np.full(len(NYU40_CLASS_NAMES) + 1, IGNORE, np.int64)  # last slot serves IGNORE
    for index, nyu40 in enumerate(SCANNET_SUBSETS[subset]):
        lookup[nyu40 - 1] = index
    return lookup[np.where(labels == IGNORE, len(NYU40_CLASS_NAMES), labels)].astype(np.int16)
