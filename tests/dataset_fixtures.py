"""Writers of tiny datasets in the real layouts (COLMAP, Replica NICE-SLAM / Semantic-NeRF, ScanNet,
3D-OVS, LERF-OVS labels), from a synthetic scene whose truth is known: random images, known OpenCV
poses, a fronto-parallel plane z = PLANE_Z giving constant depth per view, and stripe labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PLANE_Z = 3.0


@dataclass
class SyntheticViews:
    """N views of W x H: images uint8 [N,H,W,3], c2w [N,4,4] OpenCV, K (pixel centres at +0.5), depth [N,H,W]
    metres, labels [N,H,W] int (class ids 0..C-1, -1 unlabeled)."""

    images: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    depth: np.ndarray
    labels: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.images.shape[1:3]


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def synthetic_views(n: int = 9, width: int = 16, height: int = 12, num_classes: int = 3, seed: int = 0) -> SyntheticViews:
    """Cameras looking down +z, rolled about z and shifted; depth of the plane z = PLANE_Z is 3 - t_z."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = rotation_z(0.1 * i)
        c2w[i, :3, 3] = [0.1 * i, -0.05 * i, 0.02 * i]
    K = np.array([[20.0, 0, width / 2], [0, 22.0, height / 2], [0, 0, 1]])
    depth = np.stack([np.full((height, width), PLANE_Z - c2w[i, 2, 3], np.float32) for i in range(n)])
    stripes = (np.arange(width) * num_classes // width)[None, :].repeat(height, 0)
    labels = np.stack([np.roll(stripes, i, axis=1) for i in range(n)])
    labels[:, 0, :] = -1  # an unlabelled top row
    return SyntheticViews(images, c2w, K, depth, labels)


def save_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(image).save(path, quality=100, subsampling=0)  # near-lossless, so tests can compare pixels
    else:
        Image.fromarray(image).save(path)


def save_uint16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint16)).save(path)


def save_uint8(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def integer_centre(K: np.ndarray) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) written for pixel centres at integer coordinates (what NICE-SLAM / ScanNet files hold)."""
    return K[0, 0], K[1, 1], K[0, 2] - 0.5, K[1, 2] - 0.5


# ---- COLMAP ----------------------------------------------------------------------------------------


def write_colmap(root: Path, views: SyntheticViews, *, model: str = "PINHOLE", params=None, binary: bool = True,
                 skip_image: int | None = None, points: np.ndarray | None = None, rig: bool = False,
                 tracks: list[list[int]] | None = None) -> Path:
    """sparse/0 written with pycolmap's own API plus images/<i>.png (with `rig`, images/cam<i % 2>/view_<i // 2>.png:
    two cameras' folders holding the same file names); returns root. `tracks[j]`: the view indices observing point j
    (default: none, a model without tracks)."""
    import pycolmap

    height, width = views.shape
    K = views.K
    if params is None:
        params = {"PINHOLE": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], "SIMPLE_PINHOLE": [K[0, 0], K[0, 2], K[1, 2]]}[model]
    reconstruction = pycolmap.Reconstruction()
    reconstruction.add_camera_with_trivial_rig(
        pycolmap.Camera(camera_id=1, model=model, width=width, height=height, params=list(params))
    )
    for i in range(len(views.images)):
        name = f"cam{i % 2}/view_{i // 2:02d}.png" if rig else f"view_{i:02d}.png"
        w2c = np.linalg.inv(views.c2w[i])
        image = pycolmap.Image(name=name, camera_id=1, image_id=i + 1)
        if tracks is not None:  # one 2D point per 3D point, for the tracks to index
            image.points2D = pycolmap.Point2DList([pycolmap.Point2D(np.zeros(2)) for _ in range(len(points))])
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3, :4]))
        if i != skip_image:
            save_rgb(root / "images" / name, views.images[i])
    if points is not None:
        for j, xyz in enumerate(points):
            track = pycolmap.Track()
            for view in (tracks[j] if tracks is not None else []):
                track.add_element(view + 1, j)  # image ids are view + 1; 2D point j of that image
            reconstruction.add_point3D(np.asarray(xyz, np.float64), track,
                                        (np.array([j, 2 * j, 3 * j]) % 256).astype(np.uint8))
    folder = root / "sparse" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    (reconstruction.write_binary if binary else reconstruction.write_text)(str(folder))
    return root


# ---- Replica (NICE-SLAM) ---------------------------------------------------------------------------


def write_replica_nice(root: Path, views: SyntheticViews, *, cam_params: bool = True, depth_shape=None) -> Path:
    """results/frame%06d.jpg, results/depth%06d.png (x 6553.5), traj.txt, cam_params.json."""
    for i, image in enumerate(views.images):
        save_rgb(root / "results" / f"frame{i:06d}.jpg", image)
        depth = np.round(views.depth[i] * 6553.5)
        if depth_shape is not None:
            depth = np.resize(depth, depth_shape)
        save_uint16(root / "results" / f"depth{i:06d}.png", depth)
    (root / "traj.txt").write_text("\n".join(" ".join(f"{v:.10f}" for v in c2w.ravel()) for c2w in views.c2w) + "\n")
    if cam_params:
        fx, fy, cx, cy = integer_centre(views.K)
        height, width = views.shape
        camera = {"w": width, "h": height, "fx": fx, "fy": fy, "cx": cx, "cy": cy, "scale": 6553.5}
        (root / "cam_params.json").write_text(json.dumps({"camera": camera}))
    return root


# ---- Replica (Semantic-NeRF) -----------------------------------------------------------------------


def write_replica_semantic(root: Path, views: SyntheticViews, *, class_names: list[str] | None = None,
                           label_offset: int = 1) -> Path:
    """rgb/rgb_<i>.png, depth/depth_<i>.png (mm), semantic_class/semantic_class_<i>.png (raw id = label +
    label_offset, 0 = void), traj_w_c.txt, optional classes.txt. Intrinsics: Semantic-NeRF's 90 degree default."""
    for i, image in enumerate(views.images):
        save_rgb(root / "rgb" / f"rgb_{i}.png", image)
        save_uint16(root / "depth" / f"depth_{i}.png", np.round(views.depth[i] * 1000))
        raw = np.where(views.labels[i] >= 0, views.labels[i] + label_offset, 0)
        save_uint8(root / "semantic_class" / f"semantic_class_{i}.png", raw)
    (root / "traj_w_c.txt").write_text("\n".join(" ".join(f"{v:.10f}" for v in c2w.ravel()) for c2w in views.c2w) + "\n")
    if class_names is not None:
        (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    return root


# ---- ScanNet ---------------------------------------------------------------------------------------

SCANNET_RAW_IDS = (7, 21, 3)  # raw ScanNet ids standing for labels 0, 1, 2
SCANNET_NYU40 = {7: 5, 21: 1, 3: 14, 40: 0}  # raw id -> nyu40 id (chair, wall, desk; 40 -> unlabelled)


def write_scannet(root: Path, views: SyntheticViews, *, depth_factor: int = 2, label_table: bool = True,
                  depth_intrinsics: bool = True) -> Path:
    """color/<i>.jpg, depth/<i>.png (mm, at 1/depth_factor resolution), pose/<i>.txt, intrinsic/*.txt,
    label-filt/<i>.png (raw ids) and scannetv2-labels.combined.tsv."""
    height, width = views.shape
    K_depth = views.K.copy()
    K_depth[:2] /= depth_factor
    for i, image in enumerate(views.images):
        save_rgb(root / "color" / f"{i}.jpg", image)
        depth = views.depth[i][: height // depth_factor, : width // depth_factor]
        save_uint16(root / "depth" / f"{i}.png", np.round(depth * 1000))
        (root / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "pose" / f"{i}.txt", views.c2w[i])
        raw = np.zeros(views.shape, np.int64)
        for label, raw_id in enumerate(SCANNET_RAW_IDS):
            raw[views.labels[i] == label] = raw_id
        save_uint16(root / "label-filt" / f"{i}.png", raw)
    (root / "intrinsic").mkdir(parents=True, exist_ok=True)
    for name, K in (("color", views.K), ("depth", K_depth)):
        if name == "depth" and not depth_intrinsics:
            continue
        matrix = np.eye(4)
        matrix[:3, :3] = K
        matrix[0, 2] -= 0.5  # files hold the integer-centre convention
        matrix[1, 2] -= 0.5
        np.savetxt(root / "intrinsic" / f"intrinsic_{name}.txt", matrix)
    if label_table:
        lines = ["id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class"]
        lines += [f"{raw}\tthing{raw}\tthing{raw}\t1\t{nyu}\t0\tx\tx" for raw, nyu in SCANNET_NYU40.items()]
        (root / "scannetv2-labels.combined.tsv").write_text("\n".join(lines) + "\n")
    return root


# ---- 3D-OVS ----------------------------------------------------------------------------------------


def opencv_to_llff(c2w: np.ndarray) -> np.ndarray:
    """3x4 LLFF [down, right, back | t] from an OpenCV camera-to-world."""
    return np.stack([c2w[:3, 1], c2w[:3, 0], -c2w[:3, 2], c2w[:3, 3]], axis=1)


def write_ovs3d(root: Path, views: SyntheticViews, class_names: list[str], segmented: tuple[int, ...] = (0, 4),
                *, empty_segmentations: bool = False) -> Path:
    """images/<i>.png, poses_bounds.npy, segmentations/classes.txt (unsorted on purpose) and
    segmentations/<view>/<class>.png with 255 where the view's label is that class (class ids index the
    SORTED class list, as the reference reads it)."""
    height, width = views.shape
    rows = []
    for i, image in enumerate(views.images):
        save_rgb(root / "images" / f"{i:03d}.png", image)
        hwf = np.array([[height], [width], [views.K[0, 0]]])
        rows.append(np.concatenate([np.concatenate([opencv_to_llff(views.c2w[i]), hwf], 1).ravel(), [0.5, 10.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    seg = root / "segmentations"
    seg.mkdir(parents=True, exist_ok=True)
    (seg / "classes.txt").write_text("\n".join(reversed(class_names)) + "\n")
    if not empty_segmentations:
        for view in segmented:
            for c, name in enumerate(sorted(class_names)):
                save_uint8(seg / f"{view:02d}" / f"{name}.png", np.where(views.labels[view] == c, 255, 0))
    return root


# ---- LERF-OVS labels -------------------------------------------------------------------------------


def write_lerf_frame(path: Path, name: str, height: int, width: int, objects: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {"height": height, "width": width, "name": name}, "objects": objects}))
    return path
