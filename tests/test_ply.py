"""Tests of econsg.splat.ply: the standard 3DGS PLY layout, exact round trips, extra channels, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from econsg.errors import EconsgError
from econsg.splat.ply import export_ply, load_ply


def random_gaussians(n: int, sh_degree: int, features: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    params = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3,
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, k - 1, 3, generator=g),
    }
    if features:
        params["features"] = torch.randn(n, features, generator=g)
    return params


def test_round_trip_is_exact_with_features_and_extras(tmp_path: Path):
    params = random_gaussians(17, sh_degree=3, features=6)
    extra = {"confidence": np.linspace(0, 1, 17, dtype=np.float32), "votes": np.arange(17 * 4, dtype=np.float32).reshape(17, 4)}
    path = export_ply(tmp_path / "out" / "g.ply", torch.nn.ParameterDict(params), extra)
    loaded, extras = load_ply(path)
    assert set(loaded) == set(params)
    for name, value in params.items():
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], value), name
    assert set(extras) == {"confidence", "votes"}
    for name, value in extra.items():
        np.testing.assert_array_equal(extras[name], value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["g.ply"]  # the temporary sibling was renamed away


def test_property_names_and_order_are_the_3dgs_layout(tmp_path: Path):
    path = export_ply(tmp_path / "g.ply", random_gaussians(5, sh_degree=3, features=2))
    ply = PlyData.read(str(path))
    assert [el.name for el in ply.elements] == ["vertex"] and ply.byte_order == "<" and not ply.text
    names = [p.name for p in ply["vertex"].properties]
    expected = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(45)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "f_sem_0", "f_sem_1"]
    )
    assert names == expected
    assert all(p.val_dtype == "f4" for p in ply["vertex"].properties)
    assert not any(np.asarray(ply["vertex"][n]).any() for n in ("nx", "ny", "nz"))


def test_f_rest_is_channel_major(tmp_path: Path):
    params = random_gaussians(3, sh_degree=2)
    k1 = params["shN"].shape[1]  # 8 coefficients per channel beyond degree 0
    coeff = torch.arange(k1, dtype=torch.float32)[None, :, None]
    channel = torch.tensor([0.0, 100.0, 200.0])[None, None, :]
    params["shN"] = (coeff + channel).expand(3, k1, 3).clone()  # value = 100 * channel + coefficient index
    vertex = PlyData.read(str(export_ply(tmp_path / "g.ply", params)))["vertex"]
    rest = np.stack([np.asarray(vertex[f"f_rest_{i}"]) for i in range(3 * k1)], axis=1)[0]
    # 3DGS writes features_rest transposed to [N, 3, K-1]: all red coefficients, then green, then blue
    np.testing.assert_array_equal(rest, [100.0 * c + k for c in range(3) for k in range(k1)])
    np.testing.assert_array_equal(np.asarray(vertex["f_dc_1"]), params["sh0"][:, 0, 1].numpy())


def test_degree_zero_has_no_f_rest_and_round_trips(tmp_path: Path):
    params = random_gaussians(4, sh_degree=0)
    path = export_ply(tmp_path / "g.ply", params)
    assert not any(p.name.startswith("f_rest") for p in PlyData.read(str(path))["vertex"].properties)
    loaded, extras = load_ply(path)
    assert loaded["shN"].shape == (4, 0, 3) and extras == {}
    assert torch.equal(loaded["means"], params["means"])


def test_bad_extras_are_refused(tmp_path: Path):
    params = random_gaussians(4, sh_degree=1, features=2)
    with pytest.raises(EconsgError, match=r"extra: 'conf' has shape \(3,\), expected \[4\] or \[4, d\]"):
        export_ply(tmp_path / "g.ply", params, {"conf": np.zeros(3)})
    with pytest.raises(EconsgError, match="extra: key 'f_sem' is reserved"):
        export_ply(tmp_path / "g.ply", params, {"f_sem": np.zeros((4, 2))})
    # at SH degree 0 no f_rest_* is written, and load_ply would read these back as SH coefficients
    for key in ("f_rest", "f_rest_0", "f_dc"):
        with pytest.raises(EconsgError, match=f"extra: key '{key}' is reserved"):
            export_ply(tmp_path / "g.ply", random_gaussians(4, sh_degree=0), {key: np.zeros((4, 9))})
    with pytest.raises(EconsgError, match="extra: property 'opacity'"):
        export_ply(tmp_path / "g.ply", params, {"opacity": np.zeros(4)})
    with pytest.raises(EconsgError, match="extra: 1-D channel name 'votes_1' ends in _<digits>"):
        export_ply(tmp_path / "g.ply", params, {"votes_1": np.zeros(4)})
    with pytest.raises(EconsgError, match=r"params.shN: got shape \(4, 2, 3\)"):
        export_ply(tmp_path / "g.ply", {**params, "shN": torch.zeros(4, 2, 3)})
    assert not (tmp_path / "g.ply").exists()
    with pytest.raises(EconsgError, match="is a folder; expected the PLY file's path"):  # --out export/
        export_ply(tmp_path, params)
    assert [p.name for p in tmp_path.parent.glob(".*.tmp*")] == []  # no temporary file left beside the folder


def test_without_semantics_a_ply_holds_the_standard_record_alone(tmp_path: Path):
    """SIBR reads a fixed record per Gaussian; any extra property shifts every Gaussian after the first."""
    params = random_gaussians(4, sh_degree=3, features=2)
    path = export_ply(tmp_path / "g.ply", params, semantic=False)
    names = [p.name for p in PlyData.read(str(path))["vertex"].properties]
    assert len(names) == 3 + 3 + 3 * 16 + 1 + 3 + 4 and not any(n.startswith("f_sem") for n in names)
    loaded, _ = load_ply(path)
    assert "features" not in loaded and torch.equal(loaded["means"], params["means"])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_a_ply_is_readable_by_others_as_the_umask_allows(tmp_path: Path, umask: int, mode: int):
    """A PLY is for viewers and other people: not private to its owner as a temporary file would be (mode 0600), and
    no more open than the user's umask lets a new file be."""
    old = os.umask(umask)
    try:
        path = export_ply(tmp_path / "g.ply", random_gaussians(4, sh_degree=1))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_load_refuses_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(EconsgError, match="no such PLY file"):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_text("not a ply\n")
    with pytest.raises(EconsgError, match="junk.ply: not a readable PLY file"):
        load_ply(tmp_path / "junk.ply")
    points = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    from plyfile import PlyElement

    PlyData([PlyElement.describe(points, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(EconsgError, match="points.ply: missing 3DGS properties f_dc_0, f_dc_1, f_dc_2, opacity"):
        load_ply(tmp_path / "points.ply")


def test_a_ply_without_normals_as_gsplat_exports_it_loads(tmp_path: Path):
    from plyfile import PlyElement

    params = random_gaussians(5, sh_degree=1)
    written = PlyData.read(str(export_ply(tmp_path / "ours.ply", torch.nn.ParameterDict(params))))["vertex"].data
    kept = [name for name in written.dtype.names if name not in ("nx", "ny", "nz")]  # gsplat's export_splats layout
    gsplat_like = np.empty(len(written), [(name, "f4") for name in kept])
    for name in kept:
        gsplat_like[name] = written[name]
    PlyData([PlyElement.describe(gsplat_like, "vertex")]).write(str(tmp_path / "gsplat.ply"))
    loaded, _ = load_ply(tmp_path / "gsplat.ply")
    for name, value in params.items():
        assert torch.equal(loaded[name], value), name


def test_no_gaussians_export_as_an_empty_ply(tmp_path: Path):
    params = {name: value[:0] for name, value in random_gaussians(3, sh_degree=2).items()}
    loaded, _ = load_ply(export_ply(tmp_path / "empty.ply", torch.nn.ParameterDict(params)))
    assert loaded["means"].shape == (0, 3) and loaded["shN"].shape == (0, 8, 3)


def test_a_foreign_indexed_property_not_starting_at_zero_loads_as_its_own_column(tmp_path):
    from plyfile import PlyElement

    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3", "foo_2"]
    data = np.zeros(3, dtype=[(n, "<f4") for n in names])
    data["rot_0"] = 1.0
    data["foo_2"] = [1.0, 2.0, 3.0]
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "foreign.ply"))
    _, extras = load_ply(tmp_path / "foreign.ply")
    assert extras["foo_2"].tolist() == [1.0, 2.0, 3.0] and "foo" not in extras
