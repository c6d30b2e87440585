"""Image, depth and label file loading with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from econsg.errors import EconsgError
from econsg.scene.data import IGNORE


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise EconsgError(f"{path}: file does not exist")
    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, ValueError) as error:
        raise EconsgError(f"{path}: unreadable image ({error})") from None


def load_rgb(path: Path) -> np.ndarray:
    """[H,W,3] float32 in [0,1]; an alpha channel is composited on white (Blender convention)."""
    image = _open(path)
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_depth_png(path: Path, depth_scale: float, shape: tuple[int, int]) -> np.ndarray:
    """[H,W] float32 metres from an integer depth PNG (value / depth_scale), checked against the image size."""
    depth = np.asarray(_open(path)).astype(np.float32) / float(depth_scale)
    expect_size(path, depth.shape[:2], shape, "depth map")
    return depth


def load_label_png(path: Path, shape: tuple[int, int], num_classes: int, unlabeled: int = 255) -> np.ndarray:
    """[H,W] int16 class ids with `unlabeled` mapped to IGNORE; ids outside the class list are refused."""
    raw = np.asarray(_open(path)).astype(np.int32)
    if raw.ndim != 2:
        raise EconsgError(f"{path}: label image has shape {raw.shape}, expected a single-channel [H, W] image")
    expect_size(path, raw.shape, shape, "label map")
    labels = np.where(raw == unlabeled, IGNORE, raw)
    bad = (labels != IGNORE) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise EconsgError(
            f"{path}: label ids {sorted(set(labels[bad].tolist()))[:10]} are outside the class list "
            f"(0..{num_classes - 1}, {unlabeled} = unlabeled)"
        )
    return labels.astype(np.int16)


def load_instance_png(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """[H,W] int32 instance ids (0 = none)."""
    raw = np.asarray(_open(path)).astype(np.int32)
    expect_size(path, raw.shape[:2], shape, "instance map")
    return raw


def expect_size(path: Path, found: tuple[int, ...], expected: tuple[int, int], what: str) -> None:
    if tuple(found) != tuple(expected):
        raise EconsgError(f"{path}: {what} is {found[1]}x{found[0]} pixels, expected {expected[1]}x{expected[0]} like its image")
