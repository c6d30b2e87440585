"""Open a finished run's artifacts by params (what the CLI's audit, query, edit and export need)."""

from __future__ import annotations

from pathlib import Path

from econsg.artifacts import ARTIFACT_SCHEMAS, open_artifact, read_provenance
from econsg.config import Params
from econsg.errors import ArtifactError

WEIGHT_PREFIX = "weights."


def load_autoencoder(group):
    """The LatentAutoencoder stored as arrays in autoencode.zarr."""
    from econsg.autoencoder import model_from_arrays

    arrays = {name[len(WEIGHT_PREFIX):]: group[name][...] for name in group.array_keys() if name.startswith(WEIGHT_PREFIX)}
    return model_from_arrays(arrays)


def open_stage(params: Params, stage: str):
    """A stage's store under `params`' paths, refused when an input it was built from has been rewritten since: a
    stage run by hand (`econsg run`) after its upstream's rerun would otherwise mix the two."""
    path = params.paths.artifact(stage)
    group = open_artifact(path, stage)
    check_inputs_current(params, path)
    return group


def check_inputs_current(params: Params, path: Path) -> None:
    """Compare the content hash each input had when `path` was written (its provenance) with the input's now, for
    the inputs that are stores of these params' artifacts folder (matched by name: scene.zarr, crr.zarr, ...)."""
    provenance = read_provenance(path)
    stage_of = {params.paths.artifact(stage).name: stage for stage in ARTIFACT_SCHEMAS}
    for recorded, digest in provenance.inputs.items():
        stage = stage_of.get(Path(recorded).name)
        current = params.paths.artifact(stage) if stage else None
        if current is None or not (current / "zarr.json").is_file():
            continue
        if read_provenance(current).content_hash != digest:
            raise ArtifactError(f"{path}: built from another {current.name} than the one there now ({stage} has run "
                                f"since); rerun the {provenance.stage} stage and what follows (`dvc repro` reruns "
                                "whatever is stale)")
