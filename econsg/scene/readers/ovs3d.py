"""3D-OVS scenes: `images/`, `poses_bounds.npy` (LLFF), `segmentations/classes.txt` and
`segmentations/<view>/<class>.png`; optional `sparse/0` for a point cloud.

Followed the 3D-OVS reference loader (Kunhao-Liu/3D-OVS dataLoader/llff.py):
- poses_bounds.npy: [N, 17]; the first 15 numbers are a 3x5 matrix [R | t | (H, W, focal)] whose
  rotation columns are LLFF's (down, right, back) camera axes in world coordinates. OpenCV axes
  (right, down, forward) are (col 1, col 0, -col 2). Images are `images/*` sorted by name, one per
  row. K: fx = fy = focal, principal point at the image centre; when the files on disk are smaller
  than (W, H) the focal length is scaled by their width ratio. Poses are NOT re-centred or rescaled
  (the reference does both for its NDC renderer), so COLMAP points of `sparse/0`, when present, stay
  in the same frame (LLFF writes COLMAP's world frame).
- classes.txt: one name per line; the reference sorts them alphabetically and so does this reader
  (class id = position in the sorted list).
- segmentations/<view>/: `<view>` is the integer index of the image in the sorted list; one
  `<class>.png` mask per class; a pixel belongs to a class when its grey value is 255 (the reference's
  `(png / 255).astype(int8)`). For the label map a pixel with no class, or with several, is IGNORE;
  the protocol scorer (econsg.protocols.score_ovs3d) uses the masks themselves via `load_class_masks`.
- Split: views with segmentations are test, all others train (the reference trains on all views and
  scores the segmented ones; holding them out is stricter).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from econsg.errors import EconsgError
from econsg.scene.data import IGNORE, FrameRecord, SceneSource, check_intrinsics, check_rigid_pose
from econsg.scene.readers import colmap
from econsg.scene.readers.common import image_size, pinhole, read_text_file
from econsg.scene.readers.imageio import _open, expect_size, load_rgb

FORMAT = "ovs3d"
LOOKS_FOR = "images/ + poses_bounds.npy + segmentations/classes.txt (3D-OVS)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared in lower case


def detect(root: Path) -> bool:
    return (root / "poses_bounds.npy").is_file() and (root / "segmentations").is_dir()


def llff_to_opencv(pose_3x5: np.ndarray) -> np.ndarray:
    """4x4 OpenCV camera-to-world from an LLFF 3x5 [down, right, back, t, hwf] matrix."""
    pose = np.asarray(pose_3x5, dtype=np.float64)
    c2w = np.eye(4)
    c2w[:3, 0] = pose[:, 1]
    c2w[:3, 1] = pose[:, 0]
    c2w[:3, 2] = -pose[:, 2]
    c2w[:3, 3] = pose[:, 3]
    return c2w


def read_ovs3d_classes(root: Path) -> list[str]:
    """Sorted class names of segmentations/classes.txt (the reference sorts them)."""
    path = root / "segmentations" / "classes.txt"
    if not path.is_file():
        raise EconsgError(f"{path}: missing; a 3D-OVS scene lists its classes there, one per line")
    names = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    if not names:
        raise EconsgError(f"{path}: the class list is empty; expected one class name per line")
    if len(set(names)) != len(names):
        raise EconsgError(f"{path}: class names repeat; expected unique names")
    return sorted(names)


def segmented_views(root: Path) -> dict[int, Path]:
    """segmentations/<view>/ folders by integer view index; EconsgError when there are none."""
    folder = root / "segmentations"
    views = {}
    for path in folder.iterdir():
        if path.is_dir():
            if not path.name.isdigit():
                raise EconsgError(f"{path}: segmentation folder name {path.name!r} is not an image index")
            views[int(path.name)] = path
    if not views:
        raise EconsgError(f"{folder}: no <view>/ folders with class masks; the 3D-OVS test views are defined by them")
    return dict(sorted(views.items()))


def load_class_masks(folder: Path, class_names: list[str], shape: tuple[int, int]) -> np.ndarray:
    """[C,H,W] bool: pixel belongs to class c when `<folder>/<class c>.png` is 255 there."""
    masks = []
    for name in class_names:
        path = folder / f"{name}.png"
        if not path.is_file():
            raise EconsgError(f"{path}: mask of class {name!r} is missing (every class of classes.txt needs one per view)")
        grey = np.asarray(_open(path).convert("L"))
        expect_size(path, grey.shape, shape, "class mask")
        masks.append(grey == 255)
    return np.stack(masks)


def masks_to_labels(masks: np.ndarray) -> np.ndarray:
    """[H,W] int16: the class whose mask covers the pixel; IGNORE where none or several do."""
    count = masks.sum(axis=0)
    return np.where(count == 1, masks.argmax(axis=0), IGNORE).astype(np.int16)


def load_ovs3d_labels(folder: Path, class_names: list[str], shape: tuple[int, int]) -> np.ndarray:
    return masks_to_labels(load_class_masks(folder, class_names, shape))


def read(root: Path) -> SceneSource:
    path = root / "poses_bounds.npy"
    try:
        poses_bounds = np.load(path)
    except (OSError, ValueError) as error:
        raise EconsgError(f"{path}: unreadable ({error})") from None
    if poses_bounds.ndim != 2 or poses_bounds.shape[1] != 17:
        raise EconsgError(f"{path}: array has shape {poses_bounds.shape}, expected [N, 17] (LLFF 3x5 pose + near/far)")
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if (root / "images").is_dir() else []
    if len(images) != len(poses_bounds):
        raise EconsgError(f"{path}: {len(poses_bounds)} poses for {len(images)} images in {root / 'images'}; expected one per image")
    class_names = read_ovs3d_classes(root)
    views = segmented_views(root)
    outside = [v for v in views if v >= len(images)]
    if outside:
        raise EconsgError(f"{root / 'segmentations'}: view folders {outside} name images beyond the {len(images)} in images/")
    poses = poses_bounds[:, :15].reshape(-1, 3, 5)
    frames = []
    for index, image_path in enumerate(images):
        where = f"{path}: row {index}"
        H, W, focal = poses[index, :, 4]
        width, height = image_size(image_path)
        if abs(width / W - height / H) > 0.01:
            raise EconsgError(f"{image_path}: image is {width}x{height}, poses_bounds.npy says {W:.0f}x{H:.0f}; aspect ratios differ")
        f = focal * width / W
        K = check_intrinsics(pinhole(f, f, width / 2.0, height / 2.0), where)
        c2w = check_rigid_pose(llff_to_opencv(poses[index]), where)
        shape = (height, width)
        folder = views.get(index)
        frames.append(
            FrameRecord(
                name=image_path.stem,
                split="test" if folder is not None else "train",
                K=K,
                c2w=c2w,
                width=width,
                height=height,
                source=image_path,
                load_image=partial(load_rgb, image_path),
                load_classes=partial(load_ovs3d_labels, folder, class_names, shape) if folder is not None else None,
            )
        )
    points = colors = seen_by = None
    if colmap.model_folder(root) is not None:
        points, colors, seen_by = colmap.model_points(colmap.read_model(colmap.model_folder(root)))
    return SceneSource(root=root, format=FORMAT, frames=frames, class_names=class_names, points=points, point_rgb=colors,
                       point_views=seen_by)
