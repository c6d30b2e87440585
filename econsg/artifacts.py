"""Versioned Zarr v3 artifacts: atomic writes, provenance, schema checks on open.

Every stage writes exactly one store, `artifacts/<scene>/<stage>.zarr`. Its root group carries one
namespaced attribute, `econsg`, validated by `Provenance`: schema version, stage, the params
section and its hash, the content hashes of the input artifacts, package version. What differs from run to
run of the same inputs (git revision, created time, run time) sits in the attributes of the store's
`econsg_run` group (`RUN_RECORD`), which DVC ignores (.dvcignore) and the content hash skips: a rerun that
writes the same data leaves the store's DVC hash as it was, so `dvc repro` does not rerun what follows. A
store is written into a temporary sibling and renamed into place only when the stage succeeded, so a failed
or killed stage leaves the previous artifact (or none).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from econsg import __version__
from econsg.errors import ArtifactError, first_line

try:
    import fcntl  # POSIX file locks: one writer per store
except ImportError:  # Windows
    fcntl = None

SCHEMA_VERSION = 1
PROVENANCE_KEY = "econsg"

# The arrays each stage's store must hold, with their dimension names. Optional arrays (present
# only when the dataset has them) are listed in OPTIONAL_ARRAYS.
ARTIFACT_SCHEMAS: dict[str, dict[str, tuple[str, ...]]] = {
    "ingest": {
        "images": ("view", "y", "x", "rgb"),
        "Ks": ("view", "row", "col"),
        "c2w": ("view", "row", "col"),
        "is_train": ("view",),
        "dataset_view": ("view",),
        "points": ("point", "xyz"),
        "point_rgb": ("point", "rgb"),
    },
    "extract": {
        "text_embeddings": ("class", "feature"),
        "features": ("view", "grid_y", "grid_x", "feature"),
        "labels": ("view", "y", "x"),
        "confidence": ("view", "y", "x"),
        "masks": ("view", "mask", "y", "x"),
        "mask_scores": ("view", "mask", "score"),
        "num_masks": ("view",),
    },
    "crr": {
        "refined_labels": ("view", "y", "x"),
        "high_confidence": ("view", "y", "x"),
        "mask_labels": ("view", "mask"),
        "covering_mask": ("view", "y", "x"),
        "feature_source": ("view", "y", "x"),
        "mask_class_features": ("view", "row", "feature"),
        "tau1": ("view",),
    },
    "fuse": {
        "xyz": ("point", "xyz"),
        "rgb": ("point", "rgb"),
        "feature": ("point", "feature"),
        "label": ("point",),
        "vote_share": ("point",),
        "labelled_share": ("point",),
        "num_views": ("point",),
        "agreement": ("view", "y", "x"),
    },
    "autoencode": {
        "latent": ("point", "latent"),
        "text_latents": ("class", "latent"),
        "latent_maps": ("view", "y", "x", "latent"),
    },
    "splat": {
        "means": ("gaussian", "xyz"),
        "scales": ("gaussian", "xyz"),
        "quats": ("gaussian", "wxyz"),
        "opacities": ("gaussian",),
        "sh0": ("gaussian", "coeff", "rgb"),
        "shN": ("gaussian", "coeff", "rgb"),
        "features": ("gaussian", "latent"),
        "curve": ("step", "metric"),
    },
    "evaluate": {
        "pred_labels": ("view", "y", "x"),
        "gt_labels": ("view", "y", "x"),
        "confusion": ("gt_class", "pred_class_or_ignore"),
    },
}
OPTIONAL_ARRAYS: dict[str, dict[str, tuple[str, ...]]] = {
    "ingest": {"depth": ("view", "y", "x"), "gt_class": ("view", "y", "x"), "gt_instance": ("view", "y", "x")},
    "extract": {"mask_ids": ("view", "y", "x"), "mask_features": ("view", "mask", "feature")},  # mask crops
    "evaluate": {
        "teacher_labels": ("view", "y", "x"),
        "renders": ("view", "y", "x", "rgb"),
        "feature_maps": ("view", "y", "x", "latent"),
        "text_embeddings": ("class", "feature"),
    },
}


class Provenance(BaseModel):
    """The `econsg` attribute of every artifact's root group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(description="Artifact schema version; readers refuse other versions.")
    stage: str = Field(description="The stage that wrote the store.")
    params: dict[str, Any] = Field(description="The params sections the stage read.")
    params_hash: str = Field(description="sha256 of the canonical JSON of `params`.")
    inputs: dict[str, str] = Field(description="Content hash of every input artifact, by path.")
    content_hash: str = Field(description="sha256 over the store's array data and metadata, excluding this attribute.")
    package_version: str = Field(description="econsg version that wrote the store.")
    # written by earlier releases; now in the store's RUN_RECORD group
    git_revision: str | None = Field(None, description="Former field: see RUN_RECORD.")
    created: str | None = Field(None, description="Former field: see RUN_RECORD.")
    run_seconds: float | None = Field(None, description="Former field: see RUN_RECORD.")


RUN_RECORD = "econsg_run"
"""The group in each store whose attributes hold what differs between two runs of the same inputs: `git_revision`
(git HEAD of the code, 'unknown' outside git, '-dirty' with uncommitted changes), `created` (UTC, ISO 8601),
`run_seconds`, a stage's own (`ArtifactWriter.run`: splat's `train_seconds`), and the `content_hash` of the data they
describe. A group, not a plain file, so that zarr lists the store without a warning."""


CODE_DIR = Path(__file__).resolve().parent  # the econsg package: its git repository is the code's


def git_revision(cwd: Path | None = None) -> str:
    """The git HEAD of the code (the repository holding `cwd`, default the econsg package), with '-dirty' when the
    code (econsg/, stages/) has changes, or 'unknown' outside git. Metrics and dvc.lock, which every `dvc repro`
    rewrites, do not count."""
    cwd = cwd or CODE_DIR
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "econsg", "stages"], cwd=top,
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a params mapping."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def hash_store_content(root: Path) -> str:
    """sha256 over every file of a store (relative path + bytes) and the root's attributes (canonical JSON), the
    provenance attribute and RUN_RECORD excluded: what later stages read from the attributes (class names, the
    vocabulary, the scene's median depth, the near plane) counts as content as the arrays do."""
    digest = hashlib.sha256()
    root_meta = root / "zarr.json"
    attributes = json.loads(root_meta.read_text(encoding="utf-8")).get("attributes", {}) if root_meta.is_file() else {}
    attributes.pop(PROVENANCE_KEY, None)
    digest.update(b"attributes:" + json.dumps(attributes, sort_keys=True, separators=(",", ":"), default=str).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "zarr.json" or rel.startswith(f"{RUN_RECORD}/"):
            continue
        digest.update(rel.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verified_content_hash(root: Path) -> str:
    """`hash_store_content(root)`, read once per process while the store's files keep their names, sizes and
    modification times: a stage opening a store twice (evaluate: the scene and extract's) hashes it once."""
    files = (p for p in Path(root).rglob("*") if p.is_file())
    signature = tuple(sorted((p.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns)
                             for p, stat in ((p, p.stat()) for p in files)))
    return _hash_of_files(str(Path(root).resolve()), signature)


@lru_cache(maxsize=64)
def _hash_of_files(root: str, signature: tuple) -> str:  # memoised by the files' signature, never by path alone
    return hash_store_content(Path(root))


def default_shards(shape: Sequence[int], chunks: Sequence[int], target_bytes: int, itemsize: int) -> tuple[int, ...] | None:
    """Group chunks along the first axis into shards of about `target_bytes` (None when one chunk suffices)."""
    if not shape or shape[0] <= chunks[0]:
        return None
    chunk_bytes = int(np.prod(chunks)) * itemsize
    per_shard = max(1, min(shape[0] // chunks[0], target_bytes // max(chunk_bytes, 1)))
    if per_shard <= 1:
        return None
    return (chunks[0] * per_shard, *chunks[1:])


class ArtifactWriter:
    """Context manager writing one stage's store atomically.

    >>> with ArtifactWriter(path, stage="crr", params={...}, inputs=[extract_path]) as out:
    ...     labels = out.create_array("refined_labels", (V, H, W), "int16", per_view=True)
    ...     labels[v] = ...
    On success the store is renamed over `path`; on any exception the temporary store is deleted
    and the previous artifact at `path` is left as it was.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stage: str,
        params: Mapping[str, Any],
        inputs: Sequence[str | Path | zarr.Group] = (),
        shard_bytes: int = 64 << 20,
    ):
        if stage not in ARTIFACT_SCHEMAS:
            raise ArtifactError(f"unknown stage {stage!r}; expected one of {sorted(ARTIFACT_SCHEMAS)}")
        self.path = Path(path)
        self.stage = stage
        self.params = dict(params)
        self.input_items = list(inputs)
        self.shard_bytes = shard_bytes
        self.tmp = self.path.with_name(f"{TMP_PREFIX.format(name=self.path.name)}{os.getpid()}")
        self.group: zarr.Group | None = None
        self.attrs: dict[str, Any] = {}
        self.run: dict[str, Any] = {}  # what differs between runs of the same inputs (a training time): the run record
        self._start = 0.0
        self._inputs: dict[str, str] = {}
        self._lock = None
        self._buffers: list[ShardRows] = []

    def __enter__(self) -> ArtifactWriter:
        self._start = time.perf_counter()
        self._inputs = dict(input_hash(item) for item in self.input_items)
        with ExitStack() as held:  # the lock is released if opening fails, else kept until __exit__
            held.enter_context(store_lock(self.path, self.stage))
            remove_stale_temporaries(self.path)
            self.group = zarr.open_group(store=str(self.tmp), mode="w")
            self._lock = held.pop_all()
        return self

    def create_array(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str | np.dtype,
        *,
        dims: Sequence[str] | None = None,
        per_view: bool = False,
        chunks: Sequence[int] | None = None,
        data: np.ndarray | None = None,
        fill_value: Any = 0,
    ) -> zarr.Array | ShardRows:
        """Create an array with dimension names; `per_view` chunks one view (first axis) per chunk, and (without
        `data`) returns it as `ShardRows`, which writes each shard once when the views filling it are done."""
        assert self.group is not None, "use ArtifactWriter as a context manager"
        shape = tuple(int(s) for s in shape)
        dims = tuple(dims) if dims is not None else self._schema_dims(name)
        if dims is None or len(dims) != len(shape):
            raise ArtifactError(
                f"{self.tmp.name}/{name}: dimension names {dims} do not match shape {shape}"
            )
        if chunks is None:
            chunks = (1, *shape[1:]) if per_view and shape and shape[0] > 0 else tuple(max(s, 1) for s in shape)
        chunks = tuple(max(1, int(c)) for c in chunks)
        itemsize = np.dtype(dtype).itemsize
        shards = default_shards(shape, chunks, self.shard_bytes, itemsize) if all(s > 0 for s in shape) else None
        array = self.group.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            shards=shards,
            dimension_names=dims,
            fill_value=fill_value,
        )
        if data is not None:
            array[...] = data
        elif per_view:
            array = ShardRows(array)
            self._buffers.append(array)
        return array

    def _schema_dims(self, name: str) -> tuple[str, ...] | None:
        schema = {**ARTIFACT_SCHEMAS[self.stage], **OPTIONAL_ARRAYS.get(self.stage, {})}
        return schema.get(name)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self._name_the_store(exc)
                return
            try:
                self._finish()
            except BaseException as error:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self._name_the_store(error)
                raise
        finally:
            if self._lock is not None:
                self._lock.close()

    def _name_the_store(self, error: BaseException | None) -> None:
        """A system error without a file name (a full disk while zarr writes a chunk) raised again naming this store."""
        if isinstance(error, OSError) and not error.filename:
            raise OSError(error.errno, f"{error.strerror or error} (while writing the {self.stage} store; the previous one "
                          "is kept)", str(self.path)) from error

    def _finish(self) -> None:
        assert self.group is not None
        for buffer in self._buffers:
            buffer.flush()
        missing = [name for name in ARTIFACT_SCHEMAS[self.stage] if name not in self.group]
        if missing:
            raise ArtifactError(f"{self.path}: stage {self.stage!r} did not write required arrays {missing}")
        for key, value in self.attrs.items():
            self.group.attrs[key] = value
        provenance = Provenance(
            schema_version=SCHEMA_VERSION,
            stage=self.stage,
            params=self.params,
            params_hash=params_hash(self.params),
            inputs=self._inputs,
            content_hash=hash_store_content(self.tmp),
            package_version=__version__,
        )
        self.group.attrs[PROVENANCE_KEY] = provenance.model_dump(mode="json", exclude_none=True)
        self.group.create_group(RUN_RECORD).attrs.update({
            **self.run,
            "content_hash": provenance.content_hash,  # a record DVC left beside other data (checkout) is told apart
            "git_revision": git_revision(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_seconds": round(time.perf_counter() - self._start, 3),
        })
        for path, digest in self._inputs.items():
            if read_provenance(path).content_hash != digest:
                raise ArtifactError(f"{path}: rewritten while the {self.stage} stage ran (its content differs from what "
                                    f"the stage read); rerun the {self.stage} stage. {self.path} is kept as it was")
        replace_directory(self.tmp, self.path)


class ShardRows:
    """A per-view zarr array whose writes of one view (`a[v] = ...`, `a[v, :k] = ...`) collect in memory until a
    view of another shard is written: zarr rewrites a whole shard on every write into it, so writing view by view
    cost O(views^2) bytes. The files are byte for byte those of the same writes made directly. Any other use goes
    straight to the array after the views held are written: reads (`a[...]`, `np.asarray(a)`), writes of other keys
    (slices, index arrays, masks) and zarr's own methods (`a.oindex`, `a.get_basic_selection`, ...); its metadata
    (`a.shape`, `a.dtype`, ...) is read without writing."""

    METADATA = frozenset({"shape", "dtype", "chunks", "shards", "fill_value", "metadata", "attrs", "ndim", "size",
                          "name", "path", "nbytes"})

    def __init__(self, array: zarr.Array):
        self.array = array
        self.rows = (array.shards or array.chunks)[0]
        self.unwritten = set(range(0, array.shape[0], self.rows))  # the shards still all fill value
        self.start: int | None = None
        self.block: np.ndarray | None = None

    def __setitem__(self, key, value) -> None:
        view, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if not (_plain_index(view) and 0 <= view < self.array.shape[0] and all(_plain_key(k) for k in rest)):
            self._direct()[key] = value
            return
        start = int(view) // self.rows * self.rows
        if start != self.start:
            self.flush()
            end = min(start + self.rows, self.array.shape[0])
            self.block = (np.full((end - start, *self.array.shape[1:]), self.array.fill_value, self.array.dtype)
                          if start in self.unwritten else self.array[start:end])
            self.start = start
        self.block[(int(view) - start, *rest)] = value

    def flush(self) -> None:
        if self.block is not None:
            self.array[self.start : self.start + len(self.block)] = self.block
            self.unwritten.discard(self.start)
            self.start = self.block = None

    def _direct(self) -> zarr.Array:
        """The array itself, for a use that may write anywhere: which shards it wrote is not worked out, so every
        shard is read back before a view is next buffered into it."""
        self.flush()
        self.unwritten.clear()
        return self.array

    def __getitem__(self, key):
        self.flush()
        return self.array[key]

    def __array__(self, dtype=None, copy=None):
        self.flush()
        return np.asarray(self.array[...], dtype=dtype)

    def __getattr__(self, name):
        return getattr(self.array, name) if name in self.METADATA else getattr(self._direct(), name)


def _plain_index(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_))


def _plain_key(key) -> bool:
    """An index numpy and zarr read alike: an integer, a slice or `...` (not an index array or a mask)."""
    return _plain_index(key) or isinstance(key, slice) or key is Ellipsis


_HELD_LOCKS: dict[Path, Any] = {}  # the store locks this process holds, by lock file


@contextmanager
def store_lock(path: Path, stage: str):
    """Hold the lock of the store at `path` for the block: a second process taking it (another run of the stage into
    the same artifacts folder) is refused at once, naming the store. A stage takes it before any work and its
    ArtifactWriter again, which then reuses the lock this process holds. POSIX only; elsewhere nothing is locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.with_name(f".{path.name}.lock")
    key = lock_file.resolve()
    if key in _HELD_LOCKS or fcntl is None:
        yield
        return
    handle = open(lock_file, "w", encoding="utf-8")  # noqa: SIM115 (held until the block ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ArtifactError(f"{path}: another run of the {stage} stage is writing it now; wait for it to finish (two "
                            "runs into one artifacts folder would overwrite each other)") from None
    _HELD_LOCKS[key] = handle
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        handle.close()  # releases the flock


def input_hash(item: str | Path | zarr.Group) -> tuple[str, str]:
    """(path, content hash) of a stage's input: for a store the stage opened, the hash it had when opened (so that a
    rewrite while the stage runs is caught when it finishes); for a path, its hash now."""
    if isinstance(item, zarr.Group):
        path = Path(item.store.root)
        raw = item.attrs.get(PROVENANCE_KEY)
        if not isinstance(raw, dict) or "content_hash" not in raw:
            raise ArtifactError(f"{path}: no '{PROVENANCE_KEY}' provenance attribute; this store was not written by econsg")
        return str(path), str(raw["content_hash"])
    return str(Path(item)), read_provenance(item).content_hash


TMP_PREFIX = ".{name}.tmp-"  # + the writing process's pid
OLD_PREFIX = ".{name}.old-"  # the previous store, whole, while the new one moves in
TRASH_PREFIX = ".{name}.trash-"  # the previous store being deleted: never put back


def remove_stale_temporaries(target: Path) -> None:
    """Clean up after writers of `target` that are gone (a run killed before it could): delete their temporary stores
    `.<name>.tmp-<pid>`, partly deleted ones `.<name>.trash-<pid>`, and their replaced stores `.<name>.old-<pid>`,
    except that a writer killed between moving the previous store aside and moving its own in leaves no `target`:
    its replaced store, still whole, is put back instead."""
    for prefix in (TMP_PREFIX, OLD_PREFIX, TRASH_PREFIX):
        for leftover in sorted(target.parent.glob(prefix.format(name=glob.escape(target.name)) + "*")):
            if left_by_dead_process(leftover):
                if prefix == OLD_PREFIX and not target.exists():
                    os.replace(leftover, target)
                else:
                    shutil.rmtree(leftover, ignore_errors=True)


def left_by_dead_process(leftover: Path) -> bool:
    """Whether a temporary named `...-<pid>` was left by a writer that is gone (a live one's must not be removed)."""
    pid = leftover.name.rsplit("-", 1)[-1]
    return pid.isdigit() and not _process_alive(int(pid))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def staged_folder(target: Path):
    """A fresh folder beside `target` to write into; on success it replaces `target` whole (`replace_directory`), on
    any exception it is deleted and `target` is left as it was. Entered before a store's ArtifactWriter, it moves in
    after the store: a stage's pictures never describe another run than its store."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)  # what a killed run left, as for a store
    staging = target.with_name(f"{TMP_PREFIX.format(name=target.name)}{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing a previous directory; the old one is removed only after, and put back when
    `new` cannot be moved in."""
    old = target.with_name(f"{OLD_PREFIX.format(name=target.name)}{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:  # an OSError, or an interrupt between the two moves
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old.exists():  # renamed first: a run killed while deleting leaves a partial store no one restores
        trash = target.with_name(f"{TRASH_PREFIX.format(name=target.name)}{os.getpid()}")
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def read_provenance(path: str | Path) -> Provenance:
    """The validated provenance of a store; ArtifactError if it is missing, foreign or stale."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        stage = "ingest" if path.name == "scene.zarr" else path.name.removesuffix(".zarr")
        run = (f"run the {stage} stage first (`econsg run {stage}` or `dvc repro`)" if stage in ARTIFACT_SCHEMAS
               else "run its stage first")
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()}, the folder this runs in)"
        raise ArtifactError(f"{path}: no Zarr store here{where} (expected an artifact written by an econsg stage; {run})")
    try:
        group = zarr.open_group(store=str(path), mode="r")
    except Exception as error:  # zarr raises several types for unreadable stores
        raise ArtifactError(f"{path}: not a readable Zarr v3 group ({error})") from None
    raw = group.attrs.get(PROVENANCE_KEY)
    if raw is None:
        raise ArtifactError(f"{path}: no '{PROVENANCE_KEY}' provenance attribute; this store was not written by econsg")
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: artifact schema version {version!r}, this econsg reads version {SCHEMA_VERSION}; "
            "rerun the stage that wrote it (dvc repro) to rebuild it"
        )
    try:
        return Provenance.model_validate(raw)
    except ValidationError as error:
        raise ArtifactError(f"{path}: malformed '{PROVENANCE_KEY}' attribute: {error}") from None


def open_artifact(path: str | Path, stage: str) -> zarr.Group:
    """Open a stage's store read-only after checking provenance, its files against the content hash written with
    them, and the stage's array schema."""
    path = Path(path)
    provenance = read_provenance(path)
    if provenance.stage != stage:
        raise ArtifactError(f"{path}: written by stage {provenance.stage!r}, expected the {stage!r} stage's artifact")
    if (found := verified_content_hash(path)) != provenance.content_hash:
        # zarr reads a missing chunk as its fill value and a damaged one as a bare checksum error: check up front
        raise ArtifactError(f"{path}: its files differ from those the {stage} stage wrote (content hash {found[:12]}, "
                            f"written {provenance.content_hash[:12]}): a file was changed, removed or added since; "
                            f"rerun the {stage} stage (or `dvc checkout` it)")
    group = zarr.open_group(store=str(path), mode="r")
    schema = ARTIFACT_SCHEMAS[stage]
    for name, dims in {**schema, **OPTIONAL_ARRAYS.get(stage, {})}.items():
        if name not in group:
            if name in schema:
                raise ArtifactError(f"{path}: required array {name!r} is missing from the {stage!r} artifact")
            continue
        found = tuple(group[name].metadata.dimension_names or ())
        if found != dims:
            raise ArtifactError(f"{path}/{name}: dimension names {found}, expected {dims}")
    return group


def describe_store(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    """Arrays (name, shape, dtype, chunks, shards, stored bytes), the raw provenance with the run record's fields
    (git revision, created, run seconds) and the other attributes (a scene's class names and median depth, ...) of
    any Zarr group."""
    if not Path(path).exists():
        raise ArtifactError(f"{path}: does not exist; expected a store a stage wrote, like artifacts/room/crr.zarr")
    if not (Path(path) / "zarr.json").is_file():
        raise ArtifactError(f"{path}: not a Zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(store=str(path), mode="r")
    except (ValueError, TypeError, KeyError) as error:  # an array where a group was expected, a zarr.json that is
        # not JSON or not a JSON object, metadata zarr cannot read
        raise ArtifactError(f"{path}: not a Zarr group written by a stage ({first_line(error)})") from None
    rows = []
    for name, array in sorted(group.arrays()):
        rows.append(
            {
                "name": name,
                "dims": tuple(dim or "-" for dim in array.metadata.dimension_names or ()),  # v3 allows unnamed ones
                "shape": array.shape,
                "dtype": str(array.dtype),
                "chunks": array.chunks,
                "shards": array.shards,
                "stored_bytes": array.nbytes_stored(),
            }
        )
    attributes = {key: value for key, value in group.attrs.items() if key != PROVENANCE_KEY}
    provenance = group.attrs.get(PROVENANCE_KEY)
    if provenance is not None and not isinstance(provenance, dict):  # another tool's attribute of that name
        attributes[PROVENANCE_KEY], provenance = provenance, None
    if provenance is not None and isinstance(group.get(RUN_RECORD), zarr.Group):
        run = group[RUN_RECORD].attrs.asdict()
        if run.pop("content_hash", None) == provenance.get("content_hash"):  # else another run's (`dvc checkout` keeps
            provenance = {**provenance, **run}  # an ignored folder as it is): not shown as this data's
    return rows, provenance, attributes


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write a metrics/plots JSON file via a temporary sibling and rename. NaN and infinity (a mean over no class
    present) are written as null, so the file stays valid JSON for strict parsers."""

    text = json.dumps(_strict_json(data), indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n"
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_file_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` to a temporary sibling `.<name>.tmp-<pid>`, then rename it to `path`. On any error or interrupt
    (a full disk, a folder in the file's place, Ctrl-C) no half-written sibling is left, and a system error names
    `path`, not the sibling. The one way econsg writes a file that must never be seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path


def _strict_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) replaced by None, through dicts, lists and numpy values."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_curve_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """A training curve (one dict per logged step) as CSV for `dvc plots`, written atomically."""
    import csv

    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "step", k))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    return write_file_atomic(path, write)
