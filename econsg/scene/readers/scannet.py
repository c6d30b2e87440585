"""ScanNet exports (the SensReader layout): `color/<n>.jpg`, `depth/<n>.png`, `pose/<n>.txt`,
`intrinsic/intrinsic_color.txt`, `intrinsic/intrinsic_depth.txt`, optional `label-filt/<n>.png`.

- pose/<n>.txt: 4x4 camera-to-world, OpenCV axes. Frames whose pose is not finite (ScanNet marks
  tracking failures with -inf) are skipped.
- intrinsic_*.txt: 4x4 whose top-left 3x3 is K, written for pixel centres at integer coordinates
  (OpenCV calibration), so 0.5 is added to the principal point.
- depth/<n>.png: uint16 millimetres, at the depth sensor's own resolution (640x480 against 1296x968
  colour). Depth and colour share the pose, so each colour pixel centre is carried through
  K_depth K_color^-1 to the depth image and takes the nearest depth sample (z is unchanged by the
  intrinsics). Without intrinsic_depth.txt a depth map of another size is refused.
- label-filt/<n>.png: uint16 raw ScanNet label ids, mapped to NYU40 with the
  `scannetv2-labels.combined.tsv` that must sit in the scene folder (or its parent): columns `id` and
  `nyu40id`. Class index = nyu40id - 1 over NYU40_CLASS_NAMES; raw 0 and nyu40id 0 -> IGNORE. Ids
  missing from the table are refused. Labels must be at the colour resolution.
- Split: every 8th colour frame (by sorted number) is test (LLFF convention), counted over every colour frame:
  a frame skipped for its invalid pose moves no other frame between train and test.

The 19/15/10-class subsets (NYU40 ids) are those of OpenGaussian's ScanNet evaluation
(scripts/eval_scannet.py, Wu et al., NeurIPS 2024): 19 = the ScanNet-20 benchmark classes without
`otherfurniture`.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np

from econsg.errors import EconsgError
from econsg.progress import report
from econsg.scene.data import IGNORE, FrameRecord, SceneSource, check_intrinsics, check_principal_point, check_rigid_pose
from econsg.scene.readers.common import (
    image_size,
    llff_split,
    load_mapped_labels,
    numbered_files,
    read_matrix_file,
    shift_integer_centre_convention,
)
from econsg.scene.readers.imageio import _open, load_rgb

FORMAT = "scannet"
LOOKS_FOR = "color/*.jpg + pose/*.txt + intrinsic/intrinsic_color.txt (ScanNet SensReader export)"
DEPTH_SCALE = 1000.0
LABEL_TABLE = "scannetv2-labels.combined.tsv"

NYU40_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # index i = NYU40 id i + 1

SCANNET_SUBSETS: dict[int, tuple[int, ...]] = {  # NYU40 ids, OpenGaussian scripts/eval_scannet.py
    19: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36),
    15: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 33, 34),
    10: (1, 2, 4, 5, 6, 7, 8, 9, 10, 33),
}


def detect(root: Path) -> bool:
    return (root / "color").is_dir() and (root / "pose").is_dir() and (root / "intrinsic" / "intrinsic_color.txt").is_file()


def find_label_table(root: Path) -> Path:
    """scannetv2-labels.combined.tsv in the scene folder or its parent, or EconsgError naming where it was sought."""
    for folder in (root, root.parent):
        if (folder / LABEL_TABLE).is_file():
            return folder / LABEL_TABLE
    raise EconsgError(
        f"{root / LABEL_TABLE}: missing; label-filt/ holds raw ScanNet ids and needs ScanNet's {LABEL_TABLE} "
        "(from the ScanNet repository) in the scene folder or its parent to map them to NYU40"
    )


def read_nyu40_lookup(path: Path) -> np.ndarray:
    """Raw ScanNet id -> NYU40 class index (nyu40id - 1; IGNORE for 0), -2 for ids the table lacks."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        pairs = [(int(row["id"]), int(row["nyu40id"])) for row in rows]
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise EconsgError(f"{path}: expected a tab-separated table with integer columns 'id' and 'nyu40id' ({error!r})") from None
    if not pairs:
        raise EconsgError(f"{path}: the label table is empty")
    bad = [nyu for _, nyu in pairs if not 0 <= nyu <= 40]
    if bad:
        raise EconsgError(f"{path}: nyu40id values {sorted(set(bad))[:10]} are outside 0..40")
    lookup = np.full(max(raw for raw, _ in pairs) + 1, -2, dtype=np.int64)
    lookup[0] = IGNORE
    for raw, nyu in pairs:
        lookup[raw] = nyu - 1 if nyu > 0 else IGNORE
    return lookup


def read_intrinsics(path: Path) -> np.ndarray:
    """3x3 K (principal point shifted to +0.5 pixel centres) from a ScanNet 4x4 intrinsic file."""
    return check_intrinsics(shift_integer_centre_convention(read_matrix_file(path)[:3, :3]), str(path))


def resample_depth_to_color(depth: np.ndarray, K_depth: np.ndarray, K_color: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[H,W] depth seen by the colour camera: nearest depth sample under each colour pixel centre.

    Both cameras share the pose; a colour pixel centre (x, y) maps to K_depth K_color^-1 (x, y, 1) in the
    depth image (pixel centres at +0.5); samples falling outside the depth image are 0 (invalid).
    """
    height, width = shape
    y, x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    mapped = K_depth @ np.linalg.inv(K_color) @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)])
    col = np.floor(mapped[0] / mapped[2]).astype(np.int64)
    row = np.floor(mapped[1] / mapped[2]).astype(np.int64)
    inside = (col >= 0) & (col < depth.shape[1]) & (row >= 0) & (row < depth.shape[0])
    out = np.zeros(height * width, dtype=np.float32)
    out[inside] = depth[row[inside], col[inside]]
    return out.reshape(height, width)


def load_scannet_depth(path: Path, shape: tuple[int, int], K_color: np.ndarray, K_depth: np.ndarray | None) -> np.ndarray:
    """[H,W] float32 metres at the colour resolution (see resample_depth_to_color)."""
    depth = np.asarray(_open(path)).astype(np.float32) / DEPTH_SCALE
    if depth.shape == tuple(shape) and K_depth is None:
        return depth
    if K_depth is None:
        raise EconsgError(
            f"{path}: depth map is {depth.shape[1]}x{depth.shape[0]} pixels, colour is {shape[1]}x{shape[0]}, and "
            "intrinsic/intrinsic_depth.txt is missing; it is needed to register depth to colour"
        )
    check_principal_point(K_depth, depth.shape[1], depth.shape[0], f"{path} (with intrinsic/intrinsic_depth.txt)")
    return resample_depth_to_color(depth, K_depth, K_color, shape)


def read(root: Path) -> SceneSource:
    images = numbered_files(root / "color", r"(\d+)\.jpg")
    if not images:
        raise EconsgError(f"{root / 'color'}: no <n>.jpg images found")
    poses = numbered_files(root / "pose", r"(\d+)\.txt")
    depths = numbered_files(root / "depth", r"(\d+)\.png")
    labels = numbered_files(root / "label-filt", r"(\d+)\.png")
    K_color = read_intrinsics(root / "intrinsic" / "intrinsic_color.txt")
    depth_intrinsics = root / "intrinsic" / "intrinsic_depth.txt"
    K_depth = read_intrinsics(depth_intrinsics) if depth_intrinsics.is_file() else None
    lookup = read_nyu40_lookup(find_label_table(root)) if labels else None
    class_names = list(NYU40_CLASS_NAMES) if labels else []
    frames, skipped = [], []
    for position, (number, path) in enumerate(images.items()):
        if number not in poses:
            raise EconsgError(f"{root / 'pose' / f'{number}.txt'}: missing; colour frame {path.name} has no pose")
        c2w = read_matrix_file(poses[number])
        if not np.all(np.isfinite(c2w)):
            skipped.append(number)  # ScanNet's marker for a tracking failure
            continue
        c2w = check_rigid_pose(c2w, str(poses[number]))
        width, height = image_size(path)
        shape = (height, width)
        depth, label = depths.get(number), labels.get(number)
        frames.append(
            FrameRecord(
                name=path.stem,
                split=llff_split(position),  # by place among the colour frames: a failed pose shifts no other
                K=K_color,
                c2w=c2w,
                width=width,
                height=height,
                source=path,
                load_image=partial(load_rgb, path),
                load_depth=partial(load_scannet_depth, depth, shape, K_color, K_depth) if depth else None,
                load_classes=partial(load_mapped_labels, label, shape, lookup, f"mapping of {LABEL_TABLE}") if label else None,
            )
        )
    if not frames:
        raise EconsgError(f"{root / 'pose'}: every pose is invalid (not finite)")
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        report(f"ingest: {len(skipped)} of {len(images)} frames of {root} are skipped: their poses are not finite "
               f"(ScanNet's mark of a tracking failure): frames {shown}")
    return SceneSource(root=root, format=FORMAT, frames=frames, class_names=class_names)

