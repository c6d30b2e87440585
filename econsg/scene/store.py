"""Read access to scene.zarr for the stages after ingest.

`open_scene` exposes images, depth and cameras only. Ground-truth labels are reachable through
`open_ground_truth`, which only ingest, the synthetic teacher and evaluate may call (a test checks
that crr, fuse, autoencode and splat never do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from econsg.artifacts import open_artifact
from econsg.errors import ArtifactError, NoGroundTruthError


@dataclass(frozen=True)
class SceneViews:
    """Posed views of scene.zarr (no ground truth)."""

    path: Path
    group: zarr.Group
    Ks: np.ndarray  # [V,3,3]
    c2w: np.ndarray  # [V,4,4] OpenCV camera-to-world
    is_train: np.ndarray  # [V] bool
    dataset_views: np.ndarray  # [V] int: each view's position in the whole dataset (training views, then test views)
    names: list[str]
    class_names: list[str]
    width: int
    height: int

    @property
    def num_views(self) -> int:
        return len(self.names)

    @property
    def train_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_train)

    @property
    def test_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.is_train)

    @property
    def has_depth(self) -> bool:
        return "depth" in self.group

    @property
    def median_depth(self) -> float:
        """The median depth at which the training views see the initial point cloud (`econsg.fusion.median_view_depth`,
        taken by ingest before thinning): the scene's scale, in its own units."""
        if "median_depth" not in self.group.attrs:
            raise ArtifactError(f"{self.path}: no median_depth attribute (the scene's scale, which ingest now writes); rerun ingest")
        return float(self.group.attrs["median_depth"])

    def image(self, view: int) -> np.ndarray:
        """[H,W,3] float32 in [0,1]."""
        return self.group["images"][view].astype(np.float32) / 255.0

    def depth(self, view: int) -> np.ndarray | None:
        """[H,W] float32 metres (0 = invalid) or None when the dataset has no depth."""
        return self.group["depth"][view] if self.has_depth else None

    def cameras(self, views, device: str = "cpu"):
        """(viewmats [C,4,4] world-to-camera, Ks [C,3,3]) float32 torch tensors of the given view indices."""
        import torch

        views = np.atleast_1d(np.asarray(views))
        viewmats = torch.from_numpy(np.linalg.inv(self.c2w[views])).float().to(device)
        return viewmats, torch.from_numpy(self.Ks[views]).float().to(device)


def open_scene(path: str | Path) -> SceneViews:
    path = Path(path)
    group = open_artifact(path, "ingest")
    attrs = group.attrs
    return SceneViews(
        path=path,
        group=group,
        Ks=group["Ks"][...],
        c2w=group["c2w"][...],
        is_train=group["is_train"][...].astype(bool),
        dataset_views=group["dataset_view"][...].astype(np.int64),
        names=list(attrs["view_names"]),
        class_names=list(attrs["class_names"]),
        width=int(attrs["width"]),
        height=int(attrs["height"]),
    )


@dataclass(frozen=True)
class GroundTruth:
    """Per-view ground-truth class and instance maps (ingest, teacher and evaluate only)."""

    class_names: list[str]
    group: zarr.Group

    def classes(self, view: int) -> np.ndarray:
        return self.group["gt_class"][view]

    def instances(self, view: int) -> np.ndarray | None:
        """[H,W] int instance ids (0 = none), or None when the dataset has no instance maps (ScanNet, NICE-SLAM...)."""
        return self.group["gt_instance"][view] if "gt_instance" in self.group else None


def open_ground_truth(path: str | Path) -> GroundTruth:
    group = open_artifact(Path(path), "ingest")
    if "gt_class" not in group:
        raise NoGroundTruthError(f"{path}: the scene has no ground-truth class maps (gt_class); this needs a labelled dataset")
    return GroundTruth(class_names=list(group.attrs["class_names"]), group=group)
