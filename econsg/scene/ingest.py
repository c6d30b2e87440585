"""Normalise any reader's SceneSource into the arrays of scene.zarr."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from econsg.artifacts import ArtifactWriter
from econsg.errors import EconsgError
from econsg.progress import report, track
from econsg.scene.data import FrameRecord, SceneSource, check_principal_point, select_sparse_views


def downscale_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter an [H,W,C] float image by an integer factor (H and W cropped to multiples)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    cropped = image[: h * factor, : w * factor]
    return cropped.reshape(h, factor, w, factor, *image.shape[2:]).mean(axis=(1, 3))


MIN_IMAGE_SIDE = 6  # splat's SSIM reflect-pads by half its 11-pixel window, which needs more than 5 pixels a side


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """[H,W] -> [H//factor, W//factor, factor**2]: each output pixel's source samples, the centre one first
    (for odd factors the block's centre; for even ones the sample right and below it)."""
    h, w = array.shape[0] // factor, array.shape[1] // factor
    blocks = array[: h * factor, : w * factor].reshape(h, factor, w, factor).swapaxes(1, 2).reshape(h, w, factor * factor)
    centre = (factor // 2) * factor + factor // 2
    return blocks[..., [centre, *(j for j in range(factor * factor) if j != centre)]]


def downscale_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an [H,W] label map by an integer factor: each block's most frequent label, ties to its centre
    sample. Taking one sample per block puts every label half a source pixel off the box-filtered image's
    pixel centre for even factors; the block's majority covers what the shrunk pixel mostly shows."""
    if factor == 1:
        return labels
    blocks = _blocks(labels, factor)
    votes = np.empty(blocks.shape, np.int32)  # one sample's agreement at a time: memory of the map, not factor^2 times
    for j in range(blocks.shape[-1]):
        votes[..., j] = (blocks == blocks[..., j : j + 1]).sum(axis=-1)
    return np.take_along_axis(blocks, votes.argmax(axis=-1)[..., None], axis=-1)[..., 0]


def downscale_depth(depth: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an [H,W] depth map (0 = invalid) by an integer factor: each block's lower median over its valid
    samples, so a block across an occlusion edge keeps a depth of one of its surfaces, not one between them."""
    if factor == 1:
        return depth
    blocks = _blocks(depth, factor)
    valid = blocks > 0
    count = valid.sum(axis=-1)
    ranked = np.sort(np.where(valid, blocks, np.inf), axis=-1)
    median = np.take_along_axis(ranked, (np.maximum(count - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    return np.where(count > 0, median, 0).astype(depth.dtype)


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


def dataset_order(frames: list[FrameRecord], root: Path | str = "dataset") -> list[FrameRecord]:
    """Every view of the dataset at `root`, training views first, then test views, each in the dataset's order."""
    train = [f for f in frames if f.split == "train"]
    test = [f for f in frames if f.split == "test"]
    if not train:
        raise EconsgError(f"{root}: none of its {len(frames)} views is a training view")
    if not test:
        raise EconsgError(f"{root}: none of its {len(frames)} views is a test view; a held-out split is needed for "
                          "evaluation")
    return train + test


def choose_views(ordered: list[FrameRecord], sparse_views: int | None, selection: str = "trajectory",
                 stride: int = 1) -> list[int]:
    """Positions in `dataset_order` of the views to ingest: every `stride`-th training view (all, or the sparse
    subset of them picked by `selection`, see `select_sparse_views`), then every `stride`-th test view. A view
    keeps its position whatever the selection (scene.zarr's `dataset_view`)."""
    num_train = sum(f.split == "train" for f in ordered)  # dataset_order puts them first
    train, test = list(range(0, num_train, stride)), list(range(num_train, len(ordered), stride))
    if sparse_views is not None and sparse_views >= len(train):
        kept = f"the {len(train)} training views ingest.frame_stride {stride} keeps" if stride > 1 else \
            f"the dataset's {num_train} training views"
        report(f"ingest: warning: ingest.sparse_views {sparse_views} is not below {kept}, so every one is kept: "
               "this run is the multi-view setting")
    c2ws = np.stack([ordered[i].c2w for i in train])
    return [train[i] for i in select_sparse_views(c2ws, sparse_views, selection)] + test


PointChunks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
"""The initial cloud in pieces (xyz [P, 3], rgb [P, 3] uint8), one training view's back-projected depth each, or
one piece for a dataset's own point cloud; called once per pass, so only one piece is held at a time."""


def thin_points(chunks: Iterable[tuple[np.ndarray, np.ndarray]], voxel_size: float, max_points: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One point per voxel (the first in chunk order), then a seeded random subset of at most `max_points`. Each
    chunk is thinned as it comes against the voxels already taken, so memory follows the thinned cloud, not the
    back-projected pixels of every view (hundreds of millions on a Replica or ScanNet sequence)."""
    from econsg.fusion import voxel_keys

    taken = np.empty(0, np.int64)  # sorted keys of the voxels holding a point
    kept_xyz, kept_rgb = [np.empty((0, 3), np.float32)], [np.empty((0, 3), np.uint8)]
    for xyz, rgb in chunks:
        keys, first = np.unique(voxel_keys(xyz, voxel_size), return_index=True)
        at = np.searchsorted(taken, keys)
        new = np.ones(len(keys), bool)
        inside = at < len(taken)
        new[inside] = taken[at[inside]] != keys[inside]
        taken = np.insert(taken, at[new], keys[new])
        first = np.sort(first[new])
        kept_xyz.append(xyz[first].astype(np.float32))
        kept_rgb.append(rgb[first])
    points, colors = np.concatenate(kept_xyz), np.concatenate(kept_rgb)
    if len(points) > max_points:
        pick = np.sort(rng.choice(len(points), size=max_points, replace=False))
        points, colors = points[pick], colors[pick]
    return points, colors


def chunks_median_depth(chunks: PointChunks, counts: list[int], Ks: np.ndarray, c2ws: np.ndarray, width: int,
                        height: int) -> float:
    """`econsg.fusion.median_view_depth` of the whole cloud (its chunks of `counts` points), in one pass over the
    chunks that gathers the same even stride through the concatenated cloud that it takes."""
    from econsg.fusion import MEDIAN_DEPTH_SAMPLES, median_view_depth

    stride = max(1, sum(counts) // MEDIAN_DEPTH_SAMPLES)
    starts = np.cumsum([0, *counts[:-1]])
    sample = [xyz[(-start) % stride :: stride] for (xyz, _), start in zip(chunks(), starts)]
    return median_view_depth(np.concatenate(sample), Ks, c2ws, width, height)  # at most 2x the samples: stride 1


MIN_TRACK_VIEWS = 2  # a point of the dataset's cloud starts the run when this many training views observe it


def seen_in_training(source: SceneSource, train_names: set[str]) -> np.ndarray | None:
    """[P] bool: the points of the dataset's cloud that at least MIN_TRACK_VIEWS of the run's training views observe
    (their COLMAP tracks), so that neither a held-out view nor one `sparse_views` or `frame_stride` left out adds
    geometry; None where the tracks name none of the source's views (a cloud without tracks: kept whole)."""
    if source.point_views is None:
        return None
    named = {name for seen in source.point_views for name in seen}
    if not named & {frame.name for frame in source.frames}:
        return None
    return np.array([len(train_names.intersection(seen)) >= MIN_TRACK_VIEWS for seen in source.point_views], dtype=bool)


FAR_FROM_ORIGIN = 1000.0  # a scene whose cameras' mean centre lies this many times their spread away is recentred


def recentring_offset(centres: np.ndarray) -> np.ndarray:
    """[3] the shift ingest subtracts from every camera centre and point: the training cameras' mean centre where it
    lies more than FAR_FROM_ORIGIN times their spread from the origin (a georeferenced model, millions of units out,
    where float32 keeps a quarter unit at best), else 0, leaving the scene where it is. Cameras with no spread (a
    single training view) are recentred on wherever they are: any distance is far from them."""
    mean = centres.mean(axis=0)
    return mean if np.linalg.norm(mean) > FAR_FROM_ORIGIN * camera_spread(centres) else np.zeros(3)


def camera_spread(centres: np.ndarray) -> float:
    """The largest distance of a camera centre [K, 3] from their mean: 0 for one camera."""
    return float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max())


def cloud_chunks(source: SceneSource, frames: list[FrameRecord], train: np.ndarray, depth, images, Ks: np.ndarray,
                 c2ws: np.ndarray, offset: np.ndarray) -> PointChunks:
    """The initial cloud's chunks: the dataset's own point cloud (COLMAP's points, less `offset`) when it has one,
    those the training views observe (`seen_in_training`) where its tracks say, else the depth of each training view
    `train` (indices into `frames`), back-projected from the store being written (`depth`, `images`) on every pass."""
    from econsg.fusion import backproject_depth

    if source.points is not None:
        points = (np.asarray(source.points, np.float64) - offset).astype(np.float32)
        rgb = source.point_rgb if source.point_rgb is not None else np.full_like(points, 128, dtype=np.uint8)
        seen = seen_in_training(source, {frames[v].name for v in train})
        if seen is None and len(frames) < len(source.frames):
            report(f"ingest: warning: the dataset's point cloud has no tracks, so all {len(points):,} of its points "
                   f"start the run, triangulated from every one of its {len(source.frames)} views where this run "
                   f"keeps {len(frames)} (ingest.sparse_views, ingest.frame_stride)")
        elif seen is not None:
            if not seen.any():
                raise EconsgError(f"{source.root}: none of the {len(points):,} points of the dataset's cloud is "
                                  f"observed by {MIN_TRACK_VIEWS} of the {len(train)} training views; keep more views "
                                  "(ingest.sparse_views, ingest.frame_stride)")
            points, rgb = points[seen], rgb[seen]
        return lambda: iter([(points, rgb)])
    if depth is None:
        raise EconsgError(
            f"{source.root}: no depth maps and no point cloud; an initial point cloud is needed (COLMAP points3D or depth)"
        )

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for v in train:
            xyz, pixel = backproject_depth(depth[v], Ks[v], c2ws[v])
            yield xyz, images[v].reshape(-1, 3)[pixel]

    return chunks


def all_or_none(frames: list[FrameRecord], loader: str, what: str) -> bool:
    """Whether every view has a `what` (its FrameRecord's `loader`); refused when only some have one, which would
    otherwise drop it for all of them without a word."""
    missing = [frame.source for frame in frames if getattr(frame, loader) is None]
    if missing and len(missing) < len(frames):
        shown = ", ".join(str(path) for path in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise EconsgError(f"{shown}: no {what}, while {len(frames) - len(missing)} of the {len(frames)} views have one; "
                          f"expected a {what} for every view or for none (restore the missing files, or remove the others)")
    return not missing


def labels_or_none(frames: list[FrameRecord], loader: str, what: str) -> bool:
    """Whether views have a `what` (ground truth): every view, or only every held-out view (3D-OVS segments its
    test views alone; training views then read as unlabelled, -1). Refused, by name, when some other subset has
    one, which would otherwise score a partial or shifted ground truth without a word."""
    test = [frame for frame in frames if frame.split == "test"]
    if all(getattr(frame, loader) is None for frame in frames if frame.split == "train") and any(
        getattr(frame, loader) is not None for frame in test
    ):
        return all_or_none(test, loader, f"{what} on the held-out views")
    return all_or_none(frames, loader, what)


def write_scene(
    source: SceneSource,
    out_path: Path,
    *,
    params: dict,
    downscale: int,
    sparse_views: int | None,
    sparse_selection: str = "trajectory",
    frame_stride: int = 1,
    max_init_points: int,
    init_voxel_size: float | str,
    rng: np.random.Generator,
) -> Path:
    """Load every chosen frame, check it, and write scene.zarr atomically. `init_voxel_size` thins the initial
    point cloud: a size in the scene's units, or 'auto' (`econsg.scene.scale.resolve_scene_length`)."""
    from econsg.scene.scale import INIT_VOXELS_PER_MEDIAN_DEPTH, resolve_scene_length

    check_unique_names(source.frames)
    ordered = dataset_order(source.frames, source.root)
    chosen = choose_views(ordered, sparse_views, sparse_selection, frame_stride)
    frames = [ordered[i] for i in chosen]
    first = frames[0]
    height, width = first.height // downscale, first.width // downscale
    if min(height, width) < MIN_IMAGE_SIDE:
        raise EconsgError(f"ingest.downscale: {downscale} leaves {width}x{height} images; expected at least "
                          f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (splat's SSIM window)")
    for frame in frames:
        check_principal_point(frame.K, frame.width, frame.height, str(frame.source))
        if (frame.width, frame.height) != (first.width, first.height):
            raise EconsgError(
                f"{frame.source}: image is {frame.width}x{frame.height}, the first view is {first.width}x{first.height}; "
                "all views must share one size"
            )
    has_depth = all_or_none(frames, "load_depth", "depth map")
    has_gt = labels_or_none(frames, "load_classes", "label map") and bool(source.class_names)
    has_instances = labels_or_none(frames, "load_instances", "instance map")
    num = len(frames)
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
                d = frame.load_depth()
                if not np.all(np.isfinite(d)) or (d < 0).any():
                    raise EconsgError(f"{frame.source}: its depth map has negative or non-finite values")
                depth[v] = downscale_depth(d, downscale)[:height, :width]
            if gt_class is not None and frame.load_classes is not None:
                gt_class[v] = downscale_labels(frame.load_classes(), downscale)[:height, :width]
            if gt_instance is not None and frame.load_instances is not None:
                gt_instance[v] = downscale_labels(frame.load_instances(), downscale)[:height, :width]
        train = np.array([f.split == "train" for f in frames])
        offset = recentring_offset(c2ws[train][:, :3, 3])
        c2ws[:, :3, 3] -= offset
        chunks = cloud_chunks(source, frames, np.flatnonzero(train), depth, images, Ks, c2ws, offset)
        counts = [len(xyz) for xyz, _ in chunks()]
        if not sum(counts):
            raise EconsgError(f"{source.root}: the initial point cloud is empty (all depth invalid?)")
        median_depth = chunks_median_depth(chunks, counts, Ks[train], c2ws[train], width, height)
        voxel_size, warning = resolve_scene_length("ingest.init_voxel_size", init_voxel_size, median_depth,
                                                   INIT_VOXELS_PER_MEDIAN_DEPTH)
        if warning:
            report(f"ingest: {warning}")
        pieces = 1 if source.points is not None else int(train.sum())
        cloud, cloud_rgb = thin_points(track(chunks(), "ingest: initial point cloud", pieces), voxel_size, max_init_points, rng)
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
                "median_depth": median_depth,
                "init_voxel_size": voxel_size,
            }
        )
        out.run["source_root"] = str(source.root)  # where it was read: a record, not content (another path to the
        # same data would otherwise change every store's hash and rerun the whole chain)
        if offset.any():  # the stores and exports lie in the recentred frame: add it back for the dataset's own
            out.attrs["origin_offset"] = offset.tolist()
            report(f"ingest: the training cameras lie {np.linalg.norm(offset):.4g} units from the origin, over "
                   f"{FAR_FROM_ORIGIN:g} times their spread ({camera_spread(c2ws[train][:, :3, 3]):.4g}): "
                   f"recentred by {np.round(offset, 3).tolist()} (scene.zarr's origin_offset)")
    return out_path
