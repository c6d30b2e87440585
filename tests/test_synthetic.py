"""The procedural room: analytic ray-caster cases, layout invariants, determinism and the written dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from econsg.config.synth import SynthParams
from econsg.errors import EconsgError
from econsg.scene import synthetic
from econsg.scene.synthetic import (
    DEFAULT_OBJECT_CLASSES,
    STRUCTURE_CLASSES,
    Primitive,
    Room,
    build_synthetic_scene,
    camera_rays,
    camera_trajectory,
    footprint_corners,
    footprints_overlap,
    generate_room,
    held_out_view_mask,
    intrinsics_from_fov,
    look_at,
    ray_cast,
    write_synthetic_dataset,
)

FLAT = ((0.0, 0.0, 1.0, 0.0, 1.0),)  # a pattern wave with zero wave vector: sin(0) = 0, no texture


def _solid(kind, center, half_size, instance_id=1, yaw=0.0, normal=(0.0, 0.0, 0.0)) -> Primitive:
    return Primitive(kind, center, half_size, 0, instance_id, (0.5, 0.5, 0.5), FLAT, (0.0, 0.0, 0.0), yaw=yaw, normal=normal)


def _single(primitive: Primitive) -> Room:
    return Room(size=(10.0, 10.0, 10.0), class_names=("thing",), primitives=(primitive,), objects=())


def _odd_camera(width=31, height=21, fov=60.0):
    """A camera at the origin looking along world +x; odd sizes put a pixel centre on the optical axis."""
    K = intrinsics_from_fov(width, height, fov)
    c2w = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    return K, c2w, width, height


@pytest.fixture(scope="module")
def default_room() -> Room:
    return generate_room(np.random.default_rng(0), 6)


# ---------------------------------------------------------------------------------------------- ray caster


def test_wall_facing_the_camera_has_constant_z_depth():
    room = generate_room(np.random.default_rng(3), 0)
    lx, _, lz = room.size
    K = intrinsics_from_fov(40, 30, 60.0)
    c2w = look_at((0.0, 0.0, 0.5 * lz), (1.0, 0.0, 0.5 * lz))
    result = ray_cast(room, K, c2w, 40, 30)
    # The +x wall is instance 2 and faces the camera squarely: z-depth is lx/2 on every one of its pixels.
    wall = result.instance_id == synthetic.WALL_INSTANCES[1]
    assert wall.sum() > 0.5 * wall.size
    np.testing.assert_allclose(result.depth[wall], lx / 2, atol=1e-5)
    assert set(np.unique(result.class_id[wall])) == {room.class_names.index("wall")}


def test_depth_is_z_depth_not_ray_length():
    room = generate_room(np.random.default_rng(3), 0)
    lx, _, lz = room.size
    K = intrinsics_from_fov(40, 30, 60.0)
    c2w = look_at((0.0, 0.0, 0.5 * lz), (1.0, 0.0, 0.5 * lz))
    depth = ray_cast(room, K, c2w, 40, 30).depth
    # Corner pixel (0, 0): its ray has camera direction ((0.5 - cx)/fx, (0.5 - cy)/fy, 1).
    direction = np.array([(0.5 - K[0, 2]) / K[0, 0], (0.5 - K[1, 2]) / K[1, 1], 1.0])
    ray_length = (lx / 2) * np.linalg.norm(direction)
    assert depth[0, 0] == pytest.approx(lx / 2, abs=1e-5)
    assert ray_length > depth[0, 0] + 0.3


def test_camera_rays_go_through_pixel_centres():
    K, c2w, width, height = _odd_camera()
    origin, dirs = camera_rays(K, c2w, width, height)
    # Project the ray points at z-depth 1 back with K: they must land on (j + 0.5, i + 0.5).
    cam = (np.linalg.inv(c2w)[:3, :3] @ dirs.T).T
    np.testing.assert_allclose(cam[:, 2], 1.0, atol=1e-12)
    pixels = (K @ cam.T).T
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    np.testing.assert_allclose(pixels[:, 0], jj.ravel(), atol=1e-9)
    np.testing.assert_allclose(pixels[:, 1], ii.ravel(), atol=1e-9)
    np.testing.assert_allclose(origin, 0.0)


def test_sphere_silhouette_and_centre_depth():
    distance, radius = 3.0, 0.6
    room = _single(_solid("sphere", (distance, 0.0, 0.0), (radius,) * 3))
    K, c2w, width, height = _odd_camera()
    result = ray_cast(room, K, c2w, width, height)
    centre_i, centre_j = height // 2, width // 2
    assert result.depth[centre_i, centre_j] == pytest.approx(distance - radius, abs=1e-6)
    # Analytic silhouette: a ray hits when its angle to the centre direction is below asin(r / d).
    _, dirs = camera_rays(K, c2w, width, height)
    angle = np.arccos(dirs[:, 0] / np.linalg.norm(dirs, axis=1)).reshape(height, width)
    limit = math.asin(radius / distance)
    hit = result.instance_id > 0
    clear = np.abs(angle - limit) > 1e-6
    np.testing.assert_array_equal(hit[clear], (angle < limit)[clear])
    rows, cols = np.nonzero(hit)
    assert rows.mean() == pytest.approx(centre_i, abs=1e-9)
    assert cols.mean() == pytest.approx(centre_j, abs=1e-9)
    assert np.all(result.depth[~hit] == 0) and np.all(result.class_id[~hit] == -1)


@pytest.mark.parametrize("yaw, expected", [(0.0, 2.5), (math.pi / 4, 3.0 - 0.5 * math.sqrt(2.0))])
def test_box_face_and_edge_depth(yaw, expected):
    room = _single(_solid("box", (3.0, 0.0, 0.0), (0.5, 0.5, 0.5), yaw=yaw))
    K, c2w, width, height = _odd_camera()
    result = ray_cast(room, K, c2w, width, height)
    assert result.depth[height // 2, width // 2] == pytest.approx(expected, abs=1e-6)
    if yaw == 0.0:  # the front face is perpendicular to the optical axis: one z-depth over the whole face
        np.testing.assert_allclose(result.depth[result.instance_id > 0], 2.5, atol=1e-6)


def test_cylinder_side_and_cap_depth():
    room = _single(_solid("cylinder", (3.0, 0.0, 0.0), (0.5, 0.5, 0.4)))
    K, c2w, width, height = _odd_camera()
    side = ray_cast(room, K, c2w, width, height)
    assert side.depth[height // 2, width // 2] == pytest.approx(2.5, abs=1e-6)
    # Looking straight down from 2 m above the centre: the top cap (z = 0.4) is a plane at z-depth 1.6.
    down = np.eye(4)
    down[:3, :3] = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).T
    down[:3, 3] = (3.0, 0.0, 2.0)
    assert np.linalg.det(down[:3, :3]) == pytest.approx(1.0)
    top = ray_cast(room, K, down, width, height)
    cap = top.instance_id > 0
    assert cap[height // 2, width // 2]
    np.testing.assert_allclose(top.depth[cap], 1.6, atol=1e-6)


def test_ray_cast_rejects_bad_camera():
    room = _single(_solid("sphere", (3.0, 0.0, 0.0), (0.5,) * 3))
    with pytest.raises(EconsgError, match="c2w"):
        ray_cast(room, np.eye(3), np.eye(3), 4, 4)
    with pytest.raises(EconsgError, match="K"):
        ray_cast(room, np.zeros((3, 3)), np.eye(4), 4, 4)


# ---------------------------------------------------------------------------------------------- room layout


def test_class_list_and_instances_are_consistent(default_room):
    room = default_room
    assert room.class_names == (*STRUCTURE_CLASSES, *DEFAULT_OBJECT_CLASSES)
    mapping = room.instance_classes()
    assert len({obj.class_name for obj in room.objects}) == 6  # distinct classes while possible
    Ks, c2ws = camera_trajectory(np.random.default_rng(1), room, 6, 32, 24, 70.0)
    for K, c2w in zip(Ks, c2ws):
        result = ray_cast(room, K, c2w, 32, 24)
        assert np.all(result.depth > 0) and np.all(result.instance_id > 0)  # the room is closed
        for instance in np.unique(result.instance_id):
            classes = np.unique(result.class_id[result.instance_id == instance])
            assert classes.tolist() == [mapping[int(instance)]]


def test_classes_repeat_only_after_all_are_used():
    room = generate_room(np.random.default_rng(5), 6, ("chair", "lamp", "plant"), room_size=(8.0, 8.0, 3.0))
    names = [obj.class_name for obj in room.objects]
    assert sorted(names) == ["chair", "chair", "lamp", "lamp", "plant", "plant"]
    assert room.class_names == (*STRUCTURE_CLASSES, "chair", "lamp", "plant")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objects_stand_inside_the_room_without_overlap(seed):
    # 9 objects in a 7 x 6 m room: every class appears, so every recipe is checked.
    room = generate_room(np.random.default_rng(seed), 9, room_size=(7.0, 6.0, 2.8))
    lx, ly, lz = room.size
    # Reference twin of the separating-axis test: a 2 cm grid, no point inside two footprints.
    xs, ys = np.meshgrid(np.arange(-lx / 2, lx / 2, 0.02), np.arange(-ly / 2, ly / 2, 0.02))
    owners = np.zeros(xs.shape, dtype=int)
    for obj in room.objects:
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        dx, dy = xs - obj.center_xy[0], ys - obj.center_xy[1]
        inside = (np.abs(c * dx + s * dy) <= obj.half_extent[0]) & (np.abs(-s * dx + c * dy) <= obj.half_extent[1])
        owners += inside
        corners = footprint_corners(obj.center_xy, obj.half_extent, obj.yaw)
        assert np.all(np.abs(corners[:, 0]) < lx / 2) and np.all(np.abs(corners[:, 1]) < ly / 2)
    assert owners.max() <= 1
    for obj in room.objects:
        parts = [p for p in room.primitives if p.instance_id == obj.instance_id]
        assert min(p.center[2] - p.half_size[2] for p in parts) == pytest.approx(0.0, abs=1e-9)  # on the floor
        assert max(p.center[2] + p.half_size[2] for p in parts) < lz
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        for part in parts:  # every part lies within its object's footprint, which lies inside the walls
            if part.kind == "box":
                points = footprint_corners(part.center[:2], part.half_size[:2], part.yaw)
            else:
                angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                points = np.asarray(part.center[:2]) + part.half_size[0] * np.stack([np.cos(angles), np.sin(angles)], 1)
            dx, dy = points[:, 0] - obj.center_xy[0], points[:, 1] - obj.center_xy[1]
            assert np.all(np.abs(c * dx + s * dy) <= obj.half_extent[0] + 1e-9), (obj.class_name, part)
            assert np.all(np.abs(-s * dx + c * dy) <= obj.half_extent[1] + 1e-9), (obj.class_name, part)


def test_footprint_overlap_known_cases():
    assert footprints_overlap((0, 0), (1, 1), 0.0, (1.9, 0), (1, 1), 0.0)
    assert not footprints_overlap((0, 0), (1, 1), 0.0, (2.1, 0), (1, 1), 0.0)
    assert footprints_overlap((0, 0), (1, 1), 0.0, (2.1, 0), (1, 1), 0.0, gap=0.2)
    # A square turned 45 degrees reaches sqrt(2) along x: touches at 1 + sqrt(2).
    assert footprints_overlap((0, 0), (1, 1), 0.0, (2.4, 0), (1, 1), math.pi / 4)
    assert not footprints_overlap((0, 0), (1, 1), 0.0, (2.42, 0), (1, 1), math.pi / 4)
    # Diagonal neighbours whose bounding boxes overlap but the rotated rectangles do not.
    assert not footprints_overlap((0, 0), (1.0, 0.1), math.pi / 4, (0.6, -0.6), (1.0, 0.1), math.pi / 4)


def test_same_seed_same_scene_other_seed_other_room():
    first = generate_room(np.random.default_rng(11), 5)
    again = generate_room(np.random.default_rng(11), 5)
    other = generate_room(np.random.default_rng(12), 5)
    assert first == again
    assert first != other
    Ks, c2ws = camera_trajectory(np.random.default_rng(4), first, 3, 24, 16, 70.0)
    Ks2, c2ws2 = camera_trajectory(np.random.default_rng(4), again, 3, 24, 16, 70.0)
    np.testing.assert_array_equal(c2ws, c2ws2)
    a = ray_cast(first, Ks[1], c2ws[1], 24, 16)
    b = ray_cast(again, Ks2[1], c2ws2[1], 24, 16)
    for name in ("rgb", "depth", "class_id", "instance_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_generate_room_refuses_bad_arguments():
    with pytest.raises(EconsgError, match="num_objects"):
        generate_room(np.random.default_rng(0), 50)
    with pytest.raises(EconsgError, match="object_classes.*empty"):
        generate_room(np.random.default_rng(0), 2, [])
    with pytest.raises(EconsgError, match="unicorn"):
        generate_room(np.random.default_rng(0), 2, ["chair", "unicorn"])
    with pytest.raises(EconsgError, match="room_size"):
        generate_room(np.random.default_rng(0), 2, room_size=(1.0, 4.0, 2.5))
    with pytest.raises(EconsgError, match="rng"):
        generate_room(0, 2)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- cameras


def test_trajectory_poses_are_rigid_inside_the_room_and_see_every_object(default_room):
    room = default_room
    width, height = 64, 48
    Ks, c2ws = camera_trajectory(np.random.default_rng(2), room, 48, width, height, 70.0)
    assert Ks.shape == (48, 3, 3) and c2ws.shape == (48, 4, 4)
    rotations = c2ws[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (48, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    lx, ly, lz = room.size
    positions = c2ws[:, :3, 3]
    assert np.all(np.abs(positions[:, 0]) < lx / 2) and np.all(np.abs(positions[:, 1]) < ly / 2)
    assert np.all((positions[:, 2] > 0) & (positions[:, 2] < lz))
    assert np.ptp(positions[:, 2]) > 0.5  # two rings at different heights
    assert np.all(rotations[:, 2, 1] < 0)  # image "down" points down in the world: no upside-down views
    seen = {obj.instance_id: 0 for obj in room.objects}
    for K, c2w in zip(Ks, c2ws):
        counts = np.bincount(ray_cast(room, K, c2w, width, height).instance_id.ravel(), minlength=64)
        for instance in seen:
            seen[instance] += counts[instance] >= 20
    assert min(seen.values()) >= 5, seen


def test_held_out_views_are_interleaved():
    mask = held_out_view_mask(48, 8)
    assert np.flatnonzero(mask).tolist() == [7, 15, 23, 31, 39, 47]


# ---------------------------------------------------------------------------------------------- appearance


def test_textures_vary_smoothly_within_an_object(default_room):
    room = default_room
    Ks, c2ws = camera_trajectory(np.random.default_rng(2), room, 2, 64, 48, 70.0)
    result = ray_cast(room, Ks[0], c2ws[0], 64, 48)
    floor = result.instance_id == synthetic.FLOOR_INSTANCE
    assert floor.sum() > 100
    assert result.rgb[floor].std(axis=0).max() > 0.02  # a pattern, not a flat label colour
    same = (result.instance_id[:, 1:] == result.instance_id[:, :-1]) & floor[:, 1:]
    step = np.abs(result.rgb[:, 1:] - result.rgb[:, :-1]).max(axis=-1)[same]
    assert np.median(step) < 0.02  # low frequency: neighbouring pixels of one surface barely differ
    assert result.rgb.dtype == np.float32 and result.rgb.min() >= 0 and result.rgb.max() <= 1


# ---------------------------------------------------------------------------------------------- dataset


def _small_params(**overrides) -> SynthParams:
    values = dict(seed=3, num_views=4, test_every=2, width=24, height=16, num_objects=2)
    values.update(overrides)
    return SynthParams(**values)


def test_written_dataset_round_trips(tmp_path):
    params = _small_params()
    out = write_synthetic_dataset(tmp_path / "room", params, progress=False)
    room, Ks, c2ws = build_synthetic_scene(params)
    assert (out / "classes.txt").read_text().splitlines() == list(room.class_names)
    provenance = json.loads((out / "scene.json").read_text())["econsg"]
    assert provenance["params"] == params.model_dump(mode="json")
    test_views = np.flatnonzero(held_out_view_mask(params.num_views, params.test_every)).tolist()
    names = {}
    for split in ("train", "test"):
        meta = json.loads((out / f"transforms_{split}.json").read_text())
        assert (meta["w"], meta["h"], meta["camera_model"]) == (24, 16, "PINHOLE")
        for frame in meta["frames"]:
            view = int(Path(frame["file_path"]).stem.split("_")[1])
            names[view] = split
            K = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]])
            np.testing.assert_allclose(K, Ks[view], rtol=1e-15)
            c2w_opencv = np.array(frame["transform_matrix"]) @ np.diag([1.0, -1.0, -1.0, 1.0])
            np.testing.assert_array_equal(c2w_opencv, c2ws[view])
            truth = ray_cast(room, Ks[view], c2ws[view], 24, 16)
            rgb = np.asarray(Image.open(out / frame["file_path"]), dtype=np.float32) / 255
            np.testing.assert_allclose(rgb, truth.rgb, atol=0.5 / 255 + 1e-6)
            depth = np.asarray(Image.open(out / frame["depth_file_path"])).astype(np.float64) / meta["depth_scale"]
            np.testing.assert_allclose(depth, truth.depth, atol=1e-3)
            np.testing.assert_array_equal(np.asarray(Image.open(out / frame["semantic_file_path"])), truth.class_id)
            np.testing.assert_array_equal(np.asarray(Image.open(out / frame["instance_file_path"])), truth.instance_id)
    assert sorted(names) == list(range(params.num_views))
    assert sorted(v for v, split in names.items() if split == "test") == test_views


def test_failed_write_leaves_the_previous_dataset_intact(tmp_path, monkeypatch):
    out = tmp_path / "room"
    write_synthetic_dataset(out, _small_params(), progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []

    def failing_png(array, path):
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full")
        Image.fromarray(array).save(path)

    monkeypatch.setattr(synthetic, "_write_png", failing_png)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_dataset(out, _small_params(seed=4), progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room"]  # no staging folder left behind


def test_what_a_killed_synth_left_is_removed_by_the_next_run(tmp_path):
    """A SIGKILL mid-render left its staging folder beside the dataset, and nothing ever removed it."""
    import subprocess
    import sys

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (tmp_path / f".room.tmp-{gone}" / "images").mkdir(parents=True)  # a killed run's half-written dataset
    write_synthetic_dataset(tmp_path / "room", _small_params(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room"]


def test_rewrite_replaces_the_previous_dataset(tmp_path):
    out = tmp_path / "room"
    write_synthetic_dataset(out, _small_params(), progress=False)
    (out / "stale.txt").write_text("old")
    write_synthetic_dataset(out, _small_params(seed=5), progress=False)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "scene.json").read_text())["econsg"]["params"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room"]


def test_a_folder_synth_did_not_write_is_refused_before_any_rendering(tmp_path, monkeypatch):
    """synth replaces the whole paths.data folder: one holding a dataset of the user's (no synth scene.json) must
    stay, and an empty one is fine."""
    mine = tmp_path / "mydata"
    (mine / "replica_room0").mkdir(parents=True)
    (mine / "replica_room0" / "notes.txt").write_text("keep me")
    monkeypatch.setattr(synthetic, "_write_png", lambda array, path: pytest.fail("rendered before refusing"))
    with pytest.raises(EconsgError, match=r"mydata: holds files but no scene.json of an earlier synth run"):
        write_synthetic_dataset(mine, _small_params(), progress=False)
    assert (mine / "replica_room0" / "notes.txt").read_text() == "keep me"
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    assert (write_synthetic_dataset(tmp_path / "empty", _small_params(), progress=False) / "scene.json").is_file()


# ---------------------------------------------------------------------------------------------- params


def test_params_defaults_are_the_demo():
    params = SynthParams()
    assert (params.num_views, params.width, params.height, params.num_objects) == (48, 256, 192, 6)
    assert params.object_classes == DEFAULT_OBJECT_CLASSES
    for name, field in SynthParams.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"object_classes": []}, "class list is empty"),
        ({"object_classes": ["chair", "chair"]}, "more than once"),
        ({"object_classes": ["chair", "dragon"]}, "dragon"),
        ({"test_every": 60}, "no view would be held out"),
        ({"test_every": 1}, r"test_every\n.*greater than or equal to 2"),
        ({"num_objects": 12}, r"num_objects \(12\) exceeds what a room of .* holds \(\d+\); use fewer objects"),
        ({"room_size": (6.0, 2.0, 2.8)}, r"room_size: y = 2.0 m is outside \[4.5, 20.0\]"),
        ({"fov_deg": 170.0}, r"fov_deg\n.*less than 140"),
        ({"colour": "red"}, r"colour\n.*Extra inputs are not permitted"),
    ],
)
def test_params_refuse_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        SynthParams(**overrides)
