"""Open a finished run's artifacts by params (what the CLI's audit, query, edit and export need)."""

from __future__ import annotations

from econsg.artifacts import open_artifact
from econsg.config import Params

WEIGHT_PREFIX = "weights."


def load_autoencoder(group):
    """The LatentAutoencoder stored as arrays in autoencode.zarr."""
    from econsg.autoencoder import model_from_arrays

    arrays = {name[len(WEIGHT_PREFIX):]: group[name][...] for name in group.array_keys() if name.startswith(WEIGHT_PREFIX)}
    return model_from_arrays(arrays)


def open_stage(params: Params, stage: str):
    return open_artifact(params.paths.artifact(stage), stage)
