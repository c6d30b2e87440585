"""LERF-OVS ground truth: `label/<scene>/frame_<n>.json` (labelme-style) -> per-frame, per-category
boxes and masks, for econsg.protocols.score_lerf. The scene's images come through the colmap or
nerfstudio reader; this module reads labels only.

Followed LangSplat's eval/evaluate_iou_loc.py (`eval_gt_lerfdata`) and eval/utils.py:
- `info.height`, `info.width`, `info.name` (e.g. "frame_00041.jpg"); the frame index is the number in
  the name minus 1 (the image's position in the sorted image list).
- each entry of `objects` has `category`, `bbox` ([x1, y1, x2, y2] pixels) and `segmentation` (a polygon,
  a list of [x, y]). Objects of one category merge: boxes are stacked, masks are OR-ed.
- polygons are filled after truncating vertices to integers (the reference casts to int32 for
  cv2.fillPoly); here PIL's polygon fill draws them, which may differ from OpenCV by a pixel along edges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from econsg.errors import EconsgError


@dataclass(frozen=True)
class LerfQueryTruth:
    """One text query's ground truth in one frame: boxes [B,4] (x1, y1, x2, y2 pixels) and mask [H,W] bool."""

    category: str
    boxes: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class LerfFrameLabels:
    """Ground truth of one annotated frame."""

    name: str
    index: int
    height: int
    width: int
    queries: list[LerfQueryTruth]


def polygon_mask(shape: tuple[int, int], polygon, where: str) -> np.ndarray:
    """[H,W] bool: the filled polygon (vertices truncated to integers, as the reference does), its edges drawn as
    one-pixel lines as well: the reference's cv2.fillPoly covers every pixel its edges pass through, which PIL's
    polygon fill leaves out along shallow edges (2.8 % of the pixels of random polygons; 0.3 % with the lines)."""
    points = np.asarray(polygon, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise EconsgError(f"{where}: segmentation has shape {points.shape}, expected a polygon of at least 3 [x, y] points")
    vertices = [tuple(p) for p in points.astype(np.int32).tolist()]
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon(vertices, fill=1)
    draw.line([*vertices, vertices[0]], fill=1, width=1)
    return np.asarray(canvas, dtype=bool)


def read_lerf_frame(path: Path) -> LerfFrameLabels:
    """One frame_*.json as boxes and masks per category (categories in order of first appearance)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        info = data["info"]
        height, width, name = int(info["height"]), int(info["width"]), str(info["name"])
        objects = data["objects"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EconsgError(f"{path}: expected labelme-style JSON with info.height/width/name and an objects list ({error!r})") from None
    match = re.search(r"(\d+)", Path(name).stem)
    if not match:
        raise EconsgError(f"{path}: info.name {name!r} carries no frame number")
    boxes: dict[str, list[np.ndarray]] = {}
    masks: dict[str, np.ndarray] = {}
    for number, item in enumerate(objects):
        where = f"{path}: objects[{number}]"
        try:
            category = str(item["category"])
            box = np.asarray(item["bbox"], dtype=np.float64).reshape(4)
            polygon = item["segmentation"]
        except (KeyError, TypeError, ValueError) as error:
            raise EconsgError(f"{where}: expected 'category', 'bbox' [x1, y1, x2, y2] and 'segmentation' ({error!r})") from None
        mask = polygon_mask((height, width), polygon, where)
        boxes.setdefault(category, []).append(box)
        masks[category] = masks[category] | mask if category in masks else mask
    queries = [LerfQueryTruth(c, np.stack(boxes[c]), masks[c]) for c in boxes]
    return LerfFrameLabels(name=name, index=int(match.group(1)) - 1, height=height, width=width, queries=queries)


def read_lerf_labels(folder: Path) -> list[LerfFrameLabels]:
    """Every frame_*.json of `folder` (e.g. label/<scene>/), sorted by file name."""
    folder = Path(folder)
    paths = sorted(folder.glob("frame_*.json"))
    if not paths:
        raise EconsgError(f"{folder}: no frame_*.json label files; expected LangSplat's lerf_ovs/label/<scene>/*.json "
                          "copied into this folder (pipelines/README.md, LERF-OVS), or evaluate.lerf_labels set to the "
                          "folder that holds them")
    return [read_lerf_frame(p) for p in paths]
