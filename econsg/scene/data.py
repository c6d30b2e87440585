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
    points: np.ndarray | None = None  # [P,3] float32 world
    point_rgb: np.ndarray | None = None  # [P,3] uint8


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
    """A finite 3x3 pinhole matrix with positive focal lengths, or EconsgError."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EconsgError(f"{where}: intrinsics {K.tolist()} are not a finite 3x3 pinhole matrix with positive focal lengths")
    return K


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world from OpenGL axes (x right, y up, z back) to OpenCV axes (x right, y down, z forward)."""
    return np.asarray(c2w, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])


def select_sparse_views(train_indices: list[int], count: int | None) -> list[int]:
    """The sparse-view setting: `count` training views evenly spaced along the trajectory (all if None)."""
    if count is None or count >= len(train_indices):
        return list(train_indices)
    picks = np.linspace(0, len(train_indices) - 1, count).round().astype(int)
    return [train_indices[i] for i in picks]
