"""Open a finished run's artifacts by params (what the CLI's audit, query, edit and export need)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from econsg.artifacts import ARTIFACT_SCHEMAS, open_artifact, read_provenance
from econsg.config import Params
from econsg.errors import ArtifactError, EconsgError

WEIGHT_PREFIX = "weights."


def load_autoencoder(group):
    """The LatentAutoencoder stored as arrays in autoencode.zarr; a store whose weights do not make one is refused
    naming it."""
    from econsg.autoencoder import model_from_arrays

    arrays = {name[len(WEIGHT_PREFIX):]: group[name][...] for name in group.array_keys() if name.startswith(WEIGHT_PREFIX)}
    try:
        return model_from_arrays(arrays)
    except EconsgError as error:
        raise ArtifactError(f"{Path(group.store.root)}: its {WEIGHT_PREFIX}* {error}; rerun autoencode") from None


def open_stage(params: Params, stage: str):
    """A stage's store under `params`' paths, refused when an input it was built from has been rewritten since: a
    stage run by hand (`econsg run`) after its upstream's rerun would otherwise mix the two."""
    path = params.paths.artifact(stage)
    group = open_artifact(path, stage)
    check_inputs_current(params, path)
    return group


def stale_input(params: Params, path: Path) -> tuple[str, Path] | None:
    """(stage, store) of the first input of the store at `path` rewritten since `path` was written: the content hash
    each input had then (its provenance) against the input's now, for the inputs that are stores of these params'
    artifacts folder (matched by name: scene.zarr, crr.zarr, ...); None when every one is as it was."""
    stage_of = {params.paths.artifact(stage).name: stage for stage in ARTIFACT_SCHEMAS}
    for recorded, digest in read_provenance(path).inputs.items():
        stage = stage_of.get(Path(recorded).name)
        current = params.paths.artifact(stage) if stage else None
        if current is None or not (current / "zarr.json").is_file():
            continue
        if read_provenance(current).content_hash != digest:
            return stage, current
    return None


def check_inputs_current(params: Params, path: Path) -> None:
    """Refuse the store at `path` when an input has been rewritten since, naming the earliest stage to rerun (the
    first whose store is stale, which can lie upstream of `path`'s own)."""
    stale = stale_input(params, path)
    if stale is None:
        return
    stage, current = stale
    own = read_provenance(path).stage
    order = list(ARTIFACT_SCHEMAS)
    upstream = order[: order.index(own)] if own in order else []
    earliest = next((s for s in upstream if (params.paths.artifact(s) / "zarr.json").is_file()
                     and stale_input(params, params.paths.artifact(s))), own)
    raise ArtifactError(f"{path}: built from another {current.name} than the one there now ({stage} has run since); "
                        f"rerun the {earliest} stage and what follows (`dvc repro` reruns whatever is stale)")


TEXT_SPACE_FIELDS = {
    "synthetic": ("backend", "feature_dim", "templates"),
    "openclip_sam": ("backend", "templates", "openclip_sam.model_name", "openclip_sam.pretrained", "openclip_sam.stand_in"),
}
"""The extract settings, per backend, that define where a text is embedded: a query embedded under others than the
training vocabulary's would be compared in another space. (`openclip_sam.clip_checkpoint` is a file's place, which
moves with a copy of the run; its weights are named by model_name and pretrained, and a tower built from other
weights is refused by how it embeds a text the run stored: `econsg.query.check_same_tower`.)"""


def text_query(params: Params, model, device: str = "cpu", evaluated: bool = False):
    """The LatentQuery of a finished run: refused when these params' text-space settings differ from those extract.zarr
    was built with (a command run by hand after an edit of params.yaml, before `dvc repro`). It reads the text
    embeddings extract stored for the training vocabulary and, when `evaluated` (a command after the run, not the
    evaluate stage that writes them), those a current evaluate.zarr stored for the evaluation vocabulary."""
    from econsg.query import LatentQuery

    path = params.paths.artifact("extract")
    built = read_provenance(path).params.get("extract", {})
    now = params.extract.model_dump(mode="json")
    for field in TEXT_SPACE_FIELDS[built.get("backend", params.extract.backend)]:
        was, is_ = built, now
        for part in field.split("."):  # 'openclip_sam.model_name' is a nested section's field
            was, is_ = (was or {}).get(part), is_[part]
        if was is not None and was != is_:
            raise ArtifactError(f"{path}: built with extract.{field} = {was!r}, the params say {is_!r}: texts would be "
                                "embedded in another space than the training vocabulary's; rerun extract and what follows "
                                "(`dvc repro`), or restore the setting")
    return LatentQuery(model, params.extract, device, stored_text_embeddings(params, evaluated))


def stored_text_embeddings(params: Params, evaluated: bool) -> dict[str, np.ndarray]:
    """{text: [D] embedding} of the vocabularies whose embeddings the run stored: extract's training vocabulary and,
    when `evaluated`, the evaluation vocabulary of an evaluate.zarr built on the current extract.zarr (stores
    written before evaluate kept them have none)."""
    sources = [(open_artifact(params.paths.artifact("extract"), "extract"), "vocabulary")]
    path = params.paths.artifact("evaluate")
    if evaluated and (path / "zarr.json").is_file() and stale_input(params, path) is None:
        sources.append((open_artifact(path, "evaluate"), "eval_vocabulary"))
    stored = {}
    for group, names in sources:
        if "text_embeddings" in group:
            stored.update(zip(group.attrs[names], np.asarray(group["text_embeddings"][...], np.float32)))
    return stored

