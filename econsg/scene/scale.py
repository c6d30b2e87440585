"""Lengths in the scene's unit that may be `auto`: a fraction of the scene's median depth.

A COLMAP, LLFF or nerfstudio reconstruction's unit is whatever it happened to pick. The median depth at which the
training views see the scene's initial point cloud (`econsg.fusion.median_view_depth`, taken by ingest as
scene.zarr's `median_depth`) measures the scene in its own unit, so an `auto` length scales with the scene: scaling it
by s scales each by s. On the demo room (median depth 3.35 m) they come to 0.084 m, 0.021 m and 0.011 m, near fuse's,
ingest's and splat's metric defaults (0.08, 0.02, gsplat's 0.01).
"""

from __future__ import annotations

FUSE_VOXELS_PER_MEDIAN_DEPTH = 40  # fuse.voxel_size: auto
INIT_VOXELS_PER_MEDIAN_DEPTH = 160  # ingest.init_voxel_size: auto
NEAR_PLANES_PER_MEDIAN_DEPTH = 300  # splat.near_plane: auto
SCENE_LENGTH_TOLERANCE = 4.0  # a scene length set more than this factor off `auto`'s draws a warning


def resolve_scene_length(field: str, setting: float | str, median_depth: float, per_median_depth: int, *,
                         warn_if_smaller: bool = True) -> tuple[float, str | None]:
    """The length a `field` setting asks for: a number as given, `auto` median_depth / per_median_depth.
    Second, a warning when a number is more than SCENE_LENGTH_TOLERANCE times off `auto`'s length (only when larger,
    without `warn_if_smaller`): a metric default on a scene in other units (for a voxel, every sample its own voxel
    or a whole room in a handful of voxels; for the near plane, whatever lies near a camera left undrawn)."""
    auto = median_depth / per_median_depth
    if setting == "auto":
        return auto, None
    size = float(setting)
    if size / auto <= SCENE_LENGTH_TOLERANCE and (not warn_if_smaller or auto / size <= SCENE_LENGTH_TOLERANCE):
        return size, None
    factor = f"{size / auto:.2g}x larger" if size > auto else f"{auto / size:.2g}x smaller"
    return size, (f"warning: {field} {size:g} is {factor} than `auto` would take ({auto:.3g}: 1/{per_median_depth} "
                  f"of the median depth, {median_depth:.3g}, at which the training views see the scene); a scene in "
                  f"arbitrary units, as COLMAP's are, wants {field}: auto")
