"""fuse: lift the refined pixels of every training view into 3D and fuse them on a voxel grid -> fuse.zarr.

A second pass over the training views scores each pixel's crr decision against its voxel's samples from every view
(`VoxelFeatureFusion.agreement`): an audit picture of where the views contradict crr, and the per-pixel weights of
splat's 2D terms with `splat.pixel_weights: agreement`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from econsg.artifacts import ArtifactWriter, write_json_atomic
from econsg.config import Params
from econsg.errors import EconsgError
from econsg.evaluation import scene_has_labels, score_fused_points
from econsg.features.base import PaintedMasks, interpolated_feature_norms, normalize_rows
from econsg.fusion import VoxelFeatureFusion, backproject_depth, bilinear_feature_index, points_seen_in_view
from econsg.pipeline import stage_main, stage_params
from econsg.progress import report, track
from econsg.scene.scale import FUSE_VOXELS_PER_MEDIAN_DEPTH, resolve_scene_length
from econsg.scene.store import open_scene
from econsg.workspace import open_stage


VIEWS_PER_READ = 8  # views read per Zarr call: fewer round trips, memory still bounded


def contiguous_blocks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """Split sorted view indices into runs of consecutive views, at most `size` long."""
    runs = np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1)
    return [run[i : i + size] for run in runs for i in range(0, len(run), size)]


def read_views(arrays: dict, block: np.ndarray) -> dict[str, np.ndarray]:
    """The views of a run of consecutive indices from every array, one slice (one Zarr call) per array."""
    views = slice(int(block[0]), int(block[-1]) + 1)
    return {name: array[views] for name, array in arrays.items()}


def view_samples(scene, v: int, source: str, depth_tolerance: float, max_depth: float, depth: np.ndarray | None = None,
                 points: np.ndarray | None = None):
    """(xyz [P,3], pixel index [P]) of view v: back-projected depth, or those of the scene's `points` (read once by
    the caller) seen in the view."""
    if source == "depth":
        depth = scene.depth(v) if depth is None else depth
        return backproject_depth(depth, scene.Ks[v], scene.c2w[v], max_depth=max_depth)
    return points_seen_in_view(points, scene.Ks[v], scene.c2w[v], scene.width, scene.height, depth_tolerance, max_depth)


def refined_feature_rows(grid: np.ndarray, feature_source: np.ndarray, mask_class_features: np.ndarray,
                         bilinear_taps: tuple[np.ndarray, np.ndarray], painted: PaintedMasks | None = None):
    """crr's refined features as table rows + per-pixel taps, without an [H,W,D] cube.

    Rows are the patch grid followed by the mask-class means (and the `painted` masks' features); a pixel keeping
    its own feature mixes four grid rows bilinearly (`bilinear_taps` from `bilinear_feature_index`), renormalised to
    unit length as crr and autoencode take a pixel's own feature, or takes its painted mask's row; a pixel refined
    by a mask takes its mask-class row.
    """
    h, w, D = grid.shape
    rows = [grid.reshape(-1, D), mask_class_features] + ([normalize_rows(painted.features)] if painted is not None else [])
    table = np.concatenate(rows).astype(np.float32)
    index, mix = bilinear_taps[0].copy(), bilinear_taps[1].copy()
    source = feature_source.reshape(-1)
    refined = source >= 0
    if refined.any() and int(source.max()) >= len(mask_class_features):
        raise EconsgError(f"feature_source: rows up to {int(source.max())}, expected rows of the view's "
                          f"{len(mask_class_features)} mask-class features")
    own = ~refined
    norms = interpolated_feature_norms(grid, *feature_source.shape).reshape(-1)
    mix[own] = mix[own] / np.maximum(norms[own], 1e-12)[:, None].astype(mix.dtype)
    index[refined] = (h * w + source[refined])[:, None]
    single = refined
    if painted is not None:
        ids = painted.ids.reshape(-1).astype(np.int64)  # table rows beyond int16's range on a fine grid
        own_painted = own & (ids >= 0)
        index[own_painted] = (h * w + len(mask_class_features) + ids[own_painted])[:, None]
        single = refined | own_painted
    mix[single] = np.array([1.0, 0.0, 0.0, 0.0], mix.dtype)
    return table, index, mix


def run(params: Params) -> None:
    cfg = params.fuse
    scene = open_scene(params.paths.artifact("ingest"))
    ex = open_stage(params, "extract")
    cr = open_stage(params, "crr")
    source = cfg.source if cfg.source != "auto" else ("depth" if scene.has_depth else "points")
    if source == "depth" and not scene.has_depth:
        raise EconsgError("fuse.source: 'depth' but the scene has no depth maps; use 'points' or 'auto'")
    H, W = scene.height, scene.width
    vocabulary = list(ex.attrs["vocabulary"])
    D = ex["text_embeddings"].shape[1]
    median_depth = scene.median_depth
    voxel_size, warning = resolve_scene_length("fuse.voxel_size", cfg.voxel_size, median_depth, FUSE_VOXELS_PER_MEDIAN_DEPTH)
    if warning:
        report(f"fuse: {warning}")
    fusion = VoxelFeatureFusion(voxel_size, D, len(vocabulary), features_from_ignored=cfg.features_from_ignored)
    pixels = 0
    start = time.perf_counter()
    taps = bilinear_feature_index(*ex["features"].shape[1:3], H, W)
    inputs = {"grids": ex["features"], "sources": cr["feature_source"], "tables": cr["mask_class_features"],
              "labels": cr["refined_labels"], "confidence": ex["confidence"], "images": scene.group["images"]}
    if source == "depth":
        inputs["depths"] = scene.group["depth"]
    if "mask_ids" in ex:  # the mask-crop backend's table and id map
        inputs.update(mask_ids=ex["mask_ids"], mask_features=ex["mask_features"])
    points = scene.group["points"][...] if source == "points" else None
    blocks = contiguous_blocks(scene.train_indices, VIEWS_PER_READ)
    with ThreadPoolExecutor(max_workers=1) as reader:  # the next block is read while this one is fused
        pending = reader.submit(read_views, inputs, blocks[0]) if blocks else None
        for i, block in enumerate(track(blocks, f"fuse: back-projecting training views, {VIEWS_PER_READ} a block ({source})")):
            data = pending.result()
            pending = reader.submit(read_views, inputs, blocks[i + 1]) if i + 1 < len(blocks) else None
            parts, offset = [], 0  # the block's views go in as one add call: per-sample view ids, stacked tables
            for j, v in enumerate(block):
                depth = data["depths"][j] if source == "depth" else None
                xyz, pixel = view_samples(scene, v, source, cfg.depth_tolerance, cfg.max_depth, depth, points)
                try:
                    painted = PaintedMasks(data["mask_ids"][j], data["mask_features"][j]) if "mask_ids" in data else None
                    table, index, mix = refined_feature_rows(data["grids"][j], data["sources"][j], data["tables"][j], taps,
                                                             painted)
                except EconsgError as error:
                    raise EconsgError(f"{params.paths.artifact('crr')}: view {v} ({scene.names[v]}): {error}; "
                                      "rerun extract and crr") from None
                weights = (data["confidence"][j].reshape(-1)[pixel] if cfg.use_confidence_weights
                           else np.ones(len(pixel), np.float32))
                parts.append((xyz, table, data["labels"][j].reshape(-1)[pixel], weights,
                              data["images"][j].reshape(-1, 3)[pixel].astype(np.float32) / 255.0, np.full(len(pixel), v),
                              index[pixel] + offset, mix[pixel]))  # fmt: skip
                offset += len(table)
            xyz, table, labels, weights, rgb, view_ids, index, mix = (np.concatenate(column) for column in zip(*parts))
            fusion.add(xyz, table, labels, weights, rgb, view_id=view_ids, feature_index=index, feature_mix=mix)
            pixels += len(xyz)
    fused = fusion.finalize(min_views=cfg.min_views, min_labelled_share=cfg.min_labelled_share)
    seconds = time.perf_counter() - start
    if len(fused.xyz) == 0:
        raise EconsgError("fuse: no 3D points survived fusion (check depth maps, fuse.min_views and fuse.max_depth)")
    keep = np.arange(len(fused.xyz))
    if cfg.max_points is not None and len(keep) > cfg.max_points:
        keep = np.sort(np.random.default_rng([params.seed, 4]).choice(keep, cfg.max_points, replace=False))
    with ArtifactWriter(
        params.paths.artifact("fuse"),
        stage="fuse",
        params=stage_params(params, "fuse"),
        inputs=[scene.group, ex, cr],
    ) as out:
        out.create_array("xyz", (len(keep), 3), "float32", data=fused.xyz[keep].astype(np.float32))
        out.create_array("rgb", (len(keep), 3), "uint8", data=np.clip(np.round(fused.rgb[keep] * 255), 0, 255).astype(np.uint8))
        out.create_array("feature", (len(keep), D), "float16", data=fused.feature[keep].astype(np.float16))
        out.create_array("label", (len(keep),), "int16", data=fused.label[keep])
        out.create_array("vote_share", (len(keep),), "float32", data=fused.vote_share[keep])
        out.create_array("num_views", (len(keep),), "int32", data=fused.num_views[keep])
        out.create_array("labelled_share", (len(keep),), "float32", data=fused.labelled_share[keep])
        agreement = out.create_array("agreement", (scene.num_views, H, W), "float16", per_view=True, fill_value=np.nan)
        agreement_means = write_agreement(agreement, fusion, scene, {k: inputs[k] for k in ("labels", "depths") if k in inputs},
                                          source, cfg, points)
        out.attrs.update({"vocabulary": vocabulary, "voxel_size": voxel_size, "source": source})
        metrics = {
            "points": int(len(keep)),
            "voxel_size": voxel_size,
            "median_depth": float(f"{median_depth:.4g}"),
            "labelled_points": int((fused.label[keep] >= 0).sum()),
            "mean_views_per_point": float(fused.num_views[keep].mean()),
            "backprojected_pixels": int(pixels),
            "seconds": round(seconds, 3),
            "pixels_per_second": round(pixels / max(seconds, 1e-9)),
            **agreement_means,
        }
        if source == "depth":  # scored before the store replaces the previous fuse.zarr; the points it keeps
            metrics.update(
                score_fused_points(
                    scene.path,
                    views=scene.train_indices,
                    samples=lambda v: view_samples(scene, v, source, cfg.depth_tolerance, cfg.max_depth),
                    raw=lambda v: ex["labels"][v],
                    fused_keys=fused.voxel_key[keep],
                    fused_label=fused.label[keep],
                    voxel_size=voxel_size,
                    vocabulary=vocabulary,
                )
            )
        else:  # no depth to find each pixel's point by: the point scores are not measured, with or without labels
            metrics["has_ground_truth"] = scene_has_labels(scene.path)
    write_json_atomic(params.paths.metrics_file("fuse"), metrics)
    report(fused_summary(fusion.num_voxels, len(fused.xyz), metrics["points"], metrics["labelled_points"], cfg.min_views))


def write_agreement(out, fusion: VoxelFeatureFusion, scene, inputs: dict, source: str, cfg,
                    points: np.ndarray | None) -> dict[str, float]:
    """Write every training view's [H, W] multi-view agreement into `out` (NaN where no 3D sample fell); returns the
    mean agreement of the labelled and of the ignored samples (`agreement_labelled`, `agreement_ignored`).

    The views' samples are lifted again rather than kept from the fusing pass, so memory stays bounded by the voxels."""
    sums = np.zeros((2, 2))  # [labelled, ignored] x [sum, count]
    for block in track(contiguous_blocks(scene.train_indices, VIEWS_PER_READ), "fuse: multi-view agreement of each pixel"):
        data = read_views(inputs, block)
        for j, v in enumerate(block):
            depth = data["depths"][j] if source == "depth" else None
            xyz, pixel = view_samples(scene, v, source, cfg.depth_tolerance, cfg.max_depth, depth, points)
            labels = data["labels"][j].reshape(-1)[pixel]
            score = fusion.agreement(xyz, labels)
            view = np.full(scene.height * scene.width, np.nan, np.float32)
            view[pixel] = score
            out[v] = view.reshape(scene.height, scene.width)
            for k, group in enumerate((labels >= 0, labels < 0)):
                sums[k] += (score[group].sum(), group.sum())
    means = sums[:, 0] / np.maximum(sums[:, 1], 1)
    return {"agreement_labelled": round(float(means[0]), 4), "agreement_ignored": round(float(means[1]), 4)}


def fused_summary(occupied: int, fused: int, kept: int, labelled: int, min_views: int) -> str:
    """fuse's outcome in one line: `occupied` voxels, `fused` of them kept, `kept` after fuse.max_points; a warning
    when fuse.min_views (with featureless voxels) dropped most of them, since splat starts from one Gaussian per point."""
    line = f"fuse: {kept:,} points ({labelled:,} labelled) from {occupied:,} occupied voxels"
    if kept < fused:
        line += f" (fuse.max_points kept {kept:,} of {fused:,})"
    if fused < 0.5 * occupied:
        line += (f"; warning: fuse.min_views={min_views} and featureless voxels dropped {1 - fused / occupied:.0%} of the "
                 "voxels, and splat starts from one Gaussian per point")
    return line


if __name__ == "__main__":
    stage_main("fuse")
