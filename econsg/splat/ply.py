"""Gaussians <-> the standard 3DGS PLY layout that common viewers (SuperSplat, SIBR, antimatter15) read.

Viewers that read properties by name (SuperSplat, antimatter15, gsplat, nerfstudio) skip the extra ones. SIBR reads
a fixed record of the standard properties at SH degree 3: give it a file written with semantic=False (`--no-semantic`)
from Gaussians trained at splat.sh_degree 3.

One binary little-endian `vertex` element, float32 properties in this order:
x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..3(K-1)-1, opacity (logit), scale_0..2 (log),
rot_0..3 (w x y z), then extra per-Gaussian channels. f_rest is channel-major as in 3DGS's
`save_ply`: all K-1 red coefficients, then green, then blue. Semantic features ("features" [N, d])
are written as f_sem_0..f_sem_{d-1}; other extras as `name` ([N]) or name_0..name_{d-1} ([N, d]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from econsg.artifacts import write_file_atomic
from econsg.errors import EconsgError
from econsg.splat.gaussians import check_gaussians

FEATURE_PREFIX = "f_sem"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INDEXED = re.compile(r"^(.*)_(\d+)$")


RESERVED = ("f_dc", "f_rest", FEATURE_PREFIX)  # property prefixes load_ply reads as Gaussian parameters
NORMALS = ("nx", "ny", "nz")  # written (zeros) as the reference 3DGS does; read from nowhere


def _standard_names(n_rest: int) -> list[str]:
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _columns(params: Mapping[str, object], extra: Mapping[str, np.ndarray] | None) -> list[tuple[str, np.ndarray]]:
    """(property name, [N] float32 column) pairs in file order."""
    n = check_gaussians(params)
    means = _numpy(params["means"])
    sh0 = _numpy(params["sh0"])[:, 0, :]  # [N, 3]
    shN = _numpy(params["shN"])
    rest = np.ascontiguousarray(shN.transpose(0, 2, 1)).reshape(n, 3 * shN.shape[1])  # [N, 3(K-1)] channel-major
    scales = _numpy(params["scales"])
    quats = _numpy(params["quats"])
    blocks = [means, np.zeros((n, 3), np.float32), sh0, rest, _numpy(params["opacities"])[:, None], scales, quats]
    table = np.concatenate(blocks, axis=1)
    columns = list(zip(_standard_names(rest.shape[1]), table.T))
    taken = {name for name, _ in columns}
    groups: list[tuple[str, np.ndarray]] = []
    if "features" in params:
        groups.append((FEATURE_PREFIX, _numpy(params["features"])))
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not _NAME.match(key):
            raise EconsgError(f"extra: key {key!r} is not a valid PLY property name (letters, digits, underscores)")
        indexed = _INDEXED.match(key)
        if (indexed.group(1) if indexed else key) in RESERVED:
            raise EconsgError(f"extra: key {key!r} is reserved: load_ply reads f_dc_*, f_rest_* and {FEATURE_PREFIX}_* "
                              "as colour, SH and semantic features (pass features as params['features']); rename it")
        groups.append((key, _numpy(value)))
    for key, arr in groups:
        if arr.ndim == 1 and arr.shape[0] == n:
            if _INDEXED.match(key):
                raise EconsgError(f"extra: 1-D channel name {key!r} ends in _<digits>, which load_ply reads as a "
                                  "column of a 2-D channel; rename it")  # fmt: skip
            names, cols = [key], [arr]
        elif arr.ndim == 2 and arr.shape[0] == n:
            names, cols = [f"{key}_{i}" for i in range(arr.shape[1])], list(arr.T)
        else:
            raise EconsgError(f"extra: {key!r} has shape {arr.shape}, expected [{n}] or [{n}, d] (one row per Gaussian)")
        for name, col in zip(names, cols):
            if name in taken:
                raise EconsgError(f"extra: property {name!r} (from {key!r}) clashes with an existing PLY property")
            taken.add(name)
            columns.append((name, col))
    return columns


def export_ply(path: str | Path, params: Mapping[str, object], extra: Mapping[str, np.ndarray] | None = None, *,
               semantic: bool = True) -> Path:
    """Write raw Gaussian parameters (gaussians.py naming; tensors or arrays) as a 3DGS PLY; returns the path.

    params["features"] [N, d], when present and `semantic`, becomes f_sem_*; `extra` maps names to [N] or [N, d]
    arrays written as further float32 properties. semantic=False (and no extra) writes the standard properties
    alone, for viewers that read a fixed record per Gaussian (SIBR). Atomic: written to a temporary sibling, then
    renamed.
    """
    path = Path(path)
    if path.is_dir():
        raise EconsgError(f"{path}: is a folder; expected the PLY file's path, such as {path / 'gaussians.ply'}")
    if not semantic:
        params = {key: value for key, value in params.items() if key != "features"}
    columns = _columns(params, extra)
    n = columns[0][1].shape[0]
    data = np.empty(n, dtype=[(name, "<f4") for name, _ in columns])
    for name, col in columns:
        data[name] = col

    def write(tmp: Path) -> None:  # opened as any file is, so the umask gives its mode
        with open(tmp, "wb") as handle:
            PlyData([PlyElement.describe(data, "vertex")], byte_order="<").write(handle)

    return write_file_atomic(path, write)


def load_ply(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Read a 3DGS PLY back: (params as float32 tensors in gaussians.py naming, extra channels as arrays).

    f_sem_* become params["features"]; other non-standard properties come back in `extras`, name_0..name_{d-1}
    grouped into one [N, d] array and single properties as [N].
    """
    path = Path(path)
    if not path.is_file():
        raise EconsgError(f"{path}: no such PLY file")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
    except Exception as error:  # plyfile raises several types for malformed files
        raise EconsgError(f"{path}: not a readable PLY file with a 'vertex' element ({error})") from None
    names = [prop.name for prop in vertex.properties]
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    required = [name for name in _standard_names(n_rest) if name not in NORMALS]  # gsplat's export writes none
    missing = [name for name in required if name not in names]
    if missing:
        raise EconsgError(f"{path}: missing 3DGS properties {', '.join(missing[:6])}; expected the standard 3DGS layout")
    if n_rest % 3 or (n_rest // 3 + 1) not in (1, 4, 9, 16, 25):
        raise EconsgError(f"{path}: has {n_rest} f_rest_* properties, expected 3 x ((degree+1)^2 - 1) for degree 0..4")

    n = len(vertex.data)

    def cols(keys: list[str]) -> np.ndarray:
        if not keys:
            return np.zeros((n, 0), np.float32)
        return np.stack([np.asarray(vertex[key], dtype=np.float32) for key in keys], axis=1)

    k1 = n_rest // 3
    params = {
        "means": cols(["x", "y", "z"]),
        "scales": cols(["scale_0", "scale_1", "scale_2"]),
        "quats": cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": np.asarray(vertex["opacity"], dtype=np.float32),
        "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :],
        "shN": cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k1).transpose(0, 2, 1),
    }
    extras: dict[str, np.ndarray] = {}
    grouped: dict[str, dict[int, str]] = {}
    for name in names:
        if name in required or name in NORMALS:
            continue
        match = _INDEXED.match(name)
        if match:
            grouped.setdefault(match.group(1), {})[int(match.group(2))] = name
        else:
            extras[name] = np.asarray(vertex[name], dtype=np.float32)
    for prefix, members in grouped.items():
        if sorted(members) != list(range(len(members))):
            for name in members.values():  # not a 0..d-1 run: keep the columns as they are
                extras[name] = np.asarray(vertex[name], dtype=np.float32)
            continue
        arr = cols([members[i] for i in range(len(members))])
        if prefix == FEATURE_PREFIX:
            params["features"] = arr
        else:
            extras[prefix] = arr
    tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in params.items()}
    return tensors, extras
