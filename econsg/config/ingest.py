"""Params of the ingest stage: which reader, image scale, which views train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from econsg.config.base import SceneLength, Section


class IngestParams(Section):
    """Reads a dataset folder (any supported layout) into scene.zarr."""

    format: Literal["auto", "blender", "nerfstudio", "colmap", "replica_nice", "replica_semantic", "scannet", "ovs3d"] = Field(
        "auto", description="Dataset layout ('nerfstudio' is another name of 'blender': one reader takes both kinds of "
        "transforms.json); 'auto' detects it from the files present."
    )
    downscale: int = Field(
        1, ge=1, le=16, description="Integer factor to shrink images (box filter), intrinsics, depth (each block's lower "
                                    "median of valid samples) and labels (each block's majority) by."
    )
    frame_stride: int = Field(
        1, ge=1, description="Keep every k-th view of each split (training and held-out, in the dataset's order), "
                             "before sparse_views: for long sequences such as ScanNet's 1000-6000 frames."
    )
    sparse_views: int | None = Field(
        None, ge=1, description="Sparse-view setting: keep this many training views (picked by sparse_selection); "
                                "null keeps all (multi-view)."
    )
    sparse_selection: Literal["trajectory", "spread"] = Field(
        "trajectory",
        description="How sparse_views picks its views: 'trajectory' = evenly spaced in the dataset's order (the usual "
        "protocol); 'spread' = farthest apart in camera centre and viewing direction, for a trajectory that passes "
        "a place more than once (the demo's double loop bunches below about six views by order).",
    )
    max_init_points: int = Field(
        100_000, ge=100, description="Cap on the initial point cloud (back-projected depth or the dataset's points), subsampled with the seed."
    )
    init_voxel_size: SceneLength = Field(
        0.02,
        description="Voxel size, in the scene's units (metres on the demo), used to thin the initial point cloud "
        "(back-projected depth or the dataset's points). 'auto' = the median depth at which the training views see "
        "the cloud / 160, 0.021 on the demo: for scenes in arbitrary units, as COLMAP's are. ingest warns when a "
        "number is more than 4x off what 'auto' would take.",
    )
