"""Normalise any reader's SceneSource into the arrays of scene.zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from econsg.artifacts import ArtifactWriter
from econsg.errors import EconsgError
from econsg.progress import report, track
from econsg.scene.data import FrameRecord, SceneSource, select_sparse_views


def downscale_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter an [H,W,C] float image by an integer factor (H and W cropped to multiples)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    cropped = image[: h * factor, : w * factor]
    return cropped.reshape(h, factor, w, factor, *image.shape[2:]).mean(axis=(1, 3))


def downscale_nearest(array: np.ndarray, factor: int) -> np.ndarray:
    """Keep the centre sample of every factor x factor block (labels, depth)."""
    if factor == 1:
        return array
    h, w = array.shape[0] // factor, array.shape[1] // factor
    return array[factor // 2 : h * factor : factor, factor // 2 : w * factor : factor]


def scale_intrinsics(K: np.ndarray, factor: int) -> np.ndarray:
    """Intrinsics of an image shrunk by `factor` (pixel centres at +0.5 stay consistent)."""
    scaled = K.copy()
    scaled[:2] /= factor
    return scaled


def check_unique_names(frames: list[FrameRecord]) -> None:
    """Refuse two views of one name: evaluate keys its per-view scores by name, so one would hide the other."""
    first: dict[str, Path] = {}
    for frame in frames:
        if frame.name in first:
            raise EconsgError(f"{frame.source}: its view name {frame.name!r} is also {first[frame.name]}'s; expected "
                              "unique view names")
        first[frame.name] = frame.source


def dataset_order(frames: list[FrameRecord]) -> list[FrameRecord]:
    """Every view of the dataset, training views first, then test views, each in the dataset's order."""
    train = [f for f in frames if f.split == "train"]
    test = [f for f in frames if f.split == "test"]
    if not train:
        raise EconsgError("dataset: no training views found")
    if not test:
        raise EconsgError("dataset: no test views found; a held-out split is needed for evaluation")
    return train + test


def choose_views(ordered: list[FrameRecord], sparse_views: int | None) -> list[int]:
    """Positions in `dataset_order` of the views to ingest: the training views (all, or the sparse subset),
    then every test view. A view keeps its position whatever the selection (scene.zarr's `dataset_view`)."""
    num_train = sum(f.split == "train" for f in ordered)  # dataset_order puts them first
    return select_sparse_views(list(range(num_train)), sparse_views) + list(range(num_train, len(ordered)))


def thin_points(points: np.ndarray, colors: np.ndarray, voxel_size: float, max_points: int, rng: np.random.Generator):
    """One point per voxel, then a seeded random subset of at most `max_points`."""
    from econsg.fusion import voxel_keys

    _, first = np.unique(voxel_keys(points, voxel_size), return_index=True)
    first.sort()
    if len(first) > max_points:
        first = np.sort(rng.choice(first, size=max_points, replace=False))
    return points[first].astype(np.float32), colors[first]


def write_scene(
    source: SceneSource,
    out_path: Path,
    *,
    params: dict,
    downscale: int,
    sparse_views: int | None,
    max_init_points: int,
    init_voxel_size: float | str,
    rng: np.random.Generator,
) -> Path:
    """Load every chosen frame, check it, and write scene.zarr atomically. `init_voxel_size` thins the initial
    point cloud: a size in the scene's units, or 'auto' (`econsg.fusion.resolve_voxel_size`)."""
    from econsg.fusion import INIT_VOXELS_PER_MEDIAN_DEPTH, backproject_depth, median_view_depth, resolve_voxel_size

    check_unique_names(source.frames)
    ordered = dataset_order(source.frames)
    chosen = choose_views(ordered, sparse_views)
    frames = [ordered[i] for i in chosen]
    first = frames[0]
    height, width = first.height // downscale, first.width // downscale
    if height < 4 or width < 4:
        raise EconsgError(f"ingest.downscale: {downscale} leaves {width}x{height} images; expected at least 4x4")
    for frame in frames:
        if (frame.width, frame.height) != (first.width, first.height):
            raise EconsgError(
                f"{frame.source}: image is {frame.width}x{frame.height}, the first view is {first.width}x{first.height}; "
                "all views must share one size"
            )
    has_depth = all(f.load_depth is not None for f in frames)
    has_gt = all(f.load_classes is not None for f in frames) and bool(source.class_names)
    has_instances = all(f.load_instances is not None for f in frames)
    num = len(frames)
    points: list[np.ndarray] = []
    colors: list[np.ndarray] = []
    with ArtifactWriter(out_path, stage="ingest", params=params) as out:
        images = out.create_array("images", (num, height, width, 3), "uint8", per_view=True)
        depth = out.create_array("depth", (num, height, width), "float32", per_view=True) if has_depth else None
        gt_class = out.create_array("gt_class", (num, height, width), "int16", per_view=True, fill_value=-1) if has_gt else None
        gt_instance = out.create_array("gt_instance", (num, height, width), "int32", per_view=True) if has_gt and has_instances else None
        Ks = np.zeros((num, 3, 3))
        c2ws = np.zeros((num, 4, 4))
        for v, frame in enumerate(track(frames, "ingest: reading views")):
            image = frame.load_image()
            if image.shape[:2] != (frame.height, frame.width):
                raise EconsgError(f"{frame.source}: image is {image.shape[1]}x{image.shape[0]}, the transforms say {frame.width}x{frame.height}")
            image = downscale_image(image, downscale)[:height, :width]
            images[v] = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
            Ks[v] = scale_intrinsics(frame.K, downscale)
            c2ws[v] = frame.c2w
            if depth is not None:
                d = downscale_nearest(frame.load_depth(), downscale)[:height, :width]
                if not np.all(np.isfinite(d)) or (d < 0).any():
                    raise EconsgError(f"{frame.source}: its depth map has negative or non-finite values")
                depth[v] = d
                if frame.split == "train" and source.points is None:
                    xyz, pixel = backproject_depth(d, Ks[v], c2ws[v])
                    points.append(xyz)
                    colors.append(images[v].reshape(-1, 3)[pixel])
            if gt_class is not None:
                gt_class[v] = downscale_nearest(frame.load_classes(), downscale)[:height, :width]
            if gt_instance is not None:
                gt_instance[v] = downscale_nearest(frame.load_instances(), downscale)[:height, :width]
        if source.points is not None:
            cloud = np.asarray(source.points, np.float32)
            cloud_rgb = source.point_rgb if source.point_rgb is not None else np.full_like(cloud, 128, dtype=np.uint8)
        elif points:
            cloud, cloud_rgb = np.concatenate(points), np.concatenate(colors)
        else:
            raise EconsgError(
                f"{source.root}: no depth maps and no point cloud; an initial point cloud is needed (COLMAP points3D or depth)"
            )
        if len(cloud) == 0:
            raise EconsgError(f"{source.root}: the initial point cloud is empty (all depth invalid?)")
        train = np.array([f.split == "train" for f in frames])
        median_depth = median_view_depth(cloud, Ks[train], c2ws[train], width, height)
        voxel_size, warning = resolve_voxel_size("ingest.init_voxel_size", init_voxel_size, median_depth,
                                                 INIT_VOXELS_PER_MEDIAN_DEPTH)
        if warning:
            report(f"ingest: {warning}")
        cloud, cloud_rgb = thin_points(cloud, cloud_rgb, voxel_size, max_init_points, rng)
        out.create_array("Ks", Ks.shape, "float64", data=Ks)
        out.create_array("c2w", c2ws.shape, "float64", data=c2ws)
        out.create_array("is_train", (num,), "bool", data=train)
        out.create_array("dataset_view", (num,), "int32", data=np.array(chosen, dtype=np.int32))
        out.create_array("points", cloud.shape, "float32", data=cloud)
        out.create_array("point_rgb", cloud_rgb.shape, "uint8", data=cloud_rgb)
        out.attrs.update(
            {
                "view_names": [f.name for f in frames],
                "class_names": list(source.class_names),
                "width": width,
                "height": height,
                "source_format": source.format,
                "source_root": str(source.root),
                "median_depth": median_depth,
                "init_voxel_size": voxel_size,
            }
        )
    return out_path
