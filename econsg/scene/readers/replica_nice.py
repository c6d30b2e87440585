"""Replica in the NICE-SLAM layout: `results/frame*.jpg`, `results/depth*.png`, `traj.txt`.

- traj.txt: one row-major 4x4 camera-to-world per line, OpenCV axes (NICE-SLAM's own loader flips
  y and z to reach its OpenGL renderer, so the file itself is OpenCV); line i belongs to frame i.
- depth*.png: uint16, metres = value / 6553.5 (NICE-SLAM's `png_depth_scale`), 0 = invalid.
- Intrinsics: `cam_params.json` ({"camera": {"w", "h", "fx", "fy", "cx", "cy", "scale"}}, as shipped
  with the Replica renders) when present, else NICE-SLAM's Replica config: 1200x680, fx = fy = 600,
  cx = 599.5, cy = 339.5. Both write the principal point for pixel centres at integer coordinates,
  so 0.5 is added (cx = 600, cy = 340 here: the image centre).
- Split: every 8th frame (0, 8, ...) is test (LLFF convention; NICE-SLAM has no split of its own).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from econsg.errors import EconsgError
from econsg.scene.data import FrameRecord, SceneSource, check_intrinsics, check_rigid_pose
from econsg.scene.readers.common import (
    image_size,
    llff_split,
    numbered_files,
    pinhole,
    read_pose_lines,
    shift_integer_centre_convention,
)
from econsg.scene.readers.imageio import load_depth_png, load_rgb

FORMAT = "replica_nice"
LOOKS_FOR = "results/frame*.jpg + results/depth*.png + traj.txt (NICE-SLAM Replica)"
NICE_SLAM_REPLICA_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}


def detect(root: Path) -> bool:
    return (root / "results").is_dir() and (root / "traj.txt").is_file() and bool(numbered_files(root / "results", r"frame(\d+)\.jpg"))


def read_camera_params(path: Path, default: dict) -> dict:
    """The `camera` block of a cam_params.json (w, h, fx, fy, cx, cy, scale), or `default` when the file is absent."""
    if not path.is_file():
        return dict(default)
    try:
        camera = json.loads(path.read_text(encoding="utf-8"))["camera"]
        values = {key: float(camera[key]) for key in ("w", "h", "fx", "fy", "cx", "cy")} | {
            "scale": float(camera.get("scale", default["scale"]))
        }
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EconsgError(
            f"{path}: expected {{\"camera\": {{\"w\", \"h\", \"fx\", \"fy\", \"cx\", \"cy\", \"scale\"}}}} ({error!r})"
        ) from None
    if not values["scale"] > 0:
        raise EconsgError(f"{path}: camera.scale is {values['scale']}; expected depth units per metre, above 0")
    return values


def read(root: Path) -> SceneSource:
    results = root / "results"
    images = numbered_files(results, r"frame(\d+)\.jpg")
    depths = numbered_files(results, r"depth(\d+)\.png")
    poses = read_pose_lines(root / "traj.txt")
    if not images:
        raise EconsgError(f"{results}: no frame*.jpg images found")
    if len(poses) < len(images):
        raise EconsgError(f"{root / 'traj.txt'}: has {len(poses)} poses for {len(images)} frames; expected one per frame")
    camera = read_camera_params(root / "cam_params.json", NICE_SLAM_REPLICA_CAMERA)
    K = check_intrinsics(
        shift_integer_centre_convention(pinhole(camera["fx"], camera["fy"], camera["cx"], camera["cy"])),
        str(root / "cam_params.json"),
    )
    frames = []
    for index, (number, path) in enumerate(images.items()):
        if number >= len(poses):
            raise EconsgError(f"{path}: frame number {number} has no line in {root / 'traj.txt'} ({len(poses)} poses)")
        width, height = image_size(path)
        if (width, height) != (int(camera["w"]), int(camera["h"])):
            raise EconsgError(
                f"{path}: image is {width}x{height} pixels, the camera (cam_params.json or NICE-SLAM default) "
                f"is {int(camera['w'])}x{int(camera['h'])}"
            )
        depth = depths.get(number)
        frames.append(
            FrameRecord(
                name=path.stem,
                split=llff_split(index),
                K=K,
                c2w=check_rigid_pose(poses[number], f"{root / 'traj.txt'}: line {number + 1}"),
                width=width,
                height=height,
                source=path,
                load_image=partial(load_rgb, path),
                load_depth=partial(load_depth_png, depth, camera["scale"], (height, width)) if depth else None,
            )
        )
    return SceneSource(root=root, format=FORMAT, frames=frames)
