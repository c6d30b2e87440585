"""Scoring that reads ground truth. Only this module, ingest, the synthetic teacher and evaluate do.

Stages before evaluate (crr, fuse) call these functions to report metrics; the functions return
numbers only, so no ground truth flows back into what those stages write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from econsg.errors import NoGroundTruthError
from econsg.metrics import confusion_matrix, segmentation_scores
from econsg.scene.data import IGNORE
from econsg.scene.store import open_ground_truth


def vocabulary_to_scene_ids(vocabulary: Sequence[str], scene_classes: Sequence[str]) -> np.ndarray:
    """Map vocabulary indices to scene class ids (-1 where the scene lacks the class)."""
    index = {name: i for i, name in enumerate(scene_classes)}
    return np.array([index.get(name, IGNORE) for name in vocabulary], dtype=np.int64)


def label_names(scene_classes: Sequence[str], vocabulary: Sequence[str]) -> list[str]:
    """The names evaluate's label maps index: the scene's classes, then the words of `vocabulary` the scene lacks, so
    that a pixel such a word explains best keeps that label (wrong wherever the ground truth names a class) instead of
    reading as unlabelled."""
    lacking = [word for word, c in zip(vocabulary, vocabulary_to_scene_ids(vocabulary, scene_classes)) if c == IGNORE]
    return [*scene_classes, *lacking]


def to_scene_ids(labels: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Vocabulary-indexed labels (IGNORE kept) as scene class ids."""
    out = np.full(labels.shape, IGNORE, np.int64)
    valid = labels >= 0
    out[valid] = lookup[labels[valid]]
    return out


def restrict_gt(gt: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Ground truth with classes outside `allowed` (scene ids) set to IGNORE."""
    return np.where(np.isin(gt, allowed), gt, IGNORE)


def scene_has_labels(scene_path: Path) -> bool:
    """Whether the scene holds ground-truth class maps (what a stage's metrics say under has_ground_truth)."""
    try:
        open_ground_truth(scene_path)
    except NoGroundTruthError:
        return False
    return True


def score_crr_labels(
    scene_path: Path,
    *,
    views: Sequence[int],
    raw: Callable[[int], np.ndarray],
    refined: Callable[[int], np.ndarray],
    vocabulary: Sequence[str],
) -> dict:
    """2D mIoU/mAcc of raw and CRR-refined labels on training views, over the vocabulary's classes.

    Refined labels may be IGNORE: `refined_*` scores labelled pixels only (what supervision uses),
    `refined_*_ignore_as_wrong` counts ignored pixels as errors, `refined_coverage` is the labelled share.
    """
    try:
        truth = open_ground_truth(scene_path)
    except NoGroundTruthError:  # a dataset without labels: nothing to score
        return {"has_ground_truth": False}
    lookup = vocabulary_to_scene_ids(vocabulary, truth.class_names)
    allowed = lookup[lookup >= 0]
    C = len(truth.class_names)
    conf_raw = np.zeros((C, C + 1), np.int64)
    conf_refined = np.zeros((C, C + 1), np.int64)
    conf_refined_all = np.zeros((C, C + 1), np.int64)
    labelled = total = 0
    for v in views:
        gt = restrict_gt(truth.classes(v).astype(np.int64), allowed)
        raw_ids = to_scene_ids(raw(v), lookup)
        refined_labels = np.asarray(refined(v))
        refined_ids = to_scene_ids(refined_labels, lookup)
        conf_raw += confusion_matrix(raw_ids, gt, C)
        keep = refined_labels != IGNORE  # crr's ignore; a word the scene lacks (-1 as a scene id) is a wrong label
        conf_refined += confusion_matrix(refined_ids[keep], gt[keep], C)
        conf_refined_all += confusion_matrix(refined_ids, gt, C)
        labelled += int((keep & (gt != IGNORE)).sum())
        total += int((gt != IGNORE).sum())
    raw_scores = segmentation_scores(conf_raw)
    refined_scores = segmentation_scores(conf_refined)
    refined_all = segmentation_scores(conf_refined_all)
    return {
        "has_ground_truth": True,
        "views": len(views),
        "raw_miou": raw_scores["miou"],
        "raw_macc": raw_scores["macc"],
        "refined_miou": refined_scores["miou"],
        "refined_macc": refined_scores["macc"],
        "refined_miou_ignore_as_wrong": refined_all["miou"],
        "refined_coverage": labelled / total if total else None,  # None: no labelled pixel (3D-OVS labels test views only)
        "miou_gain": refined_scores["miou"] - raw_scores["miou"],
    }



def score_fused_points(
    scene_path: Path,
    *,
    views: Sequence[int],
    samples: Callable[[int], tuple[np.ndarray, np.ndarray]],
    raw: Callable[[int], np.ndarray],
    fused_keys: np.ndarray,
    fused_label: np.ndarray,
    voxel_size: float,
    vocabulary: Sequence[str],
) -> dict:
    """Accuracy of fused point labels against the GT of every pixel that saw them, beside the raw 2D labels
    of the same pixels (the multi-view consistency gain). GT of classes outside the vocabulary is skipped;
    a point without a label (seen only by pixels crr ignored) counts as wrong. A pixel's point is the one whose voxel key
    (`fused_keys`, FusedPoints.voxel_key) its sample's position falls in."""
    try:
        truth = open_ground_truth(scene_path)
    except NoGroundTruthError:  # a dataset without labels: nothing to score
        return {"has_ground_truth": False}
    lookup = vocabulary_to_scene_ids(vocabulary, truth.class_names)
    allowed = lookup[lookup >= 0]
    from econsg.fusion import voxel_keys

    order = np.argsort(fused_keys)
    sorted_keys = np.asarray(fused_keys)[order]
    fused_ids = to_scene_ids(np.asarray(fused_label), lookup)
    raw_correct = fused_correct = counted = 0
    for v in views:
        xyz, pixel = samples(v)
        gt = restrict_gt(truth.classes(v).reshape(-1)[pixel].astype(np.int64), allowed)
        sample_keys = voxel_keys(xyz, voxel_size)
        where = np.clip(np.searchsorted(sorted_keys, sample_keys), 0, len(sorted_keys) - 1)
        found = sorted_keys[where] == sample_keys
        valid = found & (gt != IGNORE)
        point = order[where[valid]]
        raw_ids = to_scene_ids(raw(v).reshape(-1)[pixel][valid], lookup)
        fused_correct += int((fused_ids[point] == gt[valid]).sum())
        raw_correct += int((raw_ids == gt[valid]).sum())
        counted += int(valid.sum())
    return {
        "has_ground_truth": True,
        # None without a labelled training pixel to score (3D-OVS labels its test views only), not a 0 that reads as failure
        "point_label_accuracy": fused_correct / counted if counted else None,
        "raw_2d_accuracy_same_points": raw_correct / counted if counted else None,
        "consistency_gain": (fused_correct - raw_correct) / counted if counted else None,
        "scored_samples": counted,
    }


def subset_scores(confusion: np.ndarray, classes: Sequence[int]) -> dict:
    """mIoU / mAcc over the given scene classes present in the ground truth.

    `confusion` is [C, C+1] (rows gt; the last column counts IGNORE predictions, which are errors). A class given
    twice counts once.
    """
    scores = segmentation_scores(confusion)
    chosen = [c for c in dict.fromkeys(int(c) for c in classes) if scores["present"][c]]
    if not chosen:
        return {"miou": float("nan"), "macc": float("nan"), "classes": []}
    return {"miou": float(scores["iou"][chosen].mean()), "macc": float(scores["acc"][chosen].mean()), "classes": chosen}


def gaussian_ground_truth_labels(
    means: np.ndarray,
    views: Sequence[int],
    *,
    classes: Callable[[int], np.ndarray],
    depth: Callable[[int], np.ndarray],
    Ks: np.ndarray,
    c2w: np.ndarray,
    num_classes: int,
    depth_tolerance: float = 0.05,
) -> np.ndarray:
    """[N] int64 ground-truth class of each Gaussian: the majority GT class of the training pixels its mean lands
    on where it is on the surface the view sees (|z - depth| <= depth_tolerance x depth); IGNORE if never seen.

    The labels of the geometry oracle (`evaluate`'s `geometry_oracle_miou`): rendered as one-hot features, they
    score what the trained geometry could reach with perfect semantics.
    """
    from econsg.fusion import project_points

    means = np.asarray(means, dtype=np.float64)
    votes = np.zeros((len(means), num_classes), np.int32)
    for v in views:
        gt = np.asarray(classes(v))
        H, W = gt.shape
        uv, z, in_view = project_points(means, Ks[v], c2w[v], W, H)
        idx = np.flatnonzero(in_view)
        rows = np.minimum(uv[idx, 1].astype(np.int64), H - 1)
        cols = np.minimum(uv[idx, 0].astype(np.int64), W - 1)
        surface = np.asarray(depth(v))[rows, cols]
        label = gt[rows, cols].astype(np.int64)
        keep = (surface > 0) & (np.abs(z[idx] - surface) <= depth_tolerance * surface) & (label >= 0)
        np.add.at(votes, (idx[keep], label[keep]), 1)
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), IGNORE)


def selection_iou(selected: np.ndarray, labels: np.ndarray, class_id: int) -> float:
    """IoU of a 3D selection with one class's Gaussians: selected [N] bool (what `econsg edit` picks for the class's
    text), labels [N] each Gaussian's ground-truth class (`gaussian_ground_truth_labels`). Only the Gaussians some
    training view sees on a surface count (labels >= 0): a selected Gaussian no view sees is neither right nor wrong.
    NaN where no Gaussian carries the class."""
    truth = labels == class_id
    if not truth.any():
        return float("nan")
    seen_selection = selected & (labels >= 0)
    return float((seen_selection & truth).sum() / (seen_selection | truth).sum())


def view_bootstrap_intervals(
    pred_confusions: np.ndarray,
    teacher_confusions: np.ndarray,
    classes: Sequence[int],
    *,
    rounds: int,
    rng: np.random.Generator,
    coverage: float = 0.9,
) -> dict:
    """Percentile intervals of mIoU over resamples of the held-out views (drawn with replacement, as many as there
    are): econsg's, the teacher's, and the margin between them, paired (both scored on the same resampled views).

    pred_confusions, teacher_confusions: [V, C, C+1] per-view confusion matrices. Returns {"rounds", "scored",
    "coverage", "miou": [low, high], "teacher_miou": [low, high], "over_teacher": [low, high]}: "scored" counts the
    resamples that held a pixel of one of `classes` (the others have no mean, and the intervals leave them out).
    With few views the interval says how much the figures lean on which views were held out, not how they would move
    on another scene.
    """
    views = len(pred_confusions)
    draws = {"miou": [], "teacher_miou": [], "over_teacher": []}
    for _ in range(rounds):
        pick = rng.integers(0, views, views)
        ours = subset_scores(pred_confusions[pick].sum(axis=0), classes)["miou"]
        teacher = subset_scores(teacher_confusions[pick].sum(axis=0), classes)["miou"]
        draws["miou"].append(ours)
        draws["teacher_miou"].append(teacher)
        draws["over_teacher"].append(ours - teacher)
    tail = 50.0 * (1.0 - coverage)
    return {"rounds": rounds, "scored": int(np.isfinite(draws["miou"]).sum()), "coverage": coverage,
            **{key: [float(v) for v in np.nanpercentile(values, [tail, 100.0 - tail])] for key, values in draws.items()}}


def rescore_evaluate(
    group, classes: Sequence[str] | None = None, exclude: Sequence[str] = (), *, bootstrap: int = 0, seed: int = 0
) -> dict:
    """Score the label maps an evaluate.zarr keeps (econsg's `pred_labels`, the teacher's `teacher_labels`,
    `gt_labels`) again, over `classes` (scene class names; default: the evaluation vocabulary's) but those in
    `exclude`, present in the ground truth. Returns {"classes", "miou", "macc", "teacher_miou", "teacher_macc",
    "per_class": {name: {"iou", "acc", "teacher_iou", "pixels"}}}, and with `bootstrap` rounds > 0 also
    "bootstrap": `view_bootstrap_intervals` over the held-out views (seeded by `seed`); names outside the scene
    raise EconsgError.
    """
    from econsg.errors import EconsgError

    if not group.attrs.get("has_ground_truth", False):
        where = getattr(group.store, "root", "evaluate.zarr")
        raise EconsgError(f"{where}: this run had no ground-truth label maps, so there is nothing to score against "
                          "here; a benchmark protocol scored from its own files (LERF-OVS's label JSONs) is in "
                          "evaluate.json's `benchmark` (`econsg metrics`)")
    names = list(group.attrs["class_names"])
    chosen = list(classes) if classes is not None else [n for n in group.attrs["eval_vocabulary"] if n in names]
    for option, given in (("--classes", chosen), ("--exclude", exclude)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise EconsgError(f"{option}: {unknown} are not classes of this scene; expected some of {names}")
    requested, chosen = chosen, [n for n in chosen if n not in set(exclude)]
    unnamed = [n for n in chosen if n not in set(group.attrs["eval_vocabulary"])]
    if unnamed:
        raise EconsgError(f"--classes: {unnamed} are not in this run's evaluation vocabulary, so their pixels were not "
                          f"segmented and are not scored; expected some of {list(group.attrs['eval_vocabulary'])}")
    C = len(names)
    vocabulary_ids = [names.index(n) for n in group.attrs["eval_vocabulary"] if n in names]
    per_view = {"pred": [], "teacher": []}
    for i in range(group["gt_labels"].shape[0]):
        # as evaluate scores: pixels of classes the evaluation vocabulary lacks are ignored
        gt = restrict_gt(group["gt_labels"][i].astype(np.int64), vocabulary_ids)
        for key in per_view:
            per_view[key].append(confusion_matrix(group[f"{key}_labels"][i].astype(np.int64), gt, C))
    per_view = {key: np.stack(matrices) for key, matrices in per_view.items()}
    conf = {key: matrices.sum(axis=0) for key, matrices in per_view.items()}
    ids = [names.index(n) for n in chosen]
    ours, teacher = subset_scores(conf["pred"], ids), subset_scores(conf["teacher"], ids)
    if not ours["classes"]:
        present = [names[c] for c in range(C) if conf["pred"][c].sum() > 0]
        raise EconsgError(f"--classes/--exclude: no class is left with ground-truth pixels in the held-out views to "
                          f"average over (chose {requested}, excluded {list(exclude)}); expected some of {present}")
    per_ours, per_teacher = segmentation_scores(conf["pred"]), segmentation_scores(conf["teacher"])
    intervals = ({"bootstrap": view_bootstrap_intervals(per_view["pred"], per_view["teacher"], ids, rounds=bootstrap,
                                                        rng=np.random.default_rng(seed))} if bootstrap > 0 else {})
    return {
        "classes": [names[c] for c in ours["classes"]],
        "miou": ours["miou"], "macc": ours["macc"], "teacher_miou": teacher["miou"], "teacher_macc": teacher["macc"],
        "per_class": {names[c]: {"iou": float(per_ours["iou"][c]), "acc": float(per_ours["acc"][c]),
                                 "teacher_iou": float(per_teacher["iou"][c]), "pixels": int(conf["pred"][c].sum())}
                      for c in ours["classes"]},
        **intervals,
    }
