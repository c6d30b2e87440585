"""Segmentation metrics on label maps and the multi-view consistency of labels.

Protocol (econSG paper, Sec. 4 and Table 1, which does not say how views are pooled): mIoU and mAcc
are means over the classes PRESENT in the ground truth (classes with at least one ground-truth pixel),
read from one confusion matrix summed over every held-out view's pixels, not a mean of per-view mIoUs
(on the demo those read 0.851 and 0.906). A class that is only predicted enters neither mean; its
pixels still count against the classes they belong to. mAcc is the mean per-class accuracy (recall),
not pixel accuracy.

Label conventions follow DEVELOPERS.md: class ids index the scene's class list, IGNORE = -1.
"""

from __future__ import annotations

import numpy as np

from econsg.errors import EconsgError
from econsg.scene.data import IGNORE


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """[C, C+1] int64 counts: row = ground-truth class, column = predicted class.

    `pred` and `gt` are integer label arrays of the same shape ([N] or [H, W]). Pixels whose gt is
    `ignore` are skipped. A prediction of `ignore` (or any id outside 0..C-1) for a labelled pixel
    is counted as wrong: it lands in the extra last column C ("no prediction"), so it enlarges the
    ground-truth total of its row (lower accuracy and IoU of that class) without being a false
    positive of any class. Ground-truth ids other than `ignore` outside 0..C-1 raise EconsgError.
    Sum matrices of several views with `+`; `segmentation_scores` accepts [C, C+1] or [C, C].
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise EconsgError(f"confusion_matrix: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if num_classes < 1:
        raise EconsgError(f"confusion_matrix: num_classes is {num_classes}, expected at least 1")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer)):
        raise EconsgError(f"confusion_matrix: labels must be integer arrays, got {pred.dtype} and {gt.dtype}")
    gt = gt.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    labelled = gt != ignore
    bad = labelled & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        raise EconsgError(
            f"confusion_matrix: ground-truth ids {sorted(set(gt[bad].tolist()))[:10]} are outside 0..{num_classes - 1} "
            f"(and not the ignore value {ignore})"
        )
    gt = gt[labelled]
    pred = pred[labelled]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    width = num_classes + 1
    counts = np.bincount(gt * width + pred, minlength=num_classes * width)
    return counts.reshape(num_classes, width).astype(np.int64)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """Per-class and mean scores from a confusion matrix (rows gt, columns prediction).

    `confusion` is [C, C] or [C, C+1] (the last column = pixels left without a prediction).
    Returns a dict:
      `iou` [C] float64: TP / (gt + predicted - TP); NaN for classes absent from the ground truth;
      `acc` [C] float64: TP / gt (per-class accuracy); NaN for absent classes;
      `present` [C] bool: the class has ground-truth pixels;
      `miou`, `macc`: means of `iou` / `acc` over present classes (NaN when none is present);
      `pixel_accuracy`: correct / all labelled pixels (NaN when there are none);
      `num_present`: the number of classes averaged.
    Classes predicted but absent from the ground truth do not enter the means (econSG protocol).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[1] not in (confusion.shape[0], confusion.shape[0] + 1):
        raise EconsgError(f"segmentation_scores: confusion has shape {confusion.shape}, expected [C, C] or [C, C+1]")
    if (confusion < 0).any():
        raise EconsgError("segmentation_scores: confusion has negative counts")
    C = confusion.shape[0]
    confusion = confusion.astype(np.float64)
    tp = np.diag(confusion[:, :C])
    gt_total = confusion.sum(axis=1)
    pred_total = confusion[:, :C].sum(axis=0)
    present = gt_total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / (gt_total + pred_total - tp), np.nan)
        acc = np.where(present, tp / gt_total, np.nan)
    total = gt_total.sum()
    return {
        "iou": iou,
        "acc": acc,
        "present": present,
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "macc": float(acc[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "num_present": int(present.sum()),
    }


def miou(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> float:
    """mIoU over the classes present in `gt` of one label map pair (IGNORE predictions count as wrong)."""
    return segmentation_scores(confusion_matrix(pred, gt, num_classes, ignore))["miou"]


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (x, y) of every pixel centre ([H, W] each), centres at +0.5."""
    y, x = np.meshgrid(np.arange(height, dtype=np.float64) + 0.5, np.arange(width, dtype=np.float64) + 0.5, indexing="ij")
    return x, y


def multiview_consistency(
    depth_a: np.ndarray,
    K_a: np.ndarray,
    c2w_a: np.ndarray,
    labels_a: np.ndarray,
    depth_b: np.ndarray,
    K_b: np.ndarray,
    c2w_b: np.ndarray,
    labels_b: np.ndarray,
    rel_tol: float = 0.05,
    ignore: int = IGNORE,
) -> tuple[float, int]:
    """Label agreement of the same surface points seen from views A and B; returns (fraction, count).

    depth_* [H,W] metric z-depth (0 = invalid), K_* 3x3 pixels, c2w_* 4x4 OpenCV camera-to-world,
    labels_* [H,W] integer class ids (IGNORE skipped). Every pixel of A with valid depth is
    back-projected through its centre (j + 0.5, i + 0.5), transformed into B and projected; it is
    compared with the B pixel it falls in when it lies in front of B, inside B's image, and B's
    depth there agrees with the point's z in B within `rel_tol` x z (a visibility test: occluded
    points are dropped). `fraction` = agreeing labels / compared points (NaN when none is compared);
    `count` = the number of compared points (both labels not `ignore`). This is econsg's own
    definition of the paper's "multi-view consistency" (the paper gives no formula).
    """
    depth_a = np.asarray(depth_a, np.float64)
    depth_b = np.asarray(depth_b, np.float64)
    labels_a = np.asarray(labels_a)
    labels_b = np.asarray(labels_b)
    if depth_a.ndim != 2 or labels_a.shape != depth_a.shape:
        raise EconsgError(f"multiview_consistency: view A depth {depth_a.shape} and labels {labels_a.shape} must be the same [H, W]")
    if depth_b.ndim != 2 or labels_b.shape != depth_b.shape:
        raise EconsgError(f"multiview_consistency: view B depth {depth_b.shape} and labels {labels_b.shape} must be the same [H, W]")
    if rel_tol <= 0:
        raise EconsgError(f"multiview_consistency: rel_tol is {rel_tol}, expected > 0")
    K_a = np.asarray(K_a, np.float64)
    K_b = np.asarray(K_b, np.float64)
    c2w_a = np.asarray(c2w_a, np.float64)
    c2w_b = np.asarray(c2w_b, np.float64)

    x, y = _pixel_grid(*depth_a.shape)
    keep = (depth_a > 0) & np.isfinite(depth_a) & (labels_a != ignore)
    z = depth_a[keep]
    rays = np.linalg.inv(K_a) @ np.stack([x[keep], y[keep], np.ones_like(z)])  # [3, N], z component 1
    cam_a = rays * z
    world = c2w_a[:3, :3] @ cam_a + c2w_a[:3, 3:4]
    w2c_b = np.linalg.inv(c2w_b)
    cam_b = w2c_b[:3, :3] @ world + w2c_b[:3, 3:4]
    zb = cam_b[2]
    front = zb > 1e-9
    uvw = K_b @ cam_b[:, front]
    u = uvw[0] / uvw[2]
    v = uvw[1] / uvw[2]
    col = np.floor(u).astype(np.int64)
    row = np.floor(v).astype(np.int64)
    Hb, Wb = depth_b.shape
    inside = (col >= 0) & (col < Wb) & (row >= 0) & (row < Hb)
    col, row = col[inside], row[inside]
    zb = zb[front][inside]
    labels_src = labels_a[keep][front][inside]
    seen = depth_b[row, col]
    visible = (seen > 0) & (np.abs(seen - zb) <= rel_tol * zb)
    target = labels_b[row[visible], col[visible]]
    source = labels_src[visible]
    compared = target != ignore
    count = int(compared.sum())
    if count == 0:
        return float("nan"), 0
    return float((source[compared] == target[compared]).mean()), count
