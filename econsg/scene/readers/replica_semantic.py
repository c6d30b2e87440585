"""Replica in the Semantic-NeRF layout: `rgb/rgb_<n>.png`, `depth/depth_<n>.png`,
`semantic_class/semantic_class_<n>.png` (optional `semantic_instance/semantic_instance_<n>.png`) and
`traj_w_c.txt`.

Followed Semantic-NeRF's loader (SSR/datasets/replica/replica_datasets.py) and ray code (SSR/models/rays.py):
- traj_w_c.txt: one row-major 4x4 T_wc (camera-to-world) per line, OpenCV axes (their rays use the
  "opencv" convention by default), line i = frame i (files are matched by their number n).
- depth: uint16 millimetres (metres = value / 1000), 0 = invalid.
- semantic_class: uint8 raw Replica class ids, 0 = void -> IGNORE; raw id i > 0 is class i - 1. Void is no
  class: it is never a vocabulary word (a vocabulary holding it would label pixels void, which the ground truth
  never holds). Names come from `classes.txt` beside the folders (line i = name of raw id i, line 0 void's);
  without it the names are generic `class_<id>` up to the largest id found in the label files (scanned once),
  with a warning: CLIP cannot read them.
- Intrinsics: `cam_params.json` (see replica_nice) when present, else Semantic-NeRF's 90 degree
  horizontal field of view: fx = fy = W / 2, principal point at the image centre (W/2, H/2 here; their
  (W-1)/2 is the same point for integer pixel centres).
- Split: Semantic-NeRF's: train = frames 0, 5, 10, ...; test = frames 2, 7, 12, ...; others unused.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from econsg.errors import EconsgError
from econsg.progress import report
from econsg.scene.data import IGNORE, FrameRecord, SceneSource, check_intrinsics, check_rigid_pose
from econsg.scene.readers.blender import read_class_names
from econsg.scene.readers.common import (
    image_size,
    load_mapped_labels,
    numbered_files,
    pinhole,
    read_pose_lines,
    shift_integer_centre_convention,
)
from econsg.scene.readers.imageio import load_depth_png, load_instance_png, load_rgb
from econsg.scene.readers.replica_nice import read_camera_params

FORMAT = "replica_semantic"
LOOKS_FOR = "rgb/rgb_*.png + depth/depth_*.png + semantic_class/semantic_class_*.png + traj_w_c.txt (Semantic-NeRF Replica)"
DEPTH_SCALE = 1000.0
SPLIT_STEP = 5  # Semantic-NeRF: train every 5th frame from 0, test every 5th from 2


def detect(root: Path) -> bool:
    return (root / "traj_w_c.txt").is_file() and (root / "rgb").is_dir()


def semantic_nerf_split(number: int) -> str | None:
    """'train' for frames 0, 5, 10, ...; 'test' for 2, 7, 12, ...; None (unused) otherwise."""
    phase = number % SPLIT_STEP
    return "train" if phase == 0 else "test" if phase == SPLIT_STEP // 2 else None


def replica_lookup(num_raw_ids: int) -> np.ndarray:
    """Raw id -> class id table: 0 (void) -> IGNORE, 1..num_raw_ids-1 -> raw id - 1, larger ids unknown (-2)."""
    lookup = np.full(256, -2, dtype=np.int64)
    lookup[1:num_raw_ids] = np.arange(num_raw_ids - 1)
    lookup[0] = IGNORE
    return lookup


def read(root: Path) -> SceneSource:
    images = numbered_files(root / "rgb", r"rgb_(\d+)\.png")
    if not images:
        raise EconsgError(f"{root / 'rgb'}: no rgb_<n>.png images found")
    depths = numbered_files(root / "depth", r"depth_(\d+)\.png")
    semantics = numbered_files(root / "semantic_class", r"semantic_class_(\d+)\.png")
    instances = numbered_files(root / "semantic_instance", r"semantic_instance_(\d+)\.png")
    poses = read_pose_lines(root / "traj_w_c.txt")
    raw_names = read_class_names(root)  # line i names raw id i, void's (0) included
    if semantics and not raw_names:
        # names made from the label maps' largest id would let ground truth, the held-out frames' included, set the
        # training vocabulary (extract.vocabulary: null), in words neither CLIP nor an evaluation vocabulary can match
        raise EconsgError(f"{root / 'classes.txt'}: missing; expected the class list of {root / 'semantic_class'}'s "
                          "ids, line i = the name of raw id i (line 0 names void), written from the scene's Replica "
                          "semantic info (pipelines/README.md)")
    lookup = replica_lookup(len(raw_names))
    class_names = raw_names[1:]
    first_width, first_height = image_size(next(iter(images.values())))
    camera = read_camera_params(
        root / "cam_params.json",
        {"w": first_width, "h": first_height, "fx": first_width / 2, "fy": first_width / 2,
         "cx": (first_width - 1) / 2, "cy": (first_height - 1) / 2, "scale": DEPTH_SCALE},
    )
    if camera["scale"] != DEPTH_SCALE:
        report(f"ingest: warning: {root / 'cam_params.json'} sets the depth scale to {camera['scale']:g} units per metre; "
               f"Semantic-NeRF's depth PNGs are millimetres ({DEPTH_SCALE:g}). NICE-SLAM's file says 6553.5 for its "
               "own renders: remove 'scale' from it unless these depth maps were written at that scale")
    K = check_intrinsics(
        shift_integer_centre_convention(pinhole(camera["fx"], camera["fy"], camera["cx"], camera["cy"])),
        str(root / "cam_params.json"),
    )
    frames = []
    for number, path in images.items():
        split = semantic_nerf_split(number)
        if split is None:
            continue
        if number >= len(poses):
            raise EconsgError(f"{path}: frame {number} has no line in {root / 'traj_w_c.txt'} ({len(poses)} poses)")
        width, height = image_size(path)
        if (width, height) != (int(camera["w"]), int(camera["h"])):
            raise EconsgError(f"{path}: image is {width}x{height} pixels, the camera ({root / 'cam_params.json'}, or the first "
                              f"image without it) is "
                              f"{int(camera['w'])}x{int(camera['h'])}; expected the camera of these images")
        shape = (height, width)
        depth, semantic, instance = depths.get(number), semantics.get(number), instances.get(number)
        frames.append(
            FrameRecord(
                name=path.stem,
                split=split,
                K=K,
                c2w=check_rigid_pose(poses[number], f"{root / 'traj_w_c.txt'}: line {number + 1}"),
                width=width,
                height=height,
                source=path,
                load_image=partial(load_rgb, path),
                load_depth=partial(load_depth_png, depth, camera["scale"], shape) if depth else None,
                load_classes=partial(load_mapped_labels, semantic, shape, lookup, f"class list of {len(class_names)} "
                                     f"Replica classes and void (0)") if semantic else None,
                load_instances=partial(load_instance_png, instance, shape) if instance else None,
            )
        )
    if not frames:
        raise EconsgError(f"{root / 'rgb'}: no frame falls in Semantic-NeRF's split (numbers 0, 5, ... and 2, 7, ...)")
    return SceneSource(root=root, format=FORMAT, frames=frames, class_names=class_names)
