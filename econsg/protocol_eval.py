"""Score one scene's held-out views under a benchmark's own protocol: the glue between what the evaluate
stage renders (label maps or relevancy maps, keyed by view name) and the scorers of econsg.protocols.

Protocols (their sources are documented in econsg.protocols):
- "paper": econSG's mIoU / mAcc over the classes present (`score_paper`), label maps against the scene's
  ground-truth class maps;
- "scannet19" / "scannet15" / "scannet10": the same on OpenGaussian's ScanNet class subsets, scored on the held-out
  views' 2D label maps. OpenGaussian scores one label per Gaussian against the mesh vertices' labels
  (scripts/eval_scannet.py), a 3D measure: these figures are not comparable with its table. Predictions and
  ground truth are in the scene's NYU40 ids (nyu40id - 1) and are mapped with `scannet_subset`. The
  predictions should be an argmax over the subset's names only (`protocol_vocabulary`), as the reference
  queries only those classes; a predicted class outside the subset counts as wrong;
- "ovs3d": 3D-OVS (`score_ovs3d`) against the per-class masks of `<scene>/segmentations/<view index>/`,
  read here from the dataset folder (a pixel may be in no mask or in several, which label maps cannot hold);
- "lerf": LERF-OVS as LangSplat scores it (`score_lerf`, `summarise_lerf`): relevancy maps per text query
  (`econsg.query.lerf_relevancy`, LangSplat's temperature) against the labelme JSONs of `label/<scene>/`, matched to
  rendered views by frame name. The labelled frames are rendered whatever their split, as LangSplat scores them
  (they are training views there); relevancy is taken in econSG's latent space, not in decoded CLIP features.

Every function returns a JSON-ready dict whose first key is `protocol`; fractions are in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from econsg.errors import EconsgError
from econsg.protocols import (
    LERF_MASK_THRESHOLD,
    scannet_subset,
    scannet_subset_names,
    score_lerf,
    score_ovs3d,
    score_paper,
    summarise_lerf,
)
from econsg.scene.data import IGNORE
from econsg.scene.readers.common import image_size
from econsg.scene.readers.lerf import LerfFrameLabels, read_lerf_labels
from econsg.scene.readers.ovs3d import IMAGE_SUFFIXES, load_class_masks, read_ovs3d_classes, segmented_views
from econsg.scene.readers.scannet import NYU40_CLASS_NAMES

PROTOCOLS = ("paper", "ovs3d", "lerf", "scannet19", "scannet15", "scannet10")
SCANNET_PROTOCOLS = {"scannet19": 19, "scannet15": 15, "scannet10": 10}


def lerf_labels_folder(params) -> Path:
    """Where the LERF-OVS protocol reads LangSplat's label files: evaluate.lerf_labels, else the scene's label/."""
    return Path(params.evaluate.lerf_labels) if params.evaluate.lerf_labels else Path(params.paths.data) / "label"

def _finite(value: float) -> float | None:
    """NaN (no class present) -> None, so the metrics file stays valid JSON."""
    return None if value is None or not np.isfinite(value) else float(value)


def _stack_views(maps: Mapping[str, np.ndarray], names: Sequence[str], what: str) -> np.ndarray:
    """[V,H,W] int64 of `maps[name]` for each name; EconsgError when a view is missing or shapes differ."""
    missing = [name for name in names if name not in maps]
    if missing:
        raise EconsgError(f"{what}: no map for views {missing[:10]}; expected one per scored view")
    arrays = [np.asarray(maps[name]) for name in names]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise EconsgError(f"{what}: maps have shapes {sorted(shapes)}, expected one [H, W] shape for every view")
    if not all(np.issubdtype(a.dtype, np.integer) for a in arrays):
        raise EconsgError(f"{what}: label maps must hold integer class ids")
    return np.stack(arrays).astype(np.int64)


def _paired(predictions: Mapping[str, np.ndarray], ground_truth: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true label maps of the views that have ground truth, in sorted view-name order."""
    names = sorted(ground_truth)
    if not names:
        raise EconsgError("ground truth: no labelled views to score")
    gt = _stack_views(ground_truth, names, "ground truth")
    pred = _stack_views(predictions, names, "predictions")
    if pred.shape != gt.shape:
        raise EconsgError(f"predictions: maps are {pred.shape[1:]}, ground truth is {gt.shape[1:]}; expected the same [H, W]")
    return pred, gt


def evaluate_paper(
    predictions: Mapping[str, np.ndarray], ground_truth: Mapping[str, np.ndarray], class_names: Sequence[str]
) -> dict:
    """econSG protocol: label maps (scene class ids, IGNORE = -1) per view name -> mIoU / mAcc over present classes."""
    pred, gt = _paired(predictions, ground_truth)
    scores = score_paper(pred, gt, len(class_names))
    return {
        "protocol": "paper",
        "miou": _finite(scores["miou"]),
        "macc": _finite(scores["macc"]),
        "pixel_accuracy": _finite(scores["pixel_accuracy"]),
        "per_class_iou": {class_names[c]: _finite(scores["per_class_iou"][c]) for c in scores["present"]},
        "views": len(gt),
    }


def evaluate_scannet_subset(
    predictions: Mapping[str, np.ndarray], ground_truth: Mapping[str, np.ndarray], subset: int
) -> dict:
    """OpenGaussian's 19/15/10-class ScanNet subsets: both maps in NYU40 ids (nyu40id - 1) -> subset ids, then
    mIoU / mAcc over the subset classes present (a prediction outside the subset counts as wrong)."""
    pred, gt = _paired(predictions, ground_truth)
    names = scannet_subset_names(subset)
    scores = score_paper(scannet_subset(pred, subset), scannet_subset(gt, subset), len(names))
    return {
        "protocol": f"scannet{subset}",
        "miou": _finite(scores["miou"]),
        "macc": _finite(scores["macc"]),
        "pixel_accuracy": _finite(scores["pixel_accuracy"]),
        "per_class_iou": {names[c]: _finite(scores["per_class_iou"][c]) for c in scores["present"]},
        "views": len(gt),
    }


def ovs3d_view_indices(root: Path) -> dict[str, int]:
    """Image stem -> position in the sorted `images/` list (the index naming `segmentations/<index>/`), as the
    3D-OVS reader (econsg.scene.readers.ovs3d) orders them."""
    folder = Path(root) / "images"
    if not folder.is_dir():
        raise EconsgError(f"{folder}: missing; a 3D-OVS scene keeps its images there")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return {path.stem: index for index, path in enumerate(images)}


def nearest_downscale(mask: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an [H,W] bool mask to ingest's size (H // factor, W // factor) as the 3D-OVS reference does, with PIL's
    NEAREST resize itself: where a side does not divide by the factor its sampling positions spread over the whole
    side, which slicing every factor-th pixel would not reproduce."""
    if factor == 1:
        return mask
    image = Image.fromarray(np.asarray(mask, np.uint8))
    return np.asarray(image.resize((mask.shape[1] // factor, mask.shape[0] // factor), Image.NEAREST), dtype=bool)


def evaluate_ovs3d(
    predictions: Mapping[str, np.ndarray], class_names: Sequence[str], data_root: Path, downscale: int = 1
) -> dict:
    """3D-OVS protocol: label maps (ids over the sorted classes.txt) per view name, scored against every
    segmented view's class masks in `<data_root>/segmentations/`. The masks are shrunk as the reference shrinks
    them (`nearest_downscale`) and must then match the predictions. Views without masks are not scored;
    a segmented view without a prediction is an error."""
    root = Path(data_root)
    truth_names = read_ovs3d_classes(root)
    if list(class_names) != truth_names:
        raise EconsgError(
            f"{root / 'segmentations' / 'classes.txt'}: classes {truth_names} differ from the scene's {list(class_names)}; "
            "predictions must index the sorted classes.txt"
        )
    index_of = ovs3d_view_indices(root)
    view_of = {index: name for name, index in index_of.items()}
    folders = segmented_views(root)
    names = [view_of[index] for index in folders if index in view_of]
    if len(names) != len(folders):
        raise EconsgError(f"{root / 'segmentations'}: view folders {sorted(set(folders) - set(view_of))} name no image in images/")
    pred = _stack_views(predictions, names, "predictions")
    H, W = pred.shape[1:]
    masks = []
    for name in names:
        folder = folders[index_of[name]]
        full = load_class_masks(folder, truth_names, _mask_shape(folder, truth_names[0]))
        shrunk = np.stack([nearest_downscale(channel, downscale) for channel in full])
        if shrunk.shape[1:] != (H, W):
            raise EconsgError(
                f"{folder}: masks are {full.shape[1:]} pixels, shrunk by {downscale} they give {shrunk.shape[1:]}, "
                f"predictions are {(H, W)}; pass the ingest.downscale the scene was read with"
            )
        masks.append(shrunk)
    scores = score_ovs3d(pred, np.stack(masks), truth_names)
    return {
        "protocol": "ovs3d",
        "miou": scores["miou"],
        "accuracy": scores["accuracy"],
        "per_class_iou": scores["per_class_iou"],
        "per_view_miou": dict(zip(names, scores["per_view_miou"])),
        "views": len(names),
    }


def _mask_shape(folder: Path, class_name: str) -> tuple[int, int]:
    """[H, W] of one class mask file (all masks of a view must share it; load_class_masks checks)."""
    width, height = image_size(folder / f"{class_name}.png")
    return height, width


def lerf_categories(frames: Sequence[LerfFrameLabels]) -> list[str]:
    """Every category of the labelled frames, in order of first appearance: the scene's text queries."""
    seen: dict[str, None] = {}
    for frame in frames:
        for query in frame.queries:
            seen.setdefault(query.category, None)
    return list(seen)


def evaluate_lerf(
    relevancy: Mapping[str, np.ndarray],
    query_names: Sequence[str],
    labels_folder: Path,
    threshold: float = LERF_MASK_THRESHOLD,
) -> dict:
    """LERF-OVS protocol. `relevancy[view name]` is [Q,H,W] or [L,Q,H,W] (L feature levels), one map per
    entry of `query_names`; each labelled frame (`labels_folder/frame_*.json`) is matched to the view named
    like its `info.name` stem, and scored on the queries of its own categories. The maps must be at the
    label JSONs' resolution (render at ingest.downscale 1)."""
    frames = read_lerf_labels(Path(labels_folder))
    position = {name: q for q, name in enumerate(query_names)}
    missing_views = [Path(f.name).stem for f in frames if Path(f.name).stem not in relevancy]
    if missing_views:
        raise EconsgError(
            f"{labels_folder}: labelled frames {missing_views[:10]} have no rendered relevancy maps; "
            "evaluate must render every labelled frame"
        )
    frame_scores, per_category = [], {}
    for frame in frames:
        maps = np.asarray(relevancy[Path(frame.name).stem], np.float64)
        if maps.ndim == 3:
            maps = maps[None]
        if maps.ndim != 4 or maps.shape[1] != len(query_names):
            raise EconsgError(f"relevancy[{Path(frame.name).stem!r}]: shape {maps.shape}, expected [Q={len(query_names)}, H, W] or [L, Q, H, W]")
        if maps.shape[2:] != (frame.height, frame.width):
            raise EconsgError(
                f"relevancy[{Path(frame.name).stem!r}]: maps are {maps.shape[2:]}, the labels are {(frame.height, frame.width)}; "
                "render LERF-OVS scenes at full resolution (ingest.downscale: 1)"
            )
        absent = [q.category for q in frame.queries if q.category not in position]
        if absent:
            raise EconsgError(f"{labels_folder}: {frame.name} asks for {absent}, which are not among the queries {list(query_names)}")
        chosen = maps[:, [position[q.category] for q in frame.queries]]
        scores = score_lerf(chosen, frame.queries, threshold)
        frame_scores.append(scores)
        for query, hit, iou in zip(frame.queries, scores["hit"], scores["iou"]):
            per_category.setdefault(query.category, []).append((hit, iou))
    totals = summarise_lerf(frame_scores)
    return {
        "protocol": "lerf",
        "miou": totals["miou"],
        "localization_accuracy": totals["localization_accuracy"],
        "queries": totals["queries"],
        "frames": len(frames),
        "per_category_iou": {c: float(np.mean([i for _, i in v])) for c, v in per_category.items()},
        "per_category_localization": {c: float(np.mean([h for h, _ in v])) for c, v in per_category.items()},
    }


def check_scannet_scene(protocol: str, scene_class_names: Sequence[str]) -> None:
    """The 'scannetN' protocols read the scene's label ids as NYU40 ids (nyu40id - 1): refuse a labelled scene whose
    classes are not NYU40's, in order (one the ScanNet reader did not write), which they would score under other
    names."""
    if protocol in SCANNET_PROTOCOLS and scene_class_names and list(scene_class_names) != list(NYU40_CLASS_NAMES):
        shown = ", ".join(list(scene_class_names)[:6]) + (", ..." if len(scene_class_names) > 6 else "")
        raise EconsgError(f"evaluate.protocol: {protocol!r} scores ScanNet scenes, whose classes are NYU40's 40 in order "
                          f"(ingest.format: scannet); this scene's {len(scene_class_names)} classes are {shown}: "
                          "use evaluate.protocol: paper")


def protocol_vocabulary(protocol: str, scene_class_names: Sequence[str], lerf_labels: Path | None = None) -> list[str]:
    """The text queries a protocol scores: the scene's classes ('paper', 'ovs3d'), the ScanNet subset's NYU40
    names ('scannetN'), or the categories of the LERF-OVS label JSONs ('lerf')."""
    if protocol in SCANNET_PROTOCOLS:
        return scannet_subset_names(SCANNET_PROTOCOLS[protocol])
    if protocol == "lerf":
        if lerf_labels is None:
            raise EconsgError("evaluate.lerf_labels: the 'lerf' protocol needs the folder of the scene's frame_*.json labels")
        return lerf_categories(read_lerf_labels(Path(lerf_labels)))
    if protocol in ("paper", "ovs3d"):
        if not scene_class_names:
            raise EconsgError(f"evaluate.protocol: {protocol!r} needs a scene with ground-truth classes; this scene has none")
        return list(scene_class_names)
    raise EconsgError(f"evaluate.protocol: {protocol!r} is not one of {list(PROTOCOLS)}")


def evaluate_protocol(
    protocol: str,
    *,
    class_names: Sequence[str],
    predictions: Mapping[str, np.ndarray] | None = None,
    ground_truth: Mapping[str, np.ndarray] | None = None,
    relevancy: Mapping[str, np.ndarray] | None = None,
    query_names: Sequence[str] | None = None,
    data_root: Path | None = None,
    lerf_labels: Path | None = None,
    downscale: int = 1,
) -> dict:
    """One protocol's metrics for one scene. Inputs are keyed by view name (scene.zarr `view_names`):
    - 'paper', 'scannetN': `predictions` and `ground_truth` label maps [H,W] (scene class ids, IGNORE = -1);
    - 'ovs3d': `predictions` and `data_root` (the 3D-OVS scene folder with segmentations/), `downscale`;
    - 'lerf': `relevancy` maps and their `query_names` (see `protocol_vocabulary`), `lerf_labels` folder.
    A predicted id past `class_names` (a word of evaluate.vocabulary the scene lacks: `econsg.evaluation.label_names`)
    names no class of the scene: it is scored as IGNORE, a wrong prediction.
    """
    if predictions is not None:
        predictions = {name: np.where(np.asarray(p) < len(class_names), p, IGNORE) for name, p in predictions.items()}
    if protocol == "paper" or protocol in SCANNET_PROTOCOLS:
        if predictions is None or ground_truth is None:
            raise EconsgError(f"evaluate.protocol {protocol!r}: needs predicted and ground-truth label maps")
        if protocol == "paper":
            return evaluate_paper(predictions, ground_truth, class_names)
        return evaluate_scannet_subset(predictions, ground_truth, SCANNET_PROTOCOLS[protocol])
    if protocol == "ovs3d":
        if predictions is None or data_root is None:
            raise EconsgError("evaluate.protocol 'ovs3d': needs predicted label maps and the dataset folder (paths.data)")
        return evaluate_ovs3d(predictions, class_names, Path(data_root), downscale)
    if protocol == "lerf":
        if relevancy is None or query_names is None or lerf_labels is None:
            raise EconsgError("evaluate.protocol 'lerf': needs relevancy maps, their query names and evaluate.lerf_labels")
        return evaluate_lerf(relevancy, query_names, Path(lerf_labels))  # at the reference's threshold, whatever the params
    raise EconsgError(f"evaluate.protocol: {protocol!r} is not one of {list(PROTOCOLS)}")
