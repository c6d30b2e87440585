"""Camera paths for fly-through renders: poses interpolated between key cameras of the scene.

Between two keys the rotation is slerped and the camera centre and intrinsics move linearly, so every
frame is a valid pinhole camera (OpenCV convention, like scene.zarr) and the keys themselves are frames.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from econsg.errors import EconsgError

ORTHONORMAL_TOLERANCE = 1e-3


def path_parameters(num_keys: int, frames_per_segment: int, loop: bool) -> np.ndarray:
    """[M] key-time of each frame: frame j sits at j / frames_per_segment (key i at time i).

    An open path ends on the last key, M = (K - 1) n + 1; a loop returns to the first key without repeating it, M = K n.
    """
    if num_keys < 2:
        raise EconsgError(f"camera path: got {num_keys} key camera(s), expected at least 2")
    if frames_per_segment < 1:
        raise EconsgError(f"camera path: frames per segment {frames_per_segment}, expected >= 1")
    segments = num_keys if loop else num_keys - 1
    count = segments * frames_per_segment + (0 if loop else 1)
    return np.arange(count) / frames_per_segment


def order_by_heading(c2w: np.ndarray) -> list[int]:
    """Key cameras c2w [K,4,4] (OpenCV) in order of their heading: the azimuth of each viewing direction about the
    cameras' mean up direction, starting from the first camera's. A path through held-out views in index order can
    swing back and forth across the scene (the demo's turned 125 degrees between keys); in heading order it pans."""
    c2w = np.asarray(c2w, np.float64)
    up = -c2w[:, :3, 1].mean(axis=0)  # OpenCV: image y points down
    up /= max(np.linalg.norm(up), 1e-12)
    forward = c2w[:, :3, 2]
    east = np.cross(up, forward[0])
    if np.linalg.norm(east) < 1e-6:  # the first camera looks along up: any horizontal axis will do
        east = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(east, up)
    heading = np.arctan2(forward @ east, forward @ north)
    return [int(i) for i in np.argsort(np.mod(heading - heading[0], 2 * np.pi), kind="stable")]


def interpolate_cameras(c2w: np.ndarray, Ks: np.ndarray, frames_per_segment: int, loop: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Key cameras c2w [K,4,4] (camera-to-world), Ks [K,3,3] -> the path's (c2w [M,4,4], Ks [M,3,3]), float64."""
    c2w = np.asarray(c2w, np.float64)
    Ks = np.asarray(Ks, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or Ks.shape != (len(c2w), 3, 3):
        raise EconsgError(f"camera path: got c2w {c2w.shape} and Ks {Ks.shape}, expected [K,4,4] and [K,3,3]")
    R = c2w[:, :3, :3]
    error = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    improper = (error > ORTHONORMAL_TOLERANCE) | (np.linalg.det(R) < 0)
    if improper.any():
        bad = int(np.argmax(improper))
        raise EconsgError(f"camera path: key {bad}'s rotation is not a proper rotation (R R^T - I up to {error[bad]:.2g})")
    times = path_parameters(len(c2w), frames_per_segment, loop)
    if loop:
        c2w = np.concatenate([c2w, c2w[:1]])
        Ks = np.concatenate([Ks, Ks[:1]])
    out = np.tile(np.eye(4), (len(times), 1, 1))
    out[:, :3, :3] = Slerp(np.arange(len(c2w)), Rotation.from_matrix(c2w[:, :3, :3]))(times).as_matrix()
    lower = np.minimum(np.floor(times).astype(int), len(c2w) - 2)
    weight = (times - lower)[:, None]
    out[:, :3, 3] = (1 - weight) * c2w[lower, :3, 3] + weight * c2w[lower + 1, :3, 3]
    path_Ks = (1 - weight[:, :, None]) * Ks[lower] + weight[:, :, None] * Ks[lower + 1]
    return out, path_Ks
