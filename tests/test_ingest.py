import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from econsg.errors import EconsgError
from econsg.scene.data import select_sparse_views
from econsg.scene.ingest import downscale_depth, downscale_labels, write_scene
from econsg.scene.readers import detect_format, read_scene
from econsg.scene.store import open_ground_truth, open_scene
from tests.helpers import restamp, write_tiny_blender


def ingest(root, out, **kwargs):
    options = dict(params={}, downscale=1, sparse_views=None, max_init_points=10_000, init_voxel_size=0.01,
                   rng=np.random.default_rng(0))
    options.update(kwargs)
    return write_scene(read_scene(root), out, **options)


def test_blender_layout_round_trips_into_scene_store(tmp_path):
    root = write_tiny_blender(tmp_path / "data")
    assert detect_format(root) == "blender"
    path = ingest(root, tmp_path / "scene.zarr")
    scene = open_scene(path)
    assert scene.num_views == 4 and scene.is_train.tolist() == [True, True, True, False]
    assert scene.class_names == ["wall", "box"]
    expected = np.asarray(Image.open(root / "images" / "frame_0001.png"), np.float32) / 255
    np.testing.assert_allclose(scene.image(1), expected, atol=1 / 255)
    np.testing.assert_allclose(scene.depth(0), 2.0)
    # the camera looks down -z from height 2: OpenCV z axis is world -z
    np.testing.assert_allclose(scene.c2w[0][:3, 2], [0, 0, -1], atol=1e-9)
    # initial points come from back-projected depth and lie on the plane z = 0
    points = scene.group["points"][...]
    assert len(points) > 0 and np.abs(points[:, 2]).max() < 1e-4
    gt = open_ground_truth(path)
    assert set(np.unique(gt.classes(0))) == {0, 1}


def test_the_same_data_under_another_path_gives_the_same_content(tmp_path):
    """The data folder's path was stored as content: another spelling of it changed scene.zarr's hash, and through
    the inputs every later store's, so that dvc repro reran the whole chain on unchanged data."""
    from econsg.artifacts import read_provenance

    root = write_tiny_blender(tmp_path / "data")
    first = ingest(root, tmp_path / "a" / "scene.zarr")
    second = ingest(tmp_path / "data" / ".." / "data", tmp_path / "b" / "scene.zarr")
    assert read_provenance(first).content_hash == read_provenance(second).content_hash


def test_downscale_and_sparse_views(tmp_path):
    root = write_tiny_blender(tmp_path / "data", views=6)
    scene = open_scene(ingest(root, tmp_path / "scene.zarr", downscale=2, sparse_views=2))
    assert (scene.width, scene.height) == (8, 6)
    assert scene.is_train.sum() == 2 and (~scene.is_train).sum() == 1
    assert scene.Ks[0][0, 0] == pytest.approx(10.0) and scene.Ks[0][0, 2] == pytest.approx(4.0)
    # each kept view remembers its place in the whole dataset (training views first, then test views)
    full = open_scene(ingest(root, tmp_path / "full.zarr"))
    assert full.dataset_views.tolist() == list(range(6))
    assert scene.dataset_views.tolist() == [0, 4, 5]
    assert [full.names[i] for i in scene.dataset_views] == scene.names


def test_shrunk_labels_take_each_blocks_majority_and_ties_go_to_its_centre_sample():
    labels = np.array([[1, 1, 3, 4],
                       [1, 2, 3, 4],
                       [5, 5, 7, 7],
                       [5, 5, 7, 7]])
    # block (0,0) is mostly 1 though its centre sample (right and below) is 2; block (0,1) is a 2-2 tie
    assert downscale_labels(labels, 2).tolist() == [[1, 4], [5, 7]]
    odd = np.zeros((3, 3), int)
    odd[1, 1] = 9  # a lone centre sample loses to its block's majority
    assert downscale_labels(odd, 3).tolist() == [[0]]
    assert downscale_labels(labels, 1) is labels
    # a larger factor (one sample's agreement counted at a time) against a block-by-block reference
    many = np.random.default_rng(0).integers(0, 4, (24, 40))
    factor, centre = 8, 4 * 8 + 4
    expected = np.zeros((3, 5), int)
    for i in range(3):
        for j in range(5):
            block = many[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].ravel()
            ordered = [block[centre], *np.delete(block, centre)]
            expected[i, j] = max(ordered, key=lambda label: (block == label).sum())  # first of the most frequent
    assert downscale_labels(many, factor).tolist() == expected.tolist()


def test_shrunk_depth_is_the_lower_median_of_valid_samples():
    depth = np.array([[1.0, 0.0, 2.0, 2.0, 0.0, 0.0],
                      [3.0, 0.0, 5.0, 5.0, 0.0, 0.0]], np.float32)
    # an occlusion edge keeps the nearer surface, not a depth between surfaces; invalid samples are skipped
    shrunk = downscale_depth(depth, 2)
    assert shrunk.tolist() == [[1.0, 2.0, 0.0]] and shrunk.dtype == np.float32


def _double_loop(views_per_loop: int) -> np.ndarray:
    """OpenCV camera-to-worlds on a circle of radius 2 looking at its centre, the loop flown twice."""
    c2ws = []
    for angle in np.tile(np.linspace(0, 2 * np.pi, views_per_loop, endpoint=False), 2):
        centre = 2 * np.array([np.cos(angle), np.sin(angle), 0.0])
        forward = -centre / 2
        down = np.array([0.0, 0.0, -1.0])
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([np.cross(down, forward), down, forward], axis=1)
        c2w[:3, 3] = centre
        c2ws.append(c2w)
    return np.stack(c2ws)


def test_spread_sparse_views_do_not_spend_two_picks_on_one_place_of_a_double_loop():
    c2ws = _double_loop(8)
    by_order = select_sparse_views(c2ws, 3, "trajectory")
    spread = select_sparse_views(c2ws, 3, "spread")
    assert by_order == [0, 8, 15]  # views 0 and 8 stand at the same place
    assert spread[0] == 0 and len(set(spread)) == 3
    centres = c2ws[spread, :3, 3]
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert min(gaps) > 2.0  # at least a quarter loop apart (chord 2.83)
    assert select_sparse_views(c2ws, None, "spread") == list(range(16))
    assert select_sparse_views(np.stack([np.eye(4)] * 5), 3, "spread") == [0, 1, 2]  # repeated poses: no view twice


def test_a_downscale_leaving_images_too_small_for_splats_ssim_is_refused_up_front(tmp_path):
    root = write_tiny_blender(tmp_path / "data")  # 16x12
    with pytest.raises(EconsgError, match=r"ingest.downscale: 3 leaves 5x4 images; expected at least 6x6"):
        ingest(root, tmp_path / "scene.zarr", downscale=3)
    assert not (tmp_path / "scene.zarr").exists()


def test_frame_stride_keeps_every_kth_view_of_each_split_before_sparse_views(tmp_path, capsys):
    root = write_tiny_blender(tmp_path / "data", views=9)  # 8 training views (dataset positions 0-7), 1 test view (8)
    strided = open_scene(ingest(root, tmp_path / "strided.zarr", frame_stride=3))
    assert strided.dataset_views.tolist() == [0, 3, 6, 8]
    sparse = open_scene(ingest(root, tmp_path / "sparse.zarr", frame_stride=3, sparse_views=2))
    assert sparse.dataset_views.tolist() == [0, 6, 8]  # the first and last of the strided training views
    ingest(root, tmp_path / "all.zarr", frame_stride=3, sparse_views=3)
    assert "not below the 3 training views ingest.frame_stride 3 keeps" in capsys.readouterr().err


def test_sparse_views_not_below_the_training_views_keep_them_all_and_say_so(tmp_path, capsys):
    root = write_tiny_blender(tmp_path / "data", views=6)  # 5 training views
    scene = open_scene(ingest(root, tmp_path / "scene.zarr", sparse_views=5))
    assert scene.is_train.sum() == 5
    assert "ingest.sparse_views 5 is not below the dataset's 5 training views" in capsys.readouterr().err


def edit_frames(root, split, edit):
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["frames"][0].update(file_path="images/missing.png"), r"transforms_train.json: frames\[0\]: names 'images/missing.png'"),
        (lambda m: m["frames"][1].update(transform_matrix=[[float("nan")] * 4] * 4), r"frames\[1\]: pose contains NaN"),
        (lambda m: m["frames"][0].update(transform_matrix=np.diag([2.0, 1, 1, 1]).tolist()), r"frames\[0\]: pose is not rigid"),
        (lambda m: m.update(k1=0.1), r"distortion .* not supported"),
        (lambda m: m.update(fl_x=None), r"transforms_train.json: frames\[0\]: field 'fl_x' is None; expected a finite positive number"),
        (lambda m: m.update(w="16px"), r"frames\[0\]: field 'w' is '16px'; expected a finite positive number"),
        (lambda m: m["frames"][1].update(transform_matrix="eye"), r"frames\[1\]: field 'transform_matrix' is 'eye'; expected a 4x4"),
        (lambda m: m.update(depth_scale=0), r"transforms_train.json: field 'depth_scale' is 0; expected a finite positive"),
        # fl_x / cx / cy of twice the images' size, kept after shrinking them (no w / h to give it away)
        (lambda m: [m.pop("w"), m.pop("h"), m.update(cx=2 * m["cx"], cy=2 * m["cy"])],
         r"frame_0000.png: principal point \(16\.0, 12\.0\) is far from the centre of the 16x12 image"),
    ],
)
def test_bad_transforms_are_named_and_old_scene_kept(tmp_path, edit, message):
    root = write_tiny_blender(tmp_path / "data")
    out = ingest(root, tmp_path / "scene.zarr")
    edit_frames(root, "train", edit)
    with pytest.raises(EconsgError, match=message):
        ingest(root, out)
    assert open_scene(out).num_views == 4


@pytest.mark.parametrize("only, message", [("test", r"data: none of its 4 views is a training view"),
                                           ("train", r"data: none of its 4 views is a test view")])
def test_a_split_without_views_is_refused(tmp_path, only, message):
    """The readers name a missing split file; this guards the layouts whose reader assigns the splits itself."""
    source = read_scene(write_tiny_blender(tmp_path / "data"))
    source = dataclasses.replace(source, frames=[dataclasses.replace(f, split=only) for f in source.frames])
    with pytest.raises(EconsgError, match=message):
        write_scene(source, tmp_path / "scene.zarr", params={}, downscale=1, sparse_views=None, max_init_points=10,
                    init_voxel_size=0.01, rng=np.random.default_rng(0))


def test_two_files_of_one_number_are_refused_naming_both(tmp_path):
    from econsg.scene.readers.common import numbered_files

    for name in ("rgb_1.png", "rgb_01.png", "rgb_2.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(EconsgError, match=r"rgb_01.png and rgb_1.png: two files numbered 1"):
        numbered_files(tmp_path, r"rgb_(\d+)\.png")
    (tmp_path / "rgb_01.png").unlink()
    assert list(numbered_files(tmp_path, r"rgb_(\d+)\.png")) == [1, 2]


def test_wrong_depth_size_unreadable_image_and_empty_classes(tmp_path):
    root = write_tiny_blender(tmp_path / "data")
    out = ingest(root, tmp_path / "scene.zarr")
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(root / "depth" / "frame_0002.png")
    with pytest.raises(EconsgError, match=r"frame_0002.png: depth map is 5x5 pixels, expected 16x12"):
        ingest(root, out)
    root2 = write_tiny_blender(tmp_path / "data2")
    (root2 / "images" / "frame_0000.png").write_bytes(b"not a png")
    with pytest.raises(EconsgError, match=r"frame_0000.png: unreadable image"):
        ingest(root2, tmp_path / "s2.zarr")
    root3 = write_tiny_blender(tmp_path / "data3")
    (root3 / "classes.txt").write_text("\n")
    with pytest.raises(EconsgError, match=r"classes.txt: the class list is empty"):
        read_scene(root3)
    assert open_scene(out).num_views == 4


def test_label_ids_outside_class_list_are_refused(tmp_path):
    root = write_tiny_blender(tmp_path / "data")
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(root / "semantic" / "frame_0000.png")
    with pytest.raises(EconsgError, match=r"label ids \[7\] are outside the class list"):
        ingest(root, tmp_path / "scene.zarr")


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EconsgError, match="no known dataset layout found. Looked for blender: transforms_train.json"):
        read_scene(tmp_path / "empty")


def test_nerfstudio_names_the_reader_of_transforms_json(tmp_path):
    from econsg.config import parse_params

    root = write_tiny_blender(tmp_path / "data")
    assert parse_params({"ingest": {"format": "nerfstudio"}}).ingest.format == "nerfstudio"
    named, detected = read_scene(root, "nerfstudio"), read_scene(root)
    assert named.format == detected.format and [f.name for f in named.frames] == [f.name for f in detected.frames]


def test_auto_init_voxel_size_follows_the_scene_scale(tmp_path, capsys):
    """The same scene in units 10x smaller (as a COLMAP reconstruction may be): `auto` thins its initial cloud into the
    same points, scaled, and records its median depth; the metric default there draws a warning naming the field."""
    root = write_tiny_blender(tmp_path / "data", views=5)
    metric = open_scene(ingest(root, tmp_path / "metric.zarr", init_voxel_size="auto"))

    def shrink(meta):
        meta["depth_scale"] *= 10
        for frame in meta["frames"]:
            matrix = frame["transform_matrix"]
            frame["transform_matrix"] = [row[:3] + [row[3] / 10] for row in matrix[:3]] + [matrix[3]]

    for split in ("train", "test"):
        edit_frames(root, split, shrink)
    small = open_scene(ingest(root, tmp_path / "small.zarr", init_voxel_size="auto"))
    assert metric.median_depth == pytest.approx(2.0) and small.median_depth == pytest.approx(0.2)
    # the same grid, scaled (the points lie on voxel faces, where float rounding moves a few across)
    small_points, metric_points = small.group["points"][...], metric.group["points"][...]
    assert len(small_points) == pytest.approx(len(metric_points), rel=0.1)
    np.testing.assert_allclose(np.ptp(small_points, axis=0), np.ptp(metric_points, axis=0) / 10, atol=1e-6)
    assert "warning" not in capsys.readouterr().err

    import zarr

    zarr.open_group(tmp_path / "small.zarr", mode="r+").attrs.pop("median_depth")  # as a store from before it
    restamp(tmp_path / "small.zarr")
    with pytest.raises(EconsgError, match="no median_depth attribute.*rerun ingest"):
        open_scene(tmp_path / "small.zarr").median_depth

    fixed = open_scene(ingest(root, tmp_path / "fixed.zarr", init_voxel_size=0.01))  # 8x auto's 0.00125: coarser
    assert fixed.group["points"].shape[0] < 0.8 * len(small_points)
    assert "ingest.init_voxel_size 0.01" in capsys.readouterr().err


def write_nerfstudio_without_depth(root, ply_points=None):
    """The tiny Blender scene as ns-process-data lays a capture out: one transforms.json, no depth, and (given
    `ply_points`) its sparse_pc.ply named by ply_file_path."""
    from plyfile import PlyData, PlyElement

    write_tiny_blender(root, views=10)
    meta = json.loads((root / "transforms_train.json").read_text())
    meta["frames"] += json.loads((root / "transforms_test.json").read_text())["frames"]
    for frame in meta["frames"]:
        del frame["depth_file_path"]
    for split in ("train", "test"):
        (root / f"transforms_{split}.json").unlink()
    if ply_points is not None:
        vertices = np.zeros(len(ply_points), [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                              ("blue", "u1")])
        for k, axis in enumerate("xyz"):
            vertices[axis] = ply_points[:, k]
        vertices["red"] = 200
        PlyData([PlyElement.describe(vertices, "vertex")]).write(str(root / "sparse_pc.ply"))
        meta["ply_file_path"] = "sparse_pc.ply"
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_nerfstudio_splits_as_nerfstudio_does(tmp_path):
    root = write_nerfstudio_without_depth(tmp_path / "data", np.zeros((4, 3)))
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"] = meta["frames"][::-1]  # nerfstudio sorts the frames by path first
    (root / "transforms.json").write_text(json.dumps(meta))
    # ten frames: nine (ceil of 90%) at evenly spaced places 0, 1.125, ..., 9 train, so frame 8 alone is held out
    source = read_scene(root)
    assert [f.name for f in source.frames] == [f"frame_{v:04d}" for v in range(10)]
    assert [f.name for f in source.frames if f.split == "test"] == ["frame_0008"]

    lists = {"train_filenames": [f"images/frame_{v:04d}.png" for v in (0, 2, 4, 6)],
             "val_filenames": ["images/frame_0005.png"], "test_filenames": ["images/frame_0001.png", "images/frame_0009"]}
    (root / "transforms.json").write_text(json.dumps(meta | lists))
    source = read_scene(root)  # the test list, not val, is held out; frames in neither are left out
    assert [(f.name, f.split) for f in source.frames] == [("frame_0000", "train"), ("frame_0001", "test"), (
        "frame_0002", "train"), ("frame_0004", "train"), ("frame_0006", "train"), ("frame_0009", "test")]
    del lists["test_filenames"]
    (root / "transforms.json").write_text(json.dumps(meta | lists))
    assert [f.name for f in read_scene(root).frames if f.split == "test"] == ["frame_0005"]

    for bad, match in (({"train_filenames": ["images/frame_0000.png"]}, "expected train_filenames and test_filenames"),
                       (lists | {"val_filenames": ["images/other.png"]}, "val_filenames: names 'images/other.png'.*does not exist"),
                       (lists | {"val_filenames": ["images/frame_0000.png"]}, "in both train_filenames and val_filenames"),
                       (lists | {"val_filenames": "images/frame_0005.png"}, "field 'val_filenames'.*expected a list")):
        (root / "transforms.json").write_text(json.dumps(meta | bad))
        with pytest.raises(EconsgError, match=match):
            read_scene(root)


def test_nerfstudio_layout_takes_its_sparse_point_cloud(tmp_path):
    grid = np.stack(np.meshgrid(np.linspace(-1, 3, 30), np.linspace(-1, 1, 20), [0.0]), -1).reshape(-1, 3)
    root = write_nerfstudio_without_depth(tmp_path / "data", grid)
    source = read_scene(root)
    assert source.format == "nerfstudio" and [f.split for f in source.frames].count("test") == 1
    np.testing.assert_allclose(source.points, grid, atol=1e-6)
    assert (source.point_rgb[:, 0] == 200).all()
    scene = open_scene(ingest(root, tmp_path / "scene.zarr"))
    assert not scene.has_depth and scene.group["points"].shape[0] > 0

    bare = write_nerfstudio_without_depth(tmp_path / "bare")  # no depth, no point cloud: nothing to start from
    with pytest.raises(EconsgError, match="no depth maps and no point cloud"):
        ingest(bare, tmp_path / "bare.zarr")
    meta = json.loads((root / "transforms.json").read_text())
    (root / "transforms.json").write_text(json.dumps(meta | {"camera_model": "OPENCV", "k1": -0.05}))
    with pytest.raises(EconsgError, match="ns-process-data keeps the distortion: run colmap image_undistorter"):
        read_scene(root)
    (root / "transforms.json").write_text(json.dumps(meta))
    (root / "sparse_pc.ply").write_text("not a ply")
    with pytest.raises(EconsgError, match="sparse_pc.ply: not a readable PLY point cloud"):
        read_scene(root)


@pytest.mark.parametrize("dtype, stored, expected", [
    ("u1", (230, 128, 51), (230, 128, 51)),
    ("f4", (1.0, 0.5, 0.2), (255, 128, 51)),  # floats in [0, 1] (read as 8-bit, they were 1, 0, 0)
    ("u2", (65535, 32768, 256), (255, 128, 1)),  # 16-bit by the high byte (read as 8-bit, they were 255, 0, 0)
])
def test_ply_colours_of_any_stored_type_come_back_as_8_bit(tmp_path, dtype, stored, expected):
    from plyfile import PlyData, PlyElement

    from econsg.scene.readers.blender import read_point_cloud

    vertex = np.array([(0.0, 0.0, 1.0, *stored)], [*[(k, "f4") for k in "xyz"], *[(k, dtype) for k in ("red", "green", "blue")]])
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "points.ply"))
    assert read_point_cloud(tmp_path / "points.ply")[1].tolist() == [list(expected)]


def test_views_are_named_by_their_links_not_the_files_linked(tmp_path):
    """git-annex, DataLad and DVC's symlink cache link each image into a content store: the view keeps its own name."""
    root = write_tiny_blender(tmp_path / "data")
    for image in sorted((root / "images").iterdir()):
        stored = tmp_path / "annex" / f"SHA256E-{image.stat().st_size}-{image.name[-6:]}"
        stored.parent.mkdir(exist_ok=True)
        image.rename(stored)
        image.symlink_to(stored)
    assert [frame.name for frame in read_scene(root).frames] == [f"frame_{v:04d}" for v in range(4)]


def test_thinning_in_chunks_keeps_the_first_point_of_each_voxel_in_order():
    """Thinned view by view, the cloud is what thinning the whole concatenation gives: the first point of every voxel,
    in order, then the same seeded subset."""
    from econsg.fusion import voxel_keys
    from econsg.scene.ingest import thin_points

    rng = np.random.default_rng(3)
    chunks = [(rng.uniform(-1, 1, (n, 3)), rng.integers(0, 255, (n, 3), dtype=np.uint8)) for n in (500, 0, 800, 300)]
    xyz, rgb = np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
    _, first = np.unique(voxel_keys(xyz, 0.25), return_index=True)
    first.sort()
    points, colors = thin_points(iter(chunks), 0.25, 10_000, np.random.default_rng(0))
    np.testing.assert_array_equal(points, xyz[first].astype(np.float32))
    np.testing.assert_array_equal(colors, rgb[first])
    capped, _ = thin_points(iter(chunks), 0.25, 50, np.random.default_rng(0))
    pick = np.sort(np.random.default_rng(0).choice(first, size=50, replace=False))
    np.testing.assert_array_equal(capped, xyz[pick].astype(np.float32))


def test_chunked_median_depth_is_the_whole_clouds(monkeypatch):
    import econsg.fusion as fusion
    from econsg.scene.ingest import chunks_median_depth

    monkeypatch.setattr(fusion, "MEDIAN_DEPTH_SAMPLES", 97)  # a stride > 1 through 1,000 points
    rng = np.random.default_rng(1)
    chunks = [(np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(1, 9, n)], np.zeros((n, 3), np.uint8)) for n in (333, 1, 666)]
    Ks, c2ws = np.array([[[10.0, 0, 8], [0, 10, 6], [0, 0, 1]]]), np.eye(4)[None]
    whole = fusion.median_view_depth(np.concatenate([c[0] for c in chunks]), Ks, c2ws, 16, 12)
    assert chunks_median_depth(lambda: iter(chunks), [len(c[0]) for c in chunks], Ks, c2ws, 16, 12) == whole


@pytest.mark.parametrize(("folder", "what"), [("depth", "depth map"), ("semantic", "label map"), ("instance", "instance map")])
def test_a_file_missing_for_some_views_is_refused_not_dropped_for_all(tmp_path, folder, what):
    root = write_tiny_blender(tmp_path / "data")
    for split in ("train", "test"):
        edit_frames(root, split, lambda m: [f.pop(f"{folder}_file_path") for f in m["frames"] if f["file_path"].endswith("0001.png")])
    with pytest.raises(EconsgError, match=rf"frame_0001.png: no {what}, while 3 of the 4 views have one"):
        ingest(root, tmp_path / "scene.zarr")


def test_blender_synthetic_views_of_one_stem_in_train_and_test_get_distinct_names(tmp_path):
    root = write_tiny_blender(tmp_path / "data")
    for split in ("train", "test"):
        (root / split).mkdir()
    meta = {s: json.loads((root / f"transforms_{s}.json").read_text()) for s in ("train", "test")}
    for split, number in (("train", 0), ("test", 3)):  # train/r_0 and test/r_0, as NeRF-synthetic names them
        frame = meta[split]["frames"][0]
        (root / frame["file_path"]).rename(root / split / "r_0.png")
        frame["file_path"] = f"./{split}/r_0"  # NeRF-synthetic's relative path without a suffix
    for split in ("train", "test"):
        (root / f"transforms_{split}.json").write_text(json.dumps(meta[split]))
    scene = open_scene(ingest(root, tmp_path / "scene.zarr"))
    assert "train/r_0" in scene.names and "test/r_0" in scene.names
    assert "images/frame_0001" in scene.names, "names are paths below the folder all images share"


def test_nerfstudio_depth_as_npy_and_coarser_than_its_image(tmp_path):
    grid = np.stack(np.meshgrid(np.linspace(-1, 3, 30), np.linspace(-1, 1, 20), [0.0]), -1).reshape(-1, 3)
    root = write_nerfstudio_without_depth(tmp_path / "data", grid)
    meta = json.loads((root / "transforms.json").read_text())
    height, width = int(meta["h"]), int(meta["w"])
    for i, frame in enumerate(meta["frames"]):
        coarse = np.full((height // 2, width // 2, 1), 1500 + i, np.float32)  # mm, [H, W, 1] as nerfstudio writes it
        np.save(root / "depth" / f"{i}.npy", coarse)
        frame["depth_file_path"] = f"depth/{i}.npy"
    (root / "transforms.json").write_text(json.dumps(meta | {"depth_unit_scale_factor": 1e-3}))
    scene = open_scene(ingest(root, tmp_path / "scene.zarr"))
    assert scene.has_depth and scene.depth(0).shape == (height, width)
    np.testing.assert_allclose(scene.depth(1), 1.501, rtol=1e-6)

    holes = np.full((height, width), 1500.0, np.float32)
    holes[0, :3] = [np.nan, np.inf, -np.inf]  # a float map's "no return"
    np.save(root / "depth" / "1.npy", holes)
    scene = open_scene(ingest(root, tmp_path / "holes.zarr"))
    assert (scene.depth(1)[0, :3] == 0).all() and (scene.depth(1)[1:] > 0).all()
    holes[5, 5] = -1500.0
    np.save(root / "depth" / "1.npy", holes)
    with pytest.raises(EconsgError, match=r"depth/1\.npy: 1 of \d+ depth values are negative; expected z-depths >= 0"):
        ingest(root, tmp_path / "negative.zarr")


def test_text_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    """Under an ASCII locale (LC_ALL=C without Python's UTF-8 mode) params.yaml and a dataset's class list are still
    read as UTF-8: a non-ASCII class name is neither mangled nor a traceback. (Paths stay ASCII here: Python itself
    cannot name a non-ASCII file under that locale.)"""
    import os
    import subprocess
    import sys

    root = write_tiny_blender(tmp_path / "scene", classes=("étagère", "box"))
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  data: {root}\nevaluate:\n  vocabulary: [étagère, box]\n", encoding="utf-8")
    script = ("import pathlib; from econsg.config import load_params; from econsg.scene.readers.blender import "
              f"read_class_names; p = load_params({str(params)!r}); "
              "print(ascii(p.evaluate.vocabulary)); print(ascii(read_class_names(pathlib.Path(p.paths.data))))")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [ascii(["étagère", "box"])] * 2


def test_a_class_list_that_is_not_utf8_is_refused_naming_it(tmp_path):
    from econsg.config import ConfigError, load_params
    from econsg.scene.readers.blender import read_class_names

    root = write_tiny_blender(tmp_path / "scene")
    (root / "classes.txt").write_bytes("étagère\nbox\n".encode("latin-1"))
    with pytest.raises(EconsgError, match=r"classes.txt: not UTF-8 text \(byte 0 is 0xe9\)"):
        read_class_names(root)
    params = tmp_path / "params.yaml"
    params.write_bytes("paths:\n  data: dätä\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_params(params)


def test_every_text_file_econsg_reads_or_writes_names_its_encoding():
    """`read_text()`, `write_text(...)` and text-mode `open(...)` without `encoding=` use the locale's encoding: on a
    latin-1 or cp1252 machine a UTF-8 class list or params file would be read mangled, silently."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    unnamed = []
    for path in sorted([*root.glob("econsg/**/*.py"), *root.glob("stages/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
            if any(keyword.arg == "encoding" for keyword in call.keywords):
                continue
            builtin = isinstance(call.func, ast.Name) and call.func.id == "open"  # open(path, mode): Path.open(mode)
            method = "open" if builtin else getattr(call.func, "attr", None)
            mode = call.args[1:2] if builtin else call.args[:1] if method == "open" else []
            text_mode = not mode or (isinstance(mode[0], ast.Constant) and "b" not in str(mode[0].value))
            if method in ("read_text", "write_text") or (method == "open" and text_mode and (builtin or mode)):
                unnamed.append(f"{path.relative_to(root)}:{call.lineno}")
    assert not unnamed, unnamed


def test_recentring_judges_distance_by_the_cameras_spread_and_one_camera_is_recentred_wherever_it_is():
    """A georeferenced scene with one training view (sparse_views: 1) must still be recentred: float32 keeps a quarter
    unit at 5e6 units out, so a single camera, which has no spread to judge by, is recentred on itself."""
    from econsg.scene.ingest import recentring_offset

    far = np.array([[5e6, 0.0, 0.0], [5e6, 1.0, 0.0]])
    np.testing.assert_allclose(recentring_offset(far), [5e6, 0.5, 0.0])
    assert not recentring_offset(np.array([[0.0, 0.0, 3.0], [0.0, 1.0, 3.0]])).any()  # near: left where it is
    np.testing.assert_allclose(recentring_offset(np.array([[5e6, 4e6, 100.0]])), [5e6, 4e6, 100.0])
