"""Blender / nerfstudio `transforms*.json` layouts (OpenGL camera-to-world poses).

Blender: `transforms_train.json`, `transforms_test.json` (and optional `transforms_val.json`,
ignored). nerfstudio: one `transforms.json`, split as nerfstudio's own parser splits it: by its `train_filenames` and
`test_filenames` (else `val_filenames`) lists where it has them, frames in neither left out; else the frames sorted by
path, 90% kept for training at evenly spaced places from the first to the last and the rest held out (nerfstudio's
default `train_split_fraction`).
Views are named by their image's path below the folder all the images share (train/r_0, images/frame_00001 ->
frame_00001). Intrinsics come from `fl_x, fl_y, cx, cy, w, h` (top level or per frame) or Blender's
`camera_angle_x`. Optional per-frame `depth_file_path` (integer PNG or .npy, metres = value /
`depth_scale`, nerfstudio's `depth_unit_scale_factor` is accepted too; a depth map smaller than its image is
resampled to it by nearest neighbour, as nerfstudio does), `semantic_file_path`
(uint8 class ids, 255 unlabeled; needs `classes.txt` beside the JSON) and `instance_file_path`.
An optional top-level `ply_file_path` (nerfstudio's `sparse_pc.ply`: COLMAP's points, written in the frame of the
poses) becomes the scene's point cloud, which scenes without depth need.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from econsg.errors import EconsgError
from econsg.scene.data import FrameRecord, SceneSource, check_intrinsics, check_rigid_pose, opengl_to_opencv
from econsg.scene.readers.common import image_size, pinhole, read_text_file
from econsg.scene.readers.imageio import load_depth_png, load_instance_png, load_label_png, load_rgb

FORMAT = "blender"
LOOKS_FOR = "transforms_train.json + transforms_test.json, or transforms.json (nerfstudio)"
NERFSTUDIO_TRAIN_FRACTION = 0.9  # nerfstudio's default train_split_fraction


def detect(root: Path) -> bool:
    return (root / "transforms_train.json").is_file() or (root / "transforms.json").is_file()


def read_class_names(root: Path) -> list[str]:
    """classes.txt: one class name per line, line index = class id; empty lines are refused."""
    path = root / "classes.txt"
    if not path.is_file():
        return []
    names = [line.strip() for line in read_text_file(path).splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise EconsgError(f"{path}: the class list is empty; expected one class name per line")
    if any(not name for name in names):
        raise EconsgError(f"{path}: line {names.index('') + 1} is empty; expected one class name per line")
    if len(set(names)) != len(names):
        raise EconsgError(f"{path}: class names repeat; expected unique names")
    return names


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_file(path))
    except (OSError, json.JSONDecodeError) as error:
        raise EconsgError(f"{path}: unreadable transforms file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise EconsgError(f"{path}: expected an object with a non-empty 'frames' list")
    return data


def _resolve(root: Path, relative: str, where: str) -> Path:
    path = Path(os.path.abspath(root / relative))  # symlinks kept: a view is named by its link (git-annex, DVC)
    if path.suffix == "" and not path.exists():
        for suffix in (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"):
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    if not path.is_file():
        raise EconsgError(f"{where}: names {relative!r}, but {path} does not exist")
    return path


def _number(fields: dict[str, Any], key: str, where: str, default: float | None = None, *, positive: bool = False) -> float:
    """A finite number from a transforms file (`default` when absent), or EconsgError naming the field."""
    value = fields.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or (positive and number <= 0):
        raise EconsgError(f"{where}: field {key!r} is {value!r}; expected a finite{' positive' if positive else ''} number")
    return number


def _size(fields: dict[str, Any], key: str, where: str) -> int:
    size = _number(fields, key, where, positive=True)
    if size != int(size):
        raise EconsgError(f"{where}: field {key!r} is {fields[key]!r}; expected a whole number of pixels")
    return int(size)


def _intrinsics(meta: dict[str, Any], frame: dict[str, Any], image_path: Path, where: str) -> tuple[np.ndarray, int, int]:
    merged = {**meta, **frame}
    if "w" in merged and "h" in merged:
        width, height = _size(merged, "w", where), _size(merged, "h", where)
    else:
        width, height = image_size(image_path)
    if "fl_x" in merged:
        fx = _number(merged, "fl_x", where, positive=True)
        fy = _number(merged, "fl_y", where, fx, positive=True)
    elif "camera_angle_x" in merged:
        angle = _number(merged, "camera_angle_x", where, positive=True)
        if angle >= math.pi:
            raise EconsgError(f"{where}: field 'camera_angle_x' is {angle!r}; expected radians below pi")
        fx = fy = 0.5 * width / math.tan(0.5 * angle)
    else:
        raise EconsgError(f"{where}: no intrinsics: expected fl_x/fl_y/cx/cy or camera_angle_x")
    cx = _number(merged, "cx", where, width / 2.0)
    cy = _number(merged, "cy", where, height / 2.0)
    model = str(merged.get("camera_model", "PINHOLE")).upper()
    distortion = [_number(merged, k, where, 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2")]
    if model not in ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV") or any(abs(d) > 1e-9 for d in distortion):
        raise EconsgError(
            f"{where}: camera model {model} with distortion {distortion} is not supported; expected undistorted "
            "images (PINHOLE). ns-process-data keeps the distortion: run colmap image_undistorter on its "
            "colmap/sparse/0 and ingest the undistorted folder (ingest.format: colmap)"
        )
    K = check_intrinsics(pinhole(fx, fy, cx, cy), where)
    return K, width, height


def _frames(root: Path, path: Path, meta: dict[str, Any], split_of, class_count: int) -> list[FrameRecord]:
    if "depth_scale" in meta:
        depth_scale = _number(meta, "depth_scale", str(path), positive=True)
    else:
        depth_scale = 1.0 / _number(meta, "depth_unit_scale_factor", str(path), 1e-3, positive=True)
    records = []
    for index, frame in enumerate(meta["frames"]):
        where = f"{path}: frames[{index}]"
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise EconsgError(f"{where}: expected 'file_path' and 'transform_matrix'")
        image_path = _resolve(root, frame["file_path"], where)
        K, width, height = _intrinsics(meta, frame, image_path, where)
        try:
            matrix = np.array(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise EconsgError(f"{where}: field 'transform_matrix' is {str(frame['transform_matrix'])[:80]!r}; "
                              "expected a 4x4 list of numbers") from None
        c2w = opengl_to_opencv(check_rigid_pose(matrix, where))
        shape = (height, width)
        scale = _number(frame, "depth_scale", where, depth_scale, positive=True)
        depth = frame.get("depth_file_path")
        semantic = frame.get("semantic_file_path")
        if semantic is not None and class_count == 0:
            raise EconsgError(f"{where}: has semantic_file_path but {root / 'classes.txt'} is missing")
        instance = frame.get("instance_file_path")
        records.append(
            FrameRecord(
                name=image_path.stem,  # made relative to the frames' common folder in `read`
                split=split_of(index),
                K=K,
                c2w=c2w,
                width=width,
                height=height,
                source=image_path,
                load_image=partial(load_rgb, image_path),
                load_depth=partial(load_depth_png, _resolve(root, depth, where), scale, shape, resize=True) if depth else None,
                load_classes=partial(load_label_png, _resolve(root, semantic, where), shape, class_count) if semantic else None,
                load_instances=partial(load_instance_png, _resolve(root, instance, where), shape) if instance else None,
            )
        )
    return records


def nerfstudio_split(root: Path, path: Path, meta: dict[str, Any], frames: list[FrameRecord]) -> list[FrameRecord]:
    """`frames` (read from `path`, in its order) sorted by image path and split as nerfstudio's parser splits them: by the
    file's `train_filenames` and `test_filenames` (else `val_filenames`) where it lists them, frames in neither left
    out; else every frame at one of NERFSTUDIO_TRAIN_FRACTION's evenly spaced places trains and the rest are held out."""
    frames = sorted(frames, key=lambda frame: frame.source.as_posix())
    lists = {split: meta[f"{split}_filenames"] for split in ("train", "val", "test") if f"{split}_filenames" in meta}
    if not lists:
        num_train = math.ceil(len(frames) * NERFSTUDIO_TRAIN_FRACTION)
        train = set(np.linspace(0, len(frames) - 1, num_train, dtype=int).tolist())
        return [replace(frame, split="train" if i in train else "test") for i, frame in enumerate(frames)]
    held_out = "test" if "test" in lists else "val"
    if "train" not in lists or held_out not in lists:
        raise EconsgError(f"{path}: lists {', '.join(f'{s}_filenames' for s in lists)}; expected train_filenames and "
                          "test_filenames (or val_filenames), as nerfstudio does, or none of them")
    images = {frame.source for frame in frames}
    split_of: dict[Path, str] = {}
    for listed, ours in (("train", "train"), (held_out, "test")):
        names = lists[listed]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise EconsgError(f"{path}: field '{listed}_filenames' is {str(names)[:80]!r}; expected a list of image paths")
        for name in names:
            image = _resolve(root, name, f"{path}: {listed}_filenames")
            if image not in images:
                raise EconsgError(f"{path}: {listed}_filenames names {name!r}, which no frame's file_path names")
            if split_of.setdefault(image, ours) != ours:
                raise EconsgError(f"{path}: {name!r} is in both train_filenames and {held_out}_filenames; expected "
                                  "each image in one split")
    return [replace(frame, split=split_of[frame.source]) for frame in frames if frame.source in split_of]


def name_by_folder(frames: list[FrameRecord]) -> list[FrameRecord]:
    """Name each view by its image's path below the folder all the images share, without the suffix, as COLMAP's
    are: Blender's train/r_0 and test/r_0 and a rig's cam0/0001 and cam1/0001 stay apart; one folder of images
    keeps the file stems."""
    base = Path(os.path.commonpath([frame.source.parent for frame in frames]))
    return [replace(frame, name=frame.source.relative_to(base).with_suffix("").as_posix()) for frame in frames]


def read_point_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """([P, 3] float64 xyz, [P, 3] uint8 rgb or None) of a PLY point cloud's vertices, or EconsgError naming it."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as error:  # plyfile raises several types for malformed files
        raise EconsgError(f"{path}: not a readable PLY point cloud with a 'vertex' element ({error})") from None
    names = {prop.name for prop in vertex.properties}
    if not {"x", "y", "z"} <= names or len(vertex.data) == 0:
        raise EconsgError(f"{path}: expected vertices with x, y, z properties, got {len(vertex.data)} with {sorted(names)}")
    xyz = np.stack([np.asarray(vertex[k], np.float64) for k in "xyz"], axis=1)
    if not np.isfinite(xyz).all():
        raise EconsgError(f"{path}: vertex positions are not all finite")
    colours = ("red", "green", "blue")
    rgb = ply_colours(np.stack([np.asarray(vertex[k]) for k in colours], axis=1)) if set(colours) <= names else None
    return xyz, rgb


def ply_colours(values: np.ndarray) -> np.ndarray:
    """[P, 3] uint8 colours from a PLY's red, green, blue as stored: 8-bit as is, 16-bit by their high byte, floats
    in [0, 1] scaled by 255 (floats above 1 taken as 0-255)."""
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.integer):
        return (values.astype(np.int64) >> 8 if values.max(initial=0) > 255 else values).clip(0, 255).astype(np.uint8)
    scale = 255.0 if np.nanmax(values, initial=0) <= 1.0 else 1.0
    return np.rint(np.nan_to_num(values.astype(np.float64)) * scale).clip(0, 255).astype(np.uint8)


def read(root: Path) -> SceneSource:
    class_names = read_class_names(root)
    if (root / "transforms_train.json").is_file():
        test_path = root / "transforms_test.json"
        if not test_path.is_file():
            raise EconsgError(f"{test_path}: missing; a Blender layout needs transforms_train.json and transforms_test.json")
        meta_path, fmt = root / "transforms_train.json", "blender"
        meta = _load_json(meta_path)
        frames = _frames(root, meta_path, meta, lambda i: "train", len(class_names))
        frames += _frames(root, test_path, _load_json(test_path), lambda i: "test", len(class_names))
    else:
        meta_path, fmt = root / "transforms.json", "nerfstudio"
        meta = _load_json(meta_path)
        frames = nerfstudio_split(root, meta_path, meta, _frames(root, meta_path, meta, lambda i: "train", len(class_names)))
    frames = name_by_folder(frames)
    ply = meta.get("ply_file_path")
    points, point_rgb = read_point_cloud(_resolve(root, ply, f"{meta_path}: ply_file_path")) if ply else (None, None)
    return SceneSource(root=root, format=fmt, frames=frames, class_names=class_names, points=points, point_rgb=point_rgb)
