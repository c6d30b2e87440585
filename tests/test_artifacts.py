import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from econsg.artifacts import (
    SCHEMA_VERSION,
    ArtifactWriter,
    describe_store,
    open_artifact,
    read_provenance,
)
from econsg.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]


def write_fuse(path, value: float, inputs=(), data: float | None = None, attrs: dict | None = None):
    """A fuse store with params voxel_size `value`, xyz all `data` (default: `value`) and root `attrs`."""
    with ArtifactWriter(path, stage="fuse", params={"fuse": {"voxel_size": value}}, inputs=inputs) as out:
        out.attrs.update(attrs or {})
        out.create_array("xyz", (5, 3), "float32", data=np.full((5, 3), value if data is None else data, np.float32))
        out.create_array("rgb", (5, 3), "uint8")
        out.create_array("feature", (5, 4), "float32")
        out.create_array("label", (5,), "int16")
        out.create_array("vote_share", (5,), "float32")
        out.create_array("labelled_share", (5,), "float32")
        out.create_array("num_views", (5,), "int32")
        out.create_array("agreement", (2, 3, 4), "float16", per_view=True)
    return path


def test_round_trip_provenance_and_dimension_names(tmp_path):
    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    group = open_artifact(path, "fuse")
    np.testing.assert_array_equal(group["xyz"][...], np.full((5, 3), 0.5, np.float32))
    assert tuple(group["xyz"].metadata.dimension_names) == ("point", "xyz")
    prov = read_provenance(path)
    assert prov.stage == "fuse" and prov.schema_version == SCHEMA_VERSION
    assert prov.params == {"fuse": {"voxel_size": 0.5}}
    # the params' own digest: the sha256 of their canonical JSON, written out here, so other params give another
    canonical = b'{"fuse":{"voxel_size":0.5}}'
    assert prov.params_hash == hashlib.sha256(canonical).hexdigest() and len(prov.content_hash) == 64
    assert read_provenance(write_fuse(tmp_path / "other.zarr", 0.25)).params_hash != prov.params_hash
    assert not list(tmp_path.glob(".fuse.zarr.tmp-*"))


def test_content_hash_follows_data_and_inputs_are_recorded(tmp_path):
    a = write_fuse(tmp_path / "a.zarr", 0.5)
    b = write_fuse(tmp_path / "b.zarr", 0.5)
    c = write_fuse(tmp_path / "c.zarr", 0.25, inputs=[a])
    assert read_provenance(a).content_hash == read_provenance(b).content_hash
    assert read_provenance(a).content_hash != read_provenance(c).content_hash
    # the data alone decides it: other data under the same params differs, the same data under other params not
    other_data = write_fuse(tmp_path / "d.zarr", 0.5, data=0.25)
    other_params = write_fuse(tmp_path / "e.zarr", 0.25, data=0.5)
    assert read_provenance(other_data).content_hash != read_provenance(a).content_hash
    assert read_provenance(other_params).content_hash == read_provenance(a).content_hash
    assert read_provenance(c).inputs == {str(a): read_provenance(a).content_hash}
    # what later stages read from the attributes is content too: a renamed class changes the hash
    tv = write_fuse(tmp_path / "f.zarr", 0.5, attrs={"vocabulary": ["wall", "tv"]})
    television = write_fuse(tmp_path / "g.zarr", 0.5, attrs={"vocabulary": ["wall", "television"]})
    assert read_provenance(tv).content_hash != read_provenance(television).content_hash
    assert read_provenance(write_fuse(tmp_path / "h.zarr", 0.5, attrs={"vocabulary": ["wall", "tv"]})).content_hash == \
        read_provenance(tv).content_hash


def test_a_rerun_writing_the_same_data_gives_the_same_files_but_its_run_record(tmp_path):
    """DVC hashes every file of a store that .dvcignore does not name: times and the git revision, which differ from
    run to run, sit in the run record alone, so a rerun of unchanged data does not rerun the stages after it."""
    from econsg.artifacts import RUN_RECORD

    first, second = write_fuse(tmp_path / "a.zarr", 0.5), write_fuse(tmp_path / "b.zarr", 0.5)

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    tracked = {k: v for k, v in files(first).items() if not k.startswith(f"{RUN_RECORD}/")}
    assert tracked == {k: v for k, v in files(second).items() if not k.startswith(f"{RUN_RECORD}/")}
    assert f"{RUN_RECORD}/zarr.json" in files(first) and f"{RUN_RECORD}/" in (ROOT / ".dvcignore").read_text()
    _, provenance, _ = describe_store(first)
    assert provenance["stage"] == "fuse" and provenance["created"] and provenance["run_seconds"] >= 0
    assert "git_revision" in provenance
    # `dvc checkout` restores a store's data but leaves its ignored run record: another data's record is not shown
    stale = zarr.open_group(store=str(first / RUN_RECORD), mode="r+")
    stale.attrs["content_hash"] = "another run's"
    _, provenance, _ = describe_store(first)
    assert "created" not in provenance and provenance["stage"] == "fuse"


def test_an_input_rewritten_while_the_stage_ran_is_refused_and_the_old_store_kept(tmp_path):
    upstream = write_fuse(tmp_path / "up.zarr", 0.5)
    downstream = write_fuse(tmp_path / "down.zarr", 0.5, inputs=[upstream])
    opened = open_artifact(upstream, "fuse")  # what the stage reads its input from
    with pytest.raises(ArtifactError, match=r"up\.zarr: rewritten while the fuse stage ran .*down\.zarr is kept as it was"):
        with ArtifactWriter(downstream, stage="fuse", params={}, inputs=[opened]) as out:
            write_fuse(upstream, 0.25)  # another run rewrites the input meanwhile
            for name in ("xyz", "rgb", "feature", "label", "vote_share", "labelled_share", "num_views"):
                out.create_array(name, (5, 4) if name == "feature" else (5, 3) if name in ("xyz", "rgb") else (5,), "float32")
            out.create_array("agreement", (2, 3, 4), "float16", per_view=True)
    assert read_provenance(downstream).inputs == {str(upstream): read_provenance(write_fuse(tmp_path / "same.zarr", 0.5)).content_hash}
    assert not list(tmp_path.glob(".down.zarr.tmp-*"))


def test_failed_write_keeps_previous_artifact(tmp_path):
    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, stage="fuse", params={}) as out:
            out.create_array("xyz", (5, 3), "float32", data=np.zeros((5, 3), np.float32))
            raise RuntimeError("stage crashed")
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5
    assert not list(tmp_path.glob(".fuse.zarr.tmp-*")) + list(tmp_path.glob(".fuse.zarr.old-*"))


def test_missing_required_array_is_refused_and_old_store_kept(tmp_path):
    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    with pytest.raises(ArtifactError, match=r"did not write required arrays \['rgb'"):
        with ArtifactWriter(path, stage="fuse", params={}) as out:
            out.create_array("xyz", (5, 3), "float32")
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5


def test_open_refuses_other_stage_stale_version_and_foreign_store(tmp_path):
    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    with pytest.raises(ArtifactError, match="written by stage 'fuse', expected the 'crr' stage's artifact"):
        open_artifact(path, "crr")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["econsg"]["schema_version"] = SCHEMA_VERSION + 7
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=f"schema version {SCHEMA_VERSION + 7}.*rerun the stage"):
        open_artifact(path, "fuse")
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("x", shape=(2,), dtype="int8")
    with pytest.raises(ArtifactError, match="not written by econsg"):
        open_artifact(foreign, "fuse")
    with pytest.raises(ArtifactError, match="no Zarr store here"):
        open_artifact(tmp_path / "nothing.zarr", "fuse")
    # a stage's own store names the stage to run
    with pytest.raises(ArtifactError, match=r"scene.zarr: no Zarr store here .*run the ingest stage first \(`econsg run ingest`"):
        open_artifact(tmp_path / "room" / "scene.zarr", "ingest")
    with pytest.raises(ArtifactError, match=r"crr.zarr: no Zarr store here .*run the crr stage first"):
        open_artifact(tmp_path / "room" / "crr.zarr", "crr")


@pytest.mark.parametrize("damage", ["chunk removed", "chunk altered", "array metadata cut"])
def test_a_store_whose_files_changed_since_written_is_refused_naming_it(tmp_path, damage):
    """zarr read a removed chunk as its fill value (a fuse with no labelled point) and an altered one as a bare
    checksum error: open refuses both, and any other change to the files, before a stage reads them."""
    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    open_artifact(path, "fuse")  # whole: its hash, read once in this process, must not hide the damage after
    chunks = sorted(p for p in (path / "xyz").rglob("*") if p.is_file() and p.name != "zarr.json")
    if damage == "chunk removed":
        chunks[0].unlink()
    elif damage == "chunk altered":
        chunks[0].write_bytes(chunks[0].read_bytes()[:-1] + b"\x00")
    else:
        meta = path / "xyz" / "zarr.json"
        meta.write_text(meta.read_text()[:20])
    with pytest.raises(ArtifactError, match=r"fuse.zarr: its files differ from those the fuse stage wrote .*rerun the fuse stage"):
        open_artifact(path, "fuse")


def test_wrong_dimension_names_are_reported(tmp_path):
    path = tmp_path / "fuse.zarr"
    with ArtifactWriter(path, stage="fuse", params={}) as out:
        out.create_array("xyz", (5, 3), "float32", dims=("gaussian", "xyz"))
        for name, shape in {"rgb": (5, 3), "feature": (5, 4)}.items():
            out.create_array(name, shape, "float32")
        for name in ("label", "vote_share", "labelled_share", "num_views"):
            out.create_array(name, (5,), "float32")
        out.create_array("agreement", (2, 3, 4), "float16")
    with pytest.raises(ArtifactError, match=r"xyz: dimension names \('gaussian', 'xyz'\), expected \('point', 'xyz'\)"):
        open_artifact(path, "fuse")


def test_per_view_arrays_are_sharded_into_few_files(tmp_path):
    path = tmp_path / "crr.zarr"
    with ArtifactWriter(path, stage="crr", params={}, shard_bytes=1 << 20) as out:
        labels = out.create_array("refined_labels", (64, 32, 32), "int16", per_view=True)
        for v in range(64):
            labels[v] = v
        for name in ("high_confidence", "covering_mask", "feature_source"):
            out.create_array(name, (64, 32, 32), "int32", per_view=True)
        out.create_array("mask_labels", (64, 3), "int16", per_view=True)
        out.create_array("mask_class_features", (64, 2, 4), "float16", per_view=True)
        out.create_array("tau1", (64,), "float32")
    group = open_artifact(path, "crr")
    assert group["refined_labels"].chunks == (1, 32, 32)
    assert group["refined_labels"].shards is not None and group["refined_labels"].shards[0] > 1
    assert group["refined_labels"][17, 0, 0] == 17
    files = [p for p in (path / "refined_labels").rglob("*") if p.is_file()]
    assert len(files) < 64 / 4
    rows, provenance, attributes = describe_store(path)
    assert "econsg" not in attributes  # the provenance is shown apart
    assert {row["name"] for row in rows} >= {"refined_labels", "tau1"} and provenance["stage"] == "crr"


def test_per_view_writes_are_buffered_per_shard_and_give_the_files_of_direct_writes(tmp_path):
    """Views written one at a time (whole, in part, out of order, read back midway) give byte for byte the files of
    the same writes made straight into a zarr array of the same chunks and shards."""
    rng = np.random.default_rng(0)
    views = rng.integers(0, 100, (10, 4, 6)).astype(np.int16)

    def write(array, read_back):
        for v in (0, 1, 2, 8, 3):  # 3 returns to the first shard after it was left
            array[v, :2] = views[v, :2]
            if v == 2:
                read_back.append(np.asarray(array[2]).copy())
        array[9] = views[9]
        array[4:6] = views[4:6]  # a slice of views goes straight through
        array[6] = views[6]  # and a view then written into the shard the slice began keeps it

    with ArtifactWriter(tmp_path / "buffered" / "crr.zarr", stage="crr", params={}, shard_bytes=4 * (4 * 6 * 2)) as out:
        buffered = out.create_array("refined_labels", views.shape, "int16", per_view=True, fill_value=-1)
        seen = []
        write(buffered, seen)
        for name in ("high_confidence", "covering_mask", "feature_source"):
            out.create_array(name, (10, 4, 6), "int32", per_view=True)
        out.create_array("mask_labels", (10, 3), "int16", per_view=True)
        out.create_array("mask_class_features", (10, 2, 4), "float16", per_view=True)
        out.create_array("tau1", (10,), "float32")
    direct = zarr.open_group(store=str(tmp_path / "direct"), mode="w").create_array(
        "refined_labels", shape=views.shape, dtype="int16", chunks=buffered.chunks, shards=buffered.shards,
        dimension_names=buffered.metadata.dimension_names, fill_value=-1)
    expected_seen = []
    write(direct, expected_seen)
    assert buffered.shards == (4, 4, 6)  # several shards of several views: the case buffering changes
    np.testing.assert_array_equal(seen[0], expected_seen[0])
    ours = tmp_path / "buffered" / "crr.zarr" / "refined_labels"
    theirs = tmp_path / "direct" / "refined_labels"
    files = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(files) == 3 and all((ours / f).read_bytes() == (theirs / f).read_bytes() for f in files)
    stored = open_artifact(tmp_path / "buffered" / "crr.zarr", "crr")["refined_labels"][:]
    np.testing.assert_array_equal(stored, direct[:])
    assert (stored[3, :2] == views[3, :2]).all() and (stored[3, 2:] == -1).all() and (stored[5] == views[5]).all()


def test_zarrs_own_methods_on_a_buffered_array_see_its_views_and_keep_their_writes(tmp_path):
    with ArtifactWriter(tmp_path / "crr.zarr", stage="crr", params={}, shard_bytes=4 * (4 * 6 * 2)) as out:
        labels = out.create_array("refined_labels", (10, 4, 6), "int16", per_view=True, fill_value=-1)
        labels[1] = 5
        assert labels.oindex[1][0, 0] == labels.get_basic_selection(1)[0, 0] == np.asarray(labels)[1, 0, 0] == 5
        labels.oindex[2] = 7  # written through zarr into the shard view 3 is then buffered into
        labels[3] = 9
        with pytest.raises(IndexError):
            labels[True] = 1  # as zarr refuses it, not view 1
        labels[4, np.array([True, False, True, False])] = 8  # a mask goes to zarr as it is
        for name in ("high_confidence", "covering_mask", "feature_source"):
            out.create_array(name, (10, 4, 6), "int32", per_view=True)
        out.create_array("mask_labels", (10, 3), "int16", per_view=True)
        out.create_array("mask_class_features", (10, 2, 4), "float16", per_view=True)
        out.create_array("tau1", (10,), "float32")
    stored = open_artifact(tmp_path / "crr.zarr", "crr")["refined_labels"]
    assert [stored[v, 0, 0] for v in (1, 2, 3)] == [5, 7, 9]
    assert stored[4, :, 0].tolist() == [8, -1, 8, -1]


def test_metrics_json_writes_non_finite_numbers_as_null(tmp_path):
    from econsg.artifacts import write_json_atomic

    path = write_json_atomic(tmp_path / "m.json", {"miou": float("nan"), "fps": np.float32("inf"), "ok": np.float64(0.5),
                                                   "per_class": {"a": float("nan")}, "curve": [1.0, float("-inf")]})
    data = json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN / Infinity tokens
    assert data == {"miou": None, "fps": None, "ok": 0.5, "per_class": {"a": None}, "curve": [1.0, None]}


@pytest.mark.parametrize("kind", ["metrics", "curve"])
def test_a_metrics_or_curve_file_that_cannot_be_written_is_named_and_leaves_no_sibling(tmp_path, kind):
    from econsg.artifacts import write_curve_csv, write_json_atomic

    target = tmp_path / ("m.json" if kind == "metrics" else "curve.csv")
    target.mkdir()  # a folder in the file's place
    with pytest.raises(OSError) as error:
        write_json_atomic(target, {"a": 1}) if kind == "metrics" else write_curve_csv(target, [{"step": 1, "loss": 0.5}])
    assert error.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name], "no .tmp sibling is left"


def test_a_file_write_interrupted_midway_leaves_no_sibling_and_the_previous_file(tmp_path):
    """Ctrl-C (stages turn SIGTERM into it) inside the write left the half-written temporary behind."""
    from econsg.artifacts import write_file_atomic

    target = tmp_path / "checkpoint.pt"
    target.write_text("previous")

    def interrupted(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(target, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == [target.name] and target.read_text() == "previous"


def test_a_killed_writers_leftovers_are_removed_and_a_second_writer_is_refused(tmp_path):
    """A run killed without cleanup leaves .fuse.zarr.tmp-<pid>: the next writer removes it (its process is gone);
    two writers of one store at once would overwrite each other, so the second is refused until the first ends."""
    import subprocess
    import sys

    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = tmp_path / f".fuse.zarr.tmp-{gone}"
    stale.mkdir()
    alive = tmp_path / f".fuse.zarr.tmp-{os.getppid()}"  # a running process's: left alone
    alive.mkdir()
    with pytest.raises(RuntimeError), ArtifactWriter(path, stage="fuse", params={}):
        assert not stale.exists() and alive.exists()
        second = subprocess.run([sys.executable, "-c", "from econsg.artifacts import ArtifactWriter\n"
                                 f"ArtifactWriter({str(path)!r}, stage='fuse', params={{}}).__enter__()"],
                                capture_output=True, text=True)  # another process: this one's writers share its lock
        assert second.returncode == 1 and "another run of the fuse stage is writing it now" in second.stderr
        raise RuntimeError("stage crashed")
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5
    assert open_artifact(write_fuse(path, 0.25), "fuse")["xyz"][0, 0] == 0.25, "the lock is released after a failure"


def test_a_full_disk_while_writing_names_the_store_and_keeps_the_previous_one(tmp_path):
    import errno

    from econsg.errors import refused_path

    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    with pytest.raises(OSError) as raised, ArtifactWriter(path, stage="fuse", params={}):
        raise OSError(errno.ENOSPC, "No space left on device")  # as zarr's chunk writes raise it: no file name
    assert str(refused_path(raised.value)).startswith(f"{path}: No space left on device (while writing the fuse store")
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5


def test_a_run_killed_between_its_two_moves_gets_its_previous_store_back(tmp_path, monkeypatch):
    """Finishing moves the previous store aside, then the new one in. Interrupted between the two, the writer puts
    the previous one back; killed there (no chance to), the next writer does."""
    import subprocess
    import sys

    from econsg import artifacts

    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    real_replace = os.replace

    def interrupted_second_move(src, dst):  # zarr's own writes go through os.replace too: only this move is stopped
        if Path(dst) == path and Path(src).name.startswith(".fuse.zarr.tmp-"):
            assert not path.exists(), "the previous store was moved aside first"
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", interrupted_second_move)
    with pytest.raises(KeyboardInterrupt):
        write_fuse(path, 0.25)
    monkeypatch.setattr(artifacts.os, "replace", real_replace)
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    os.replace(path, tmp_path / f".fuse.zarr.old-{gone}")  # as a SIGKILL between the moves leaves it
    with pytest.raises(RuntimeError), ArtifactWriter(path, stage="fuse", params={}):
        raise RuntimeError("the next run fails too")
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5, "the previous store is back, not deleted"
    assert not list(tmp_path.glob(".fuse.zarr.old-*"))
    # killed while deleting the previous store (after the new one was in): that partial store is never put back
    os.replace(path, tmp_path / f".fuse.zarr.trash-{gone}")
    with pytest.raises(RuntimeError), ArtifactWriter(path, stage="fuse", params={}):
        raise RuntimeError("the next run fails")
    assert not path.exists() and not list(tmp_path.glob(".fuse.zarr.trash-*"))


def test_sigterm_mid_write_removes_the_temporary_store_and_keeps_the_previous_one(tmp_path):
    """DVC, schedulers and `docker stop` end a run with SIGTERM; the stages turn it into an interrupt that unwinds."""
    import signal
    import subprocess
    import sys

    path = write_fuse(tmp_path / "fuse.zarr", 0.5)
    script = f"""
import sys, time
import numpy as np
from econsg.artifacts import ArtifactWriter
from econsg.pipeline import sigterm_as_interrupt
with sigterm_as_interrupt(), ArtifactWriter({str(path)!r}, stage="fuse", params={{}}) as out:
    out.create_array("xyz", (5, 3), "float32", data=np.ones((5, 3), np.float32))
    print("writing", flush=True)
    time.sleep(60)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    assert list(tmp_path.glob(".fuse.zarr.tmp-*")), "the temporary store exists while the stage writes"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=30)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert not list(tmp_path.glob(".fuse.zarr.tmp-*"))
    assert open_artifact(path, "fuse")["xyz"][0, 0] == 0.5


def test_sigterm_still_interrupts_after_a_colmap_scene_is_read():
    """pycolmap's glog installs its own SIGTERM handler on import (a stack trace, then death, the temporary store
    left behind); ingest reads COLMAP models through import_pycolmap, which keeps the stage's handler."""
    import subprocess
    import sys

    script = """
import os, signal, time
from econsg.pipeline import sigterm_as_interrupt
from econsg.scene.readers.colmap import import_pycolmap
try:
    with sigterm_as_interrupt():
        import_pycolmap()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
except KeyboardInterrupt:
    print("interrupted")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "interrupted", result.stderr[-500:]


def test_a_staged_folder_replaces_its_target_whole_or_not_at_all(tmp_path):
    """A stage's pictures: written beside the folder, moved over it on success (nothing of the previous run stays),
    deleted on failure (the previous run's stay whole)."""
    from econsg.artifacts import staged_folder

    target = tmp_path / "plots" / "evaluate"
    target.mkdir(parents=True)
    (target / "confusion.png").write_text("the previous run's")
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(target) as pictures:
            (pictures / "view_0001.png").write_text("half a run")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["confusion.png"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["evaluate"], "no staging folder left"
    (target.parent / ".evaluate.tmp-999999999").mkdir()  # what a killed run of a process long gone left
    with staged_folder(target) as pictures:
        (pictures / "view_0001.png").write_text("this run")
    assert sorted(p.name for p in target.iterdir()) == ["view_0001.png"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["evaluate"]

