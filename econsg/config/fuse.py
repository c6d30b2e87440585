"""Params of the fuse stage: refined pixels lifted into 3D and fused on a voxel grid."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from econsg.config.base import SceneLength, Section


class FuseParams(Section):
    """The 3D contextual space (METHOD.md section 3)."""

    voxel_size: SceneLength = Field(
        0.08,
        description="Voxel edge in the scene's units (metres on the demo, Replica, ScanNet). 0.08 suits the 6 m demo room "
        "(about 23k points at 256x192, 21k at 128x96); the authors use 0.02 on Replica. 'auto' = the scene's median "
        "depth (ingest's median_depth) / 40, 0.084 on the demo: for scenes in arbitrary units, as COLMAP's are. fuse "
        "warns when a number is more than 4x off what 'auto' would take.",
    )
    min_views: int = Field(1, ge=1, description="Keep only voxels seen by at least this many distinct training views.")
    source: Literal["auto", "depth", "points"] = Field(
        "auto",
        description="Where 3D comes from: 'depth' back-projects depth maps, 'points' z-buffers the scene's point "
        "cloud into each view, 'auto' uses depth when the scene has depth maps (ingest keeps them for every view or for "
        "none) and the point cloud otherwise.",
    )
    depth_tolerance: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="'points' source: a point counts as visible when its depth is within this relative margin of "
        "the nearest point on its pixel.",
    )
    max_depth: float | None = Field(
        None, gt=0, description="Skip samples deeper than this, in scene units (metres on the demo, Replica and ScanNet; far, "
        "noisy depth); null = no limit."
    )
    use_confidence_weights: bool = Field(
        True, description="Weight features and label votes by each pixel's confidence (extract's k: max_c p_c, or the label's "
        "cosine under extract.confidence: cosine; of its raw label even where crr relabelled it: 0.5 % of the demo's "
        "labelled pixels); false = every pixel weighs 1."
    )
    features_from_ignored: bool = Field(
        True,
        description="Fuse the features of pixels crr marked ignore too (weighted by their confidence): they carry "
        "what the training vocabulary cannot name, e.g. open-set classes, and cover surfaces no labelled pixel saw. "
        "Labels still come from labelled pixels only. false = features of labelled pixels only.",
    )
    min_labelled_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A fused point keeps its histogram label only if at least this fraction of the samples that hit "
        "its voxel carried a label; below it the point is ignore, for the autoencoder's CE terms too. 0 = any "
        "labelled sample names the point.",
    )
    max_points: int | None = Field(
        None,
        ge=1,
        description="Cap on fused points: a random subsample drawn with the run's seed, for huge scenes; null = all.",
    )
