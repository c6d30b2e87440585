"""Real-dataset readers read back tiny fixtures written in each dataset's own layout."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from econsg.errors import EconsgError
from econsg.scene.readers import available_readers, detect_format, read_scene
from econsg.scene.readers.lerf import read_lerf_frame, read_lerf_labels
from econsg.scene.readers.ovs3d import load_class_masks
from tests.dataset_fixtures import (
    PLANE_Z,
    save_uint16,
    synthetic_views,
    write_colmap,
    write_lerf_frame,
    write_ovs3d,
    write_replica_nice,
    write_replica_semantic,
    write_scannet,
)


@pytest.fixture(scope="module")
def views():
    return synthetic_views()


def assert_poses(source, views, numbers):
    for frame, i in zip(source.frames, numbers):
        np.testing.assert_allclose(frame.c2w, views.c2w[i], atol=1e-6)


def test_registry_lists_every_format():
    assert {"colmap", "replica_nice", "replica_semantic", "scannet", "ovs3d"} <= set(available_readers())


# ---- COLMAP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_reads_poses_intrinsics_points_and_split(tmp_path, views, binary):
    points = np.array([[0.0, 0.0, 3.0], [1.0, -1.0, 2.5]])
    write_colmap(tmp_path, views, binary=binary, points=points)
    assert detect_format(tmp_path) == "colmap"
    source = read_scene(tmp_path)
    assert [f.name for f in source.frames] == [f"view_{i:02d}" for i in range(9)]
    assert_poses(source, views, range(9))
    np.testing.assert_allclose(source.frames[3].K, views.K)
    assert [f.split for f in source.frames] == ["test"] + ["train"] * 7 + ["test"]
    np.testing.assert_allclose(source.points, points, atol=1e-6)
    assert source.point_rgb[1].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(source.frames[2].load_image(), views.images[2] / np.float32(255))


def test_colmap_points_start_the_run_only_where_two_training_views_observe_them(tmp_path, capsys):
    """A COLMAP model is triangulated from every image, held-out ones too: a point only held-out views (or views
    sparse_views leaves out) observe must not start the run; a model without tracks is kept whole, with a warning
    where views were left out."""
    from econsg.scene.ingest import write_scene
    from econsg.scene.store import open_scene

    views = synthetic_views(n=17)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.5, 0.5, (40, 2)), np.full(40, 3.0)]
    tests = [0, 8, 16]  # llff_split's held-out views
    tracks = [list(range(17))] * 10 + [tests] * 10 + [[1, 9]] * 10 + [[1, 2]] * 10  # every view / test / 1+9 / 1+2
    write_colmap(tmp_path / "tracked", views, points=points, tracks=tracks)
    write_colmap(tmp_path / "bare", views, points=points)
    kwargs = dict(params={}, downscale=1, max_init_points=10_000, init_voxel_size="auto", rng=np.random.default_rng(0))

    def initial_points(data: str, **selection) -> tuple[int, set[str]]:
        scene = open_scene(write_scene(read_scene(tmp_path / data), tmp_path / f"{data}{len(selection)}.zarr",
                                       **{"sparse_views": None, **selection}, **kwargs))
        names = np.array(scene.group.attrs["view_names"])
        return scene.group["points"].shape[0], set(names[scene.group["is_train"][:]])

    assert read_scene(tmp_path / "tracked").point_views[10] == ("view_00", "view_08", "view_16")
    assert initial_points("tracked")[0] == 30, "the points only held-out views observe are left out"
    count, kept = initial_points("tracked", sparse_views=2)
    assert count == 10 + 10 * ({"view_01", "view_09"} <= kept) + 10 * ({"view_01", "view_02"} <= kept), kept
    capsys.readouterr()
    assert initial_points("bare", sparse_views=2)[0] == 40
    assert "has no tracks, so all 40 of its points start the run" in capsys.readouterr().err
    with pytest.raises(EconsgError, match=r"none of the 40 points of the dataset's cloud is observed by 2 of the 1 "):
        write_scene(read_scene(tmp_path / "tracked"), tmp_path / "one.zarr", sparse_views=1, **kwargs)


def test_a_georeferenced_model_is_recentred_before_float32_loses_it(tmp_path):
    """A COLMAP model aligned to map coordinates lies millions of units out, where float32 keeps a quarter unit: ingest
    shifts cameras and points by the training cameras' mean centre (kept as origin_offset), and the scene reads as
    the same scene at the origin would; a scene near the origin is left where it is."""
    from econsg.scene.ingest import write_scene
    from econsg.scene.store import open_scene

    views = synthetic_views(n=9)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-1, 1, (500, 2)), np.full(500, 3.0)]
    offset = np.array([4.0e6, 3.0e5, 12.0])
    far = dataclasses.replace(views, c2w=views.c2w.copy())
    far.c2w[:, :3, 3] += offset
    write_colmap(tmp_path / "near", views, points=points)
    write_colmap(tmp_path / "far", far, points=points + offset)
    kwargs = dict(params={}, downscale=1, sparse_views=None, max_init_points=10_000, init_voxel_size=1e-4)  # no thinning
    near = open_scene(write_scene(read_scene(tmp_path / "near"), tmp_path / "near.zarr", rng=np.random.default_rng(0), **kwargs))
    moved = open_scene(write_scene(read_scene(tmp_path / "far"), tmp_path / "far.zarr", rng=np.random.default_rng(0), **kwargs))
    assert "origin_offset" not in near.group.attrs
    shift = np.array(moved.group.attrs["origin_offset"])
    train = near.group["is_train"][:]
    np.testing.assert_allclose(shift, offset + near.group["c2w"][:][train][:, :3, 3].mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(moved.group["c2w"][:][:, :3, 3] + shift, near.group["c2w"][:][:, :3, 3] + offset, atol=1e-6)
    assert moved.median_depth == pytest.approx(near.median_depth, rel=1e-5)
    assert moved.group["points"].shape == near.group["points"].shape == (500, 3)
    np.testing.assert_allclose(moved.group["points"][:] + shift, near.group["points"][:] + offset, rtol=0, atol=1e-5)


def test_colmap_rig_folders_keep_their_views_apart(tmp_path, views):
    from econsg.scene.data import SceneSource
    from econsg.scene.ingest import write_scene

    write_colmap(tmp_path, views, rig=True)
    source = read_scene(tmp_path)
    names = [f.name for f in source.frames]
    assert names[:3] == ["cam0/view_00", "cam0/view_01", "cam0/view_02"] and len(set(names)) == 9
    # two views of one name would hide one another in evaluate's per-view scores: ingest refuses them
    twin = dataclasses.replace(source.frames[1], name=source.frames[0].name)
    clash = SceneSource(root=source.root, format=source.format, frames=[source.frames[0], twin, *source.frames[2:]])
    with pytest.raises(EconsgError, match="its view name 'cam0/view_00' is also"):
        write_scene(clash, tmp_path / "scene.zarr", params={}, downscale=1, sparse_views=None, max_init_points=100,
                    init_voxel_size=0.1, rng=np.random.default_rng(0))


def test_colmap_simple_pinhole(tmp_path, views):
    write_colmap(tmp_path, views, model="SIMPLE_PINHOLE", params=[25.0, 8.0, 6.0])
    K = read_scene(tmp_path, "colmap").frames[0].K
    np.testing.assert_allclose(K, [[25, 0, 8], [0, 25, 6], [0, 0, 1]])


def test_colmap_missing_image_names_file(tmp_path, views):
    write_colmap(tmp_path, views, skip_image=4)
    with pytest.raises(EconsgError, match=r"view_04\.png: image named in the COLMAP model"):
        read_scene(tmp_path, "colmap")


def test_colmap_distorted_or_unsupported_camera_is_refused(tmp_path, views):
    write_colmap(tmp_path / "a", views, model="OPENCV", params=[20, 22, 8, 6, 0.1, 0, 0, 0])
    with pytest.raises(EconsgError, match="OPENCV has distortion.*image_undistorter"):
        read_scene(tmp_path / "a", "colmap")
    write_colmap(tmp_path / "b", views, model="OPENCV", params=[20, 22, 8, 6, 0, 0, 0, 0])
    np.testing.assert_allclose(read_scene(tmp_path / "b", "colmap").frames[0].K, views.K)
    write_colmap(tmp_path / "c", views, model="OPENCV_FISHEYE", params=[20, 22, 8, 6, 0, 0, 0, 0])
    with pytest.raises(EconsgError, match="OPENCV_FISHEYE is not supported"):
        read_scene(tmp_path / "c", "colmap")


# ---- Replica ----------------------------------------------------------------------------------------


def test_replica_nice_poses_intrinsics_depth(tmp_path, views):
    write_replica_nice(tmp_path, views)
    assert detect_format(tmp_path) == "replica_nice"
    source = read_scene(tmp_path)
    assert_poses(source, views, range(9))
    np.testing.assert_allclose(source.frames[0].K, views.K, atol=1e-9)  # +0.5 shift of cam_params.json undone
    depth = source.frames[5].load_depth()
    np.testing.assert_allclose(depth, views.depth[5], atol=1 / 6553.5)
    assert source.frames[0].split == "test" and source.frames[1].split == "train"
    assert np.abs(source.frames[1].load_image() - views.images[1] / 255).mean() < 0.05  # JPEG


def test_replica_nice_default_camera_and_bad_depth(tmp_path, views):
    write_replica_nice(tmp_path / "a", views, cam_params=False)
    with pytest.raises(EconsgError, match="NICE-SLAM default.*1200x680"):
        read_scene(tmp_path / "a", "replica_nice")
    write_replica_nice(tmp_path / "b", views, depth_shape=(6, 8))
    frame = read_scene(tmp_path / "b", "replica_nice").frames[0]
    with pytest.raises(EconsgError, match="depth map is 8x6 pixels, expected 16x12"):
        frame.load_depth()


def test_replica_semantic_split_labels_depth(tmp_path, views):
    write_replica_semantic(tmp_path, views, class_names=["void", "floor", "wall", "sofa"])
    assert detect_format(tmp_path) == "replica_semantic"
    source = read_scene(tmp_path)
    assert [(f.name, f.split) for f in source.frames] == [("rgb_0", "train"), ("rgb_2", "test"), ("rgb_5", "train"), ("rgb_7", "test")]
    assert source.class_names == ["floor", "wall", "sofa"]  # void (raw 0) is no class: never a vocabulary word
    assert_poses(source, views, [0, 2, 5, 7])
    frame = source.frames[3]
    np.testing.assert_array_equal(frame.load_classes(), np.where(views.labels[7] >= 0, views.labels[7], -1))  # raw - 1
    np.testing.assert_allclose(frame.load_depth(), views.depth[7], atol=1e-3)
    height, width = views.shape
    np.testing.assert_allclose(frame.K, [[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]])


def test_replica_semantic_without_a_class_list_and_unknown_ids(tmp_path, views):
    """Without classes.txt the names were class_1 .. class_N, N the largest id in any label map (held-out frames'
    included): ground truth sized the training vocabulary."""
    write_replica_semantic(tmp_path / "a", views)
    with pytest.raises(EconsgError, match=r"a/classes\.txt: missing; expected the class list of .*semantic_class's ids"):
        read_scene(tmp_path / "a")
    write_replica_semantic(tmp_path / "b", views, class_names=["void", "floor"])
    with pytest.raises(EconsgError, match=r"semantic_class_0\.png: label ids \[2, 3\] are not in the class list"):
        read_scene(tmp_path / "b").frames[0].load_classes()


def test_replica_semantic_refuses_a_camera_file_of_other_images(tmp_path, views):
    """NICE-SLAM's cam_params.json (1200x680) copied beside Semantic-NeRF's renders would set their intrinsics."""
    import json

    write_replica_semantic(tmp_path, views, class_names=["void", "floor", "wall", "sofa"])
    camera = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}
    (tmp_path / "cam_params.json").write_text(json.dumps({"camera": camera}))
    height, width = views.shape
    with pytest.raises(EconsgError, match=rf"rgb_0\.png: image is {width}x{height} pixels, the camera .*cam_params.json"):
        read_scene(tmp_path)


def test_replica_semantic_camera_file_with_another_depth_scale_is_used_and_named(tmp_path, views, capsys):
    import json

    write_replica_semantic(tmp_path, views, class_names=["void", "floor", "wall", "sofa"])
    (height, width), K = views.shape, views.K
    camera = {"w": width, "h": height, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2] - 0.5, "cy": K[1, 2] - 0.5}
    (tmp_path / "cam_params.json").write_text(json.dumps({"camera": {**camera, "scale": 6553.5}}))
    frame = read_scene(tmp_path).frames[0]  # rgb_0
    assert "sets the depth scale to 6553.5 units per metre" in capsys.readouterr().err
    np.testing.assert_allclose(frame.load_depth(), views.depth[0] * 1000 / 6553.5, atol=1e-3)  # the file's scale, as asked
    (tmp_path / "cam_params.json").write_text(json.dumps({"camera": {**camera, "scale": 0}}))
    with pytest.raises(EconsgError, match=r"cam_params.json: camera.scale is 0.0; expected depth units per metre"):
        read_scene(tmp_path)


# ---- image files ------------------------------------------------------------------------------------


def test_images_of_16_bits_or_a_transparent_palette_load_as_they_look(tmp_path):
    from PIL import Image

    from econsg.scene.readers.imageio import load_rgb

    Image.fromarray(np.full((3, 4), 30000, np.uint16)).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    np.testing.assert_allclose(load_rgb(tmp_path / "grey16.png"), 30000 / 65535, rtol=1e-6)
    palette = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), mode="P")
    palette.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)  # entry 0 (green) transparent
    rgb = load_rgb(tmp_path / "palette.png")
    np.testing.assert_allclose(rgb[0, 0], [0, 0, 0])  # transparent: composited on black, the renderer's background
    np.testing.assert_allclose(rgb[0, 1], [1, 0, 0])


def test_a_depth_or_instance_image_with_colour_channels_is_refused_naming_it(tmp_path):
    from PIL import Image

    from econsg.scene.readers.imageio import load_depth_png, load_instance_png

    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(EconsgError, match=r"rgb\.png: depth map has shape \(3, 4, 3\), expected a single-channel"):
        load_depth_png(tmp_path / "rgb.png", 1000.0, (3, 4))
    with pytest.raises(EconsgError, match=r"rgb\.png: instance image has shape \(3, 4, 3\), expected a single-channel"):
        load_instance_png(tmp_path / "rgb.png", (3, 4))


# ---- ScanNet ----------------------------------------------------------------------------------------


def test_scannet_poses_depth_registration_and_nyu40(tmp_path, views):
    write_scannet(tmp_path, views)
    assert detect_format(tmp_path) == "scannet"
    source = read_scene(tmp_path)
    assert_poses(source, views, range(9))
    np.testing.assert_allclose(source.frames[0].K, views.K, atol=1e-9)
    depth = source.frames[4].load_depth()  # stored at half resolution, registered to colour
    assert depth.shape == views.shape
    np.testing.assert_allclose(depth, PLANE_Z - views.c2w[4, 2, 3], atol=1e-3)
    classes = source.frames[4].load_classes()
    expected = np.choose(np.maximum(views.labels[4], 0), [4, 0, 13])  # chair, wall, desk (nyu40 id - 1)
    np.testing.assert_array_equal(classes, np.where(views.labels[4] >= 0, expected, -1))
    assert source.class_names[4] == "chair" and len(source.class_names) == 40


def test_scannet_skips_invalid_pose_and_refuses_bad_input(tmp_path, views, capsys):
    from econsg.scene.ingest import write_scene

    root = write_scannet(tmp_path / "a", views)
    np.savetxt(root / "pose" / "3.txt", np.full((4, 4), -np.inf))
    frames = read_scene(root).frames
    assert [f.name for f in frames] == ["0", "1", "2", "4", "5", "6", "7", "8"]
    assert [f.name for f in frames if f.split == "test"] == ["0", "8"]  # the skipped frame moves no other
    warning = capsys.readouterr().err
    assert "1 of 9 frames of" in warning and "tracking failure): frames 3" in warning
    save_uint16(root / "label-filt" / "5.png", np.full(views.shape, 99))
    with pytest.raises(EconsgError, match=r"5\.png: label ids \[99\] are not in the mapping"):
        read_scene(root).frames[4].load_classes()

    root = write_scannet(tmp_path / "b", views, label_table=False)
    with pytest.raises(EconsgError, match="scannetv2-labels.combined.tsv: missing"):
        read_scene(root)

    root = write_scannet(tmp_path / "c", views, depth_intrinsics=False)
    with pytest.raises(EconsgError, match="depth map is 8x6 pixels, colour is 16x12.*intrinsic_depth.txt"):
        read_scene(root).frames[0].load_depth()

    # intrinsics of twice the image size (full-resolution files beside shrunk exports) are refused, by name
    root = write_scannet(tmp_path / "d", views)
    for name in ("color", "depth"):
        path = root / "intrinsic" / f"intrinsic_{name}.txt"
        matrix = np.loadtxt(path)
        matrix[:2, :3] *= 2
        np.savetxt(path, matrix)
    source = read_scene(root)
    with pytest.raises(EconsgError, match=r"0\.png \(with intrinsic/intrinsic_depth\.txt\): principal point .* 8x6 image"):
        source.frames[0].load_depth()
    with pytest.raises(EconsgError, match=r"1\.jpg: principal point \(15\.5, 11\.5\) is far from the centre of the 16x12 image"):
        write_scene(source, tmp_path / "scene.zarr", params={}, downscale=1, sparse_views=None, max_init_points=100,
                    init_voxel_size=0.1, rng=np.random.default_rng(0))

    # a skewed matrix: fuse back-projects through all of K, the rasterizers read fx, fy, cx, cy only
    root = write_scannet(tmp_path / "e", views)
    path = root / "intrinsic" / "intrinsic_color.txt"
    matrix = np.loadtxt(path)
    matrix[0, 1] = 5.0
    np.savetxt(path, matrix)
    with pytest.raises(EconsgError, match=r"intrinsic_color\.txt: intrinsics .* have skew or a last row other than"):
        read_scene(root)


# ---- 3D-OVS -----------------------------------------------------------------------------------------


def test_ovs3d_llff_poses_sorted_classes_and_masks(tmp_path, views):
    names = ["sofa", "banana", "cup"]
    write_ovs3d(tmp_path, views, names)
    assert detect_format(tmp_path) == "ovs3d"
    source = read_scene(tmp_path)
    assert source.class_names == ["banana", "cup", "sofa"]
    assert_poses(source, views, range(9))
    np.testing.assert_allclose(source.frames[2].K, [[20, 0, 8], [0, 20, 6], [0, 0, 1]])  # fx = fy = focal, centre
    assert [f.split for f in source.frames] == ["test", "train", "train", "train", "test", "train", "train", "train", "train"]
    np.testing.assert_array_equal(source.frames[4].load_classes(), views.labels[4])
    assert source.frames[1].load_classes is None
    masks = load_class_masks(tmp_path / "segmentations" / "04", source.class_names, views.shape)
    np.testing.assert_array_equal(masks[2], views.labels[4] == 2)


def test_ovs3d_ingests_with_ground_truth_on_its_segmented_test_views_only(tmp_path, views):
    from econsg.scene.ingest import write_scene
    from econsg.scene.store import open_ground_truth, open_scene

    root = write_ovs3d(tmp_path / "ovs", views, ["sofa", "banana", "cup"])
    write_colmap(tmp_path / "model", views, points=np.array([[0, 0, 3.0], [1, -1, 2.5], [0.5, 0.5, 3]]))
    (tmp_path / "model" / "sparse").rename(root / "sparse")
    options = dict(params={}, downscale=1, sparse_views=None, max_init_points=100, init_voxel_size=0.1,
                   rng=np.random.default_rng(0))
    path = write_scene(read_scene(root), tmp_path / "scene.zarr", **options)
    scene, truth = open_scene(path), open_ground_truth(path)
    test_views = np.flatnonzero(~scene.is_train)
    assert [scene.names[v] for v in test_views] == ["000", "004"]
    np.testing.assert_array_equal(truth.classes(int(test_views[1])), views.labels[4])
    assert (truth.classes(0) == -1).all()  # a training view: unlabelled, not class 0
    # ground truth on a held-out view missing (others have theirs) is still refused, by name
    source = read_scene(root)
    source.frames[4] = dataclasses.replace(source.frames[4], load_classes=None)
    with pytest.raises(EconsgError, match=r"004\.png: no label map on the held-out views, while 1 of the 2"):
        write_scene(source, tmp_path / "other.zarr", **options)


def test_ovs3d_errors(tmp_path, views):
    write_ovs3d(tmp_path / "a", views, ["a", "b", "c"], empty_segmentations=True)
    with pytest.raises(EconsgError, match="no <view>/ folders with class masks"):
        read_scene(tmp_path / "a", "ovs3d")
    root = write_ovs3d(tmp_path / "b", views, ["a", "b", "c"])
    (root / "segmentations" / "04" / "b.png").unlink()
    with pytest.raises(EconsgError, match=r"b\.png: mask of class 'b' is missing"):
        read_scene(root, "ovs3d").frames[4].load_classes()
    np.save(root / "poses_bounds.npy", np.zeros((3, 17)))
    with pytest.raises(EconsgError, match="3 poses for 9 images"):
        read_scene(root, "ovs3d")


# ---- LERF-OVS labels --------------------------------------------------------------------------------


def test_lerf_polygons_cover_the_pixels_their_shallow_edges_pass_through():
    from econsg.scene.readers.lerf import polygon_mask

    mask = polygon_mask((40, 40), [[10, 10], [30, 12], [20, 28]], "triangle")
    # the reference's cv2.fillPoly (LangSplat's polygon_to_mask) fills 198 pixels of this triangle: on row 10,
    # x 10-15 along its shallow top edge, on row 11 x 11-25. PIL's polygon fill gave 188, x 10 alone on row 10
    assert mask[10, 10:15].all() and mask[11, 11:25].all()
    assert abs(int(mask.sum()) - 198) <= 3 and not mask[:10].any() and not mask[29:].any()


def test_lerf_labels_merge_objects_of_one_category(tmp_path):
    square = [[2, 2], [5, 2], [5, 5], [2, 5]]
    other = [[10, 1], [12, 1], [12, 3], [10, 3]]
    objects = [
        {"category": "cup", "bbox": [2, 2, 5, 5], "segmentation": square},
        {"category": "plate", "bbox": [0, 8, 3, 9], "segmentation": [[0, 8], [3, 8], [3, 9], [0, 9]]},
        {"category": "cup", "bbox": [10, 1, 12, 3], "segmentation": other},
    ]
    write_lerf_frame(tmp_path / "frame_00003.json", "frame_00003.jpg", 12, 16, objects)
    frame = read_lerf_frame(tmp_path / "frame_00003.json")
    assert frame.index == 2 and [q.category for q in frame.queries] == ["cup", "plate"]
    cup = frame.queries[0]
    assert cup.boxes.tolist() == [[2, 2, 5, 5], [10, 1, 12, 3]]
    expected = np.zeros((12, 16), bool)
    expected[2:6, 2:6] = True
    expected[1:4, 10:13] = True
    np.testing.assert_array_equal(cup.mask, expected)
    assert len(read_lerf_labels(tmp_path)) == 1
    write_lerf_frame(tmp_path / "frame_00004.json", "frame_00004.jpg", 12, 16, [{"category": "x", "bbox": [0, 0, 1, 1]}])
    with pytest.raises(EconsgError, match=r"objects\[0\].*segmentation"):
        read_lerf_labels(tmp_path)
    with pytest.raises(EconsgError, match="no frame_"):
        read_lerf_labels(Path(tmp_path / "nothing"))
