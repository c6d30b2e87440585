"""Where the pipeline reads its dataset and writes artifacts, metrics and plots."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from econsg.config.base import Section


class PathsParams(Section):
    """Locations, relative to the folder a stage runs in (the repository root for the demo: DVC runs each stage in its
    dvc.yaml's folder), or absolute. dvc.yaml templates its paths from these keys."""

    data: str = Field("data/room", description="Dataset folder read by ingest (the synth stage writes the embedded scene here).")
    artifacts: str = Field("artifacts/room", description="Folder of the scene's Zarr artifacts (<stage>.zarr).")
    metrics: str = Field("metrics", description="Folder of the per-stage metrics JSON files.")
    plots: str = Field("plots", description="Folder of pictures and plot data (audit panels, renders, curves).")
    checkpoints: str = Field("checkpoints/room", description="Folder of resumable training checkpoints (not a DVC output).")

    @field_validator("data", "artifacts", "metrics", "plots", "checkpoints")
    @classmethod
    def _no_home_shorthand(cls, value: str) -> str:
        if not value.strip() or value.strip() == ".":
            raise ValueError(f"{value!r}: expected a folder path, relative to the folder the stage runs in or absolute "
                             "(not that folder itself)")
        if value.startswith("~"):
            raise ValueError(f"{value!r}: '~' is not expanded (DVC reads these paths as written); give the path "
                             "absolute or relative to the folder the stage runs in")
        return value

    def artifact(self, stage: str) -> Path:
        """The Zarr store a stage writes, e.g. artifacts/room/crr.zarr (the scene store is scene.zarr)."""
        name = "scene" if stage == "ingest" else stage
        return Path(self.artifacts) / f"{name}.zarr"

    def checkpoint_folder(self, stage: str) -> Path:
        """Where a stage keeps its resumable training checkpoints, e.g. checkpoints/room/splat."""
        return Path(self.checkpoints) / stage

    def metrics_file(self, stage: str) -> Path:
        """The metrics JSON a stage writes."""
        return Path(self.metrics) / f"{stage}.json"
