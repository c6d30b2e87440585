"""Small helpers shared by the real-dataset readers: numbered files, splits, matrices, label lookup tables."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from econsg.errors import EconsgError, not_utf8
from econsg.scene.data import IGNORE
from econsg.scene.readers.imageio import expect_size

LLFF_TEST_EVERY = 8


def llff_split(index: int, every: int = LLFF_TEST_EVERY) -> str:
    """LLFF / mip-NeRF hold-out: views 0, 8, 16, ... (by sorted position) are test, the rest train."""
    return "test" if index % every == 0 else "train"


def numbered_files(folder: Path, pattern: str) -> dict[int, Path]:
    """Files of `folder` whose name matches `pattern` (a regex with one integer group), keyed by that integer; two
    files of one number (rgb_1.png and rgb_01.png) are refused, naming both."""
    if not folder.is_dir():
        return {}
    regex = re.compile(pattern)
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = regex.fullmatch(path.name)
        if match:
            number = int(match.group(1))
            if number in found:
                raise EconsgError(f"{found[number]} and {path.name}: two files numbered {number}; expected one file per "
                                  "number (remove or rename one)")
            found[number] = path
    return dict(sorted(found.items()))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, or EconsgError naming the file."""
    if not path.is_file():
        raise EconsgError(f"{path}: file does not exist")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as error:
        raise EconsgError(f"{path}: unreadable image ({error})") from None


def read_text_file(path: Path) -> str:
    """A text file of the dataset, read as UTF-8 whatever the machine's locale; EconsgError naming the file where a
    byte is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise EconsgError(f"{path}: {not_utf8(error)}; expected UTF-8 (save the file as UTF-8)") from None


def read_pose_lines(path: Path) -> np.ndarray:
    """[N,4,4] float64 from a text file with one row-major 4x4 matrix (16 numbers) per line."""
    if not path.is_file():
        raise EconsgError(f"{path}: trajectory file does not exist")
    rows = []
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise EconsgError(f"{path}: line {number} is not numeric; expected 16 numbers (a row-major 4x4 pose)") from None
        if len(values) != 16:
            raise EconsgError(f"{path}: line {number} has {len(values)} numbers; expected 16 (a row-major 4x4 pose)")
        rows.append(values)
    if not rows:
        raise EconsgError(f"{path}: no poses found; expected one row-major 4x4 matrix per line")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4, 4)


def read_matrix_file(path: Path, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """A whitespace-separated numeric matrix (e.g. a ScanNet pose or intrinsic file)."""
    if not path.is_file():
        raise EconsgError(f"{path}: file does not exist")
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise EconsgError(f"{path}: not a numeric matrix ({error})") from None
    if matrix.shape != shape:
        raise EconsgError(f"{path}: matrix has shape {matrix.shape}, expected {shape}")
    return matrix


def pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 intrinsics matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def shift_integer_centre_convention(K: np.ndarray) -> np.ndarray:
    """Intrinsics written for pixel centres at integer coordinates (OpenCV calibration, NICE-SLAM,
    Semantic-NeRF: the image centre is at (W-1)/2) re-expressed for centres at +0.5 (this project's and
    gsplat's convention): the principal point moves by +0.5 pixel."""
    shifted = np.array(K, dtype=np.float64)
    shifted[0, 2] += 0.5
    shifted[1, 2] += 0.5
    return shifted


def load_mapped_labels(path: Path, shape: tuple[int, int], lookup: np.ndarray, what: str) -> np.ndarray:
    """[H,W] int16 class ids from an integer label PNG through `lookup` (raw id -> class id or IGNORE).

    Raw ids beyond the table or marked -2 in it ("not in the mapping") raise EconsgError naming the file.
    """
    if not path.is_file():
        raise EconsgError(f"{path}: file does not exist")
    try:
        with Image.open(path) as image:
            raw = np.asarray(image).astype(np.int64)
    except (OSError, ValueError) as error:
        raise EconsgError(f"{path}: unreadable image ({error})") from None
    if raw.ndim != 2:
        raise EconsgError(f"{path}: label image has shape {raw.shape}, expected a single-channel [H, W] image")
    expect_size(path, raw.shape, shape, "label map")
    outside = (raw < 0) | (raw >= len(lookup))
    mapped = np.full(raw.shape, -2, dtype=np.int64)
    mapped[~outside] = lookup[raw[~outside]]
    unknown = mapped == -2
    if unknown.any():
        raise EconsgError(f"{path}: label ids {sorted(set(raw[unknown].tolist()))[:10]} are not in the {what}")
    return np.where(mapped < 0, IGNORE, mapped).astype(np.int16)
