"""The in-memory scene description every dataset reader produces, before ingest writes scene.zarr."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from econsg.errors import EconsgError

IGNORE = -1

Split = Literal["train", "test"]


@dataclass(frozen=True)
class FrameRecord:
    """One posed view. Loading is lazy so a reader can list a large dataset cheaply.

    `K` is 3x3 in pixels of the full-size image, `c2w` 4x4 camera-to-world in the OpenCV convention.
    Loaders return: image [H,W,3] float32 in [0,1]; depth [H,W] float32 metres (0 = invalid);
    classes [H,W] int16 indexing the scene's class list (IGNORE = -1); instances [H,W] int32.
    """

    name: str
    split: Split
    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    source: Path
    load_image: Callable[[], np.ndarray]
    load_depth: Callable[[], np.ndarray] | None = None
    load_classes: Callable[[], np.ndarray] | None = None
    load_instances: Callable[[], np.ndarray] | None = None


@dataclass(frozen=True)
class SceneSource:
    """What a reader found: frames, the class list (may be empty) and an optional point cloud."""

    root: Path
    format: str
    frames: list[FrameRecord]
    class_names: list[str] = field(default_factory=list)
    points: np.ndarray | None = None  # [P,3] float64 world
    point_rgb: np.ndarray | None = None  # [P,3] uint8
    point_views: list[tuple[str, ...]] | None = None  # per point, the frames' names that observe it (COLMAP tracks;
    # empty ones where the model keeps none)


def check_rigid_pose(c2w: np.ndarray, where: str, atol: float = 1e-3) -> np.ndarray:
    """A finite 4x4 rigid transform (orthonormal rotation with det +1, last row 0 0 0 1), or EconsgError."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4):
        raise EconsgError(f"{where}: pose has shape {c2w.shape}, expected a 4x4 (or 3x4) camera-to-world matrix")
    if not np.all(np.isfinite(c2w)):
        raise EconsgError(f"{where}: pose contains NaN or infinite values")
    rotation = c2w[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=atol) or abs(np.linalg.det(rotation) - 1.0) > atol:
        raise EconsgError(
            f"{where}: pose is not rigid (rotation part is not orthonormal with determinant +1; "
            f"det = {np.linalg.det(rotation):.4f}); scaled or sheared poses are not supported"
        )
    if not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=atol):
        raise EconsgError(f"{where}: last row of the pose is {c2w[3].tolist()}, expected [0, 0, 0, 1]")
    return c2w


def check_intrinsics(K: np.ndarray, where: str) -> np.ndarray:
    """A finite 3x3 pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with positive focal lengths, or EconsgError.

    A skewed or projective matrix is refused: fuse would back-project through all of it, the rasterizers (gsplat's
    too) read fx, fy, cx and cy only, so the two would put a point on different pixels.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EconsgError(f"{where}: intrinsics {K.tolist()} are not a finite 3x3 pinhole matrix with positive focal lengths")
    tolerance = 1e-9 * max(K[0, 0], K[1, 1])
    if abs(K[0, 1]) > tolerance or abs(K[1, 0]) > tolerance or np.abs(K[2] - [0.0, 0.0, 1.0]).max() > 1e-9:
        raise EconsgError(f"{where}: intrinsics {K.tolist()} have skew or a last row other than [0, 0, 1]; expected a "
                          "pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (undistort and unskew the images first)")
    return K


def check_principal_point(K: np.ndarray, width: int, height: int, where: str) -> None:
    """Refuse intrinsics whose principal point lies more than a quarter of the image from its centre: they were
    written for another image size (ScanNet's 1296x968 intrinsic_color.txt beside 640x480 exports, a nerfstudio
    fl_x/cx/cy kept after shrinking the images), which would silently bend every ray."""
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if abs(cx - width / 2) > width / 4 or abs(cy - height / 2) > height / 4:
        raise EconsgError(
            f"{where}: principal point ({cx:.1f}, {cy:.1f}) is far from the centre of the {width}x{height} image; "
            f"the intrinsics look like those of a {2 * cx:.0f}x{2 * cy:.0f} image; expected intrinsics for this "
            "image size (scale fx, fy, cx, cy by the images' resize factor)"
        )


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world from OpenGL axes (x right, y up, z back) to OpenCV axes (x right, y down, z forward)."""
    return np.asarray(c2w, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])


def select_sparse_views(c2ws: np.ndarray, count: int | None, selection: str = "trajectory") -> list[int]:
    """The sparse-view setting: positions of `count` of the training views' [N, 4, 4] OpenCV camera-to-worlds
    (all if None). 'trajectory': evenly spaced in the dataset's order. 'spread': farthest-point sampling from the
    first view, over camera centres (in units of the centres' RMS distance from their mean) plus optical axes,
    so a trajectory that passes a place twice does not spend two picks there."""
    num = len(c2ws)
    if count is None or count >= num:
        return list(range(num))
    if selection == "trajectory":
        return np.linspace(0, num - 1, count).round().astype(int).tolist()
    centres, axes = c2ws[:, :3, 3], c2ws[:, :3, 2]
    radius = float(np.sqrt(((centres - centres.mean(axis=0)) ** 2).sum(axis=1).mean()))
    poses = np.concatenate([centres / (radius if radius > 0 else 1.0), axes], axis=1)
    picks = [0]
    distance = np.linalg.norm(poses - poses[0], axis=1)
    while len(picks) < count:
        distance[picks[-1]] = -np.inf  # never picked twice, even where poses repeat
        picks.append(int(distance.argmax()))  # the first of equals: deterministic
        distance = np.minimum(distance, np.linalg.norm(poses - poses[picks[-1]], axis=1))
    return sorted(picks)
