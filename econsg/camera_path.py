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
    cameras' mean up direction, starting after the widest gap between headings (from the first camera's where no gap
    is wider than the one before it), so that the path sweeps its arc once and never turns back across its start."""
    c2w = np.asarray(c2w, np.float64)
    up = -c2w[:, :3, 1].mean(axis=0)  # OpenCV: image y points down
    up /= max(np.linalg.norm(up), 1e-12)
    forward = c2w[:, :3, 2]
    east = np.cross(up, forward[0])
    if np.linalg.norm(east) < 1e-6:  # the first camera looks along up: any horizontal axis will do
        east = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(east, up)
    heading = np.mod(np.arctan2(forward @ east, forward @ north) - np.arctan2(forward[0] @ east, forward[0] @ north),
                     2 * np.pi)
    ordered = np.sort(heading)
    gaps = np.diff(np.r_[ordered, 2 * np.pi])  # the last is the gap from the widest heading back round to the first
    widest = int(np.flatnonzero(gaps >= gaps.max() - 1e-9)[-1])  # on a tie, the gap before the first camera
    start = ordered[(widest + 1) % len(ordered)]
    return [int(i) for i in np.argsort(np.mod(heading - start, 2 * np.pi), kind="stable")]


def path_length(c2w: np.ndarray, order: list[int]) -> float:
    """How far a path through the keys c2w [K,4,4] in `order` moves: each step's turn (radians) plus its move, in units
    of the keys' median distance apart (so a move across the keys' usual spacing counts as much as a radian's turn)."""
    c2w = np.asarray(c2w, np.float64)
    centres = c2w[:, :3, 3]
    spread = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(c2w), 1)]
    scale = max(float(np.median(spread)) if spread.size else 0.0, 1e-12)
    R = c2w[order, :3, :3]
    turns = Rotation.from_matrix(np.einsum("kji,kjl->kil", R[:-1], R[1:])).magnitude()
    moves = np.linalg.norm(np.diff(centres[order], axis=0), axis=-1) / scale
    return float(turns.sum() + moves.sum())


def key_order(c2w: np.ndarray) -> list[int]:
    """The keys c2w [K,4,4] in the order of the shorter path (`path_length`): as listed, or by heading. Cameras looking
    out from a room's middle pan round it by heading, where their listed order would swing back and forth (the
    demo's turned 125 degrees between keys); a forward-facing rig or a walk through a room keeps its listed order,
    where headings that differ by jitter would send the camera back and forth along it."""
    listed, panned = list(range(len(c2w))), order_by_heading(c2w)
    return min((listed, panned), key=lambda order: path_length(c2w, order))


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
