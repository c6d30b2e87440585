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
    """[H,W,3] float32 in [0,1]; an alpha channel (or a palette's transparent entry) is composited on black, the
    renderer's background, so that an empty render matches a transparent pixel (on white, as NeRF-synthetic's loaders
    composite for a white-background renderer, splat would have to build a white shell); a 16-bit grey image is
    scaled by 65535, a float one taken as it is, in [0,1]."""
    image = _open(path)
    if image.mode.startswith("I") or image.mode == "F":  # PIL's 16/32-bit integer and float grey modes
        grey = np.asarray(image, dtype=np.float32) / (1.0 if image.mode == "F" else 65535.0)
        if not (np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= 1):
            raise EconsgError(f"{path}: a {image.mode} grey image with values outside [0, 1] after scaling; "
                              "expected an 8- or 16-bit image")
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_depth_png(path: Path, depth_scale: float, shape: tuple[int, int], resize: bool = False) -> np.ndarray:
    """[H,W] float32 metres from a single-channel integer depth PNG or a .npy array (value / depth_scale), checked
    against the image size; with `resize`, a depth map of another size but the same aspect ratio (to a pixel) is
    resampled to it by nearest neighbour, as nerfstudio does for phone captures, whose depth is coarser than their
    images. NaN and inf (a float map's "no return") read as 0, no depth; a negative value is refused."""
    if path.suffix.lower() == ".npy":
        raw = _load_npy(path)
    else:
        raw = np.asarray(_open(path))
    single_channel(path, raw, "depth map")
    depth = raw.astype(np.float32) / float(depth_scale)
    depth[~np.isfinite(depth)] = 0.0
    if (negative := int((depth < 0).sum())):
        raise EconsgError(f"{path}: {negative} of {depth.size} depth values are negative; expected z-depths >= 0 in the "
                          "scene's units (x depth_scale), 0 where there is none")
    if resize and depth.shape != tuple(shape) and abs(depth.shape[0] - depth.shape[1] * shape[0] / shape[1]) <= 1:
        depth = resize_nearest(depth, shape)
    expect_size(path, depth.shape, shape, "depth map")
    return depth


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EconsgError(f"{path}: file does not exist")
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise EconsgError(f"{path}: unreadable .npy array ({error})") from None
    return raw[..., 0] if raw.ndim == 3 and raw.shape[-1] == 1 else raw  # nerfstudio writes [H, W, 1] too


def resize_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`values` [h, w] resampled to `shape` [H, W]: each output pixel takes the input sample under its centre."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * values.shape[0] / shape[0]).astype(np.int64), values.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * values.shape[1] / shape[1]).astype(np.int64), values.shape[1] - 1)
    return values[rows[:, None], cols[None, :]]


def load_label_png(path: Path, shape: tuple[int, int], num_classes: int, unlabeled: int = 255) -> np.ndarray:
    """[H,W] int16 class ids with `unlabeled` mapped to IGNORE; ids outside the class list are refused."""
    raw = np.asarray(_open(path)).astype(np.int32)
    single_channel(path, raw, "label image")
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
    single_channel(path, raw, "instance image")
    expect_size(path, raw.shape, shape, "instance map")
    return raw


def single_channel(path: Path, raw: np.ndarray, what: str) -> None:
    """Refuse a map with colour channels (a depth, label or instance file saved as an RGB picture), naming it."""
    if raw.ndim != 2:
        raise EconsgError(f"{path}: {what} has shape {raw.shape}, expected a single-channel [H, W] image")


def expect_size(path: Path, found: tuple[int, ...], expected: tuple[int, int], what: str) -> None:
    if tuple(found) != tuple(expected):
        raise EconsgError(f"{path}: {what} is {found[1]}x{found[0]} pixels, expected {expected[1]}x{expected[0]} like its image")
