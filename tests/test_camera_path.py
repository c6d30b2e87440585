"""Camera paths between key views: keys are frames, rotations stay rotations, motion is even."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from econsg.errors import EconsgError
from econsg.camera_path import interpolate_cameras, key_order, order_by_heading, path_parameters


def pose(axis_angle, centre) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_rotvec(axis_angle).as_matrix()
    c2w[:3, 3] = centre
    return c2w


def intrinsics(focal: float) -> np.ndarray:
    return np.array([[focal, 0, 64], [0, focal, 48], [0, 0, 1.0]])


KEYS = np.stack([pose([0, 0, 0], [0, 0, 0]), pose([0, np.pi / 2, 0], [2, 0, 0]), pose([0.3, 0.2, -0.4], [2, 1, -1])])
KS = np.stack([intrinsics(100), intrinsics(120), intrinsics(90)])


@pytest.mark.parametrize("loop", [False, True])
def test_every_key_is_a_frame_and_the_count_follows_the_segments(loop):
    n = 5
    c2w, Ks = interpolate_cameras(KEYS, KS, n, loop)
    assert len(c2w) == len(Ks) == (3 * n if loop else 2 * n + 1)
    for i in range(3):
        np.testing.assert_allclose(c2w[i * n], KEYS[i], atol=1e-12)
        np.testing.assert_allclose(Ks[i * n], KS[i], atol=1e-12)
    if loop:  # the last frame is one step short of the first key, not a copy of it
        assert not np.allclose(c2w[-1], KEYS[0])


def test_frames_are_proper_rotations_moving_evenly_between_keys():
    c2w, Ks = interpolate_cameras(KEYS[:2], KS[:2], 4)
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    angles = Rotation.from_matrix(R).magnitude()  # about y, from 0 to 90 degrees in equal steps
    np.testing.assert_allclose(angles, np.linspace(0, np.pi / 2, 5), atol=1e-9)
    np.testing.assert_allclose(c2w[:, 0, 3], np.linspace(0, 2, 5), atol=1e-12)
    np.testing.assert_allclose(Ks[:, 0, 0], np.linspace(100, 120, 5), atol=1e-12)
    np.testing.assert_array_equal(c2w[:, 3], np.broadcast_to([0, 0, 0, 1.0], (5, 4)))


def test_path_parameters_count_key_times():
    np.testing.assert_allclose(path_parameters(3, 2, loop=False), [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(path_parameters(2, 2, loop=True), [0, 0.5, 1, 1.5])


def test_bad_keys_are_refused_with_what_was_expected():
    with pytest.raises(EconsgError, match="at least 2"):
        interpolate_cameras(KEYS[:1], KS[:1], 4)
    with pytest.raises(EconsgError, match="expected >= 1"):
        interpolate_cameras(KEYS, KS, 0)
    scaled = KEYS.copy()
    scaled[1, :3, :3] *= 2.0
    with pytest.raises(EconsgError, match="key 1's rotation is not a proper rotation"):
        interpolate_cameras(scaled, KS, 4)
    with pytest.raises(EconsgError, match=r"expected \[K,4,4\] and \[K,3,3\]"):
        interpolate_cameras(KEYS, KS[:2], 4)


def test_keys_in_order_of_heading_pan_instead_of_swinging_back_and_forth():
    """Six cameras looking out from a room's middle, listed as 0, 180, 60, 240, 120, 300 degrees: in that order the
    path turns 180 or 120 degrees between keys; in order of heading 60 each."""
    headings = np.radians([0, 180, 60, 240, 120, 300])
    keys = np.stack([pose([0, h, 0], [0.1 * i, 0, 0]) for i, h in enumerate(headings)])

    def turns(order):
        R = keys[order][:, :3, :3]
        return [np.degrees(Rotation.from_matrix(R[i].T @ R[i + 1]).magnitude()) for i in range(len(R) - 1)]

    order = order_by_heading(keys)
    assert order[0] == 0 and sorted(order) == list(range(6))
    np.testing.assert_allclose(turns(order), [60] * 5, atol=1e-9)
    assert max(turns(list(range(6)))) > 100
    assert key_order(keys) == order  # the shorter path of the two


def yawed(yaw_degrees, centres) -> np.ndarray:
    return np.stack([pose([0, np.radians(y), 0], c) for y, c in zip(yaw_degrees, centres)])


def test_an_arc_listed_from_its_middle_is_swept_from_one_end_once():
    keys = yawed([0, -20, 20], [[0, 0, 0]] * 3)
    order = order_by_heading(keys)
    yaws = np.degrees(Rotation.from_matrix(keys[order][:, :3, :3]).as_rotvec()[:, 1])
    np.testing.assert_allclose(np.abs(np.diff(yaws)), [20, 20], atol=1e-9)
    assert key_order(keys) == order


@pytest.mark.parametrize("yaw, step", [([0.3, -0.5, 0.8, -0.2, 0.6, -0.9], 0.2),  # a forward-facing rig (LLFF, 3D-OVS)
                                       ([10, -30, 25, -5, 40, -35, 0, 20], 0.5)])  # a walk through a room, looking about
def test_a_rig_or_a_walk_keeps_its_listed_order_where_headings_would_zigzag(yaw, step):
    keys = yawed(yaw, [[step * i, 0, 0] for i in range(len(yaw))])
    assert order_by_heading(keys) != list(range(len(yaw)))  # headings alone would send the camera back and forth
    assert key_order(keys) == list(range(len(yaw)))
