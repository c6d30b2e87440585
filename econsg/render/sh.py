"""Real spherical harmonics for view-dependent colour, in the 3DGS / gsplat convention.

Coefficients are ordered by degree l = 0..4 and, within a degree, by m = -l..l, with the signs and
constants of the 3DGS reference renderer. Colour = clamp_min(SH(dir) + 0.5, 0), so a degree-0
coefficient c gives the colour C0 * c + 0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor

from econsg.errors import EconsgError

SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
_SH_C4 = (
    2.5033429417967046,
    -1.7701307697799304,
    0.9461746957575601,
    -0.6690465435572892,
    0.10578554691520431,
    -0.6690465435572892,
    0.47308734787878004,
    -1.7701307697799304,
    0.6258357354491761,
)
MAX_SH_DEGREE = 4


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel up to `degree`: (degree + 1) ** 2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values Y_k(dir) for k < (degree + 1)^2.

    dirs: [..., 3] view directions (any length; normalised here). Returns [..., (degree + 1)^2].
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise EconsgError(f"sh_degree: got {degree}, expected an integer in 0..{MAX_SH_DEGREE}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    bases = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        bases += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        bases += [
            _SH_C2[0] * xy,
            _SH_C2[1] * yz,
            _SH_C2[2] * (2.0 * zz - xx - yy),
            _SH_C2[3] * xz,
            _SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        bases += [
            _SH_C3[0] * y * (3.0 * xx - yy),
            _SH_C3[1] * xy * z,
            _SH_C3[2] * y * (4.0 * zz - xx - yy),
            _SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _SH_C3[4] * x * (4.0 * zz - xx - yy),
            _SH_C3[5] * z * (xx - yy),
            _SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    if degree >= 4:
        bases += [
            _SH_C4[0] * xy * (xx - yy),
            _SH_C4[1] * yz * (3.0 * xx - yy),
            _SH_C4[2] * xy * (7.0 * zz - 1.0),
            _SH_C4[3] * yz * (7.0 * zz - 3.0),
            _SH_C4[4] * (zz * (35.0 * zz - 30.0) + 3.0),
            _SH_C4[5] * xz * (7.0 * zz - 3.0),
            _SH_C4[6] * (xx - yy) * (7.0 * zz - 1.0),
            _SH_C4[7] * xz * (xx - 3.0 * yy),
            _SH_C4[8] * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy)),
        ]
    return torch.stack(bases, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """View-dependent RGB from SH coefficients, as 3DGS/gsplat: clamp_min(sum_k c_k Y_k(dir) + 0.5, 0).

    degree: SH degree used (0..4); coeffs: [..., K, 3] with K >= (degree + 1)^2 (extra ones ignored);
    dirs: [..., 3] directions from the camera centre to the Gaussian (normalised here), broadcastable
    against coeffs' leading dims. Returns rgb [..., 3], unitless in [0, inf).
    """
    n = num_sh_bases(degree) if 0 <= degree <= MAX_SH_DEGREE else -1
    if n < 0:
        raise EconsgError(f"sh_degree: got {degree}, expected an integer in 0..{MAX_SH_DEGREE}")
    if coeffs.ndim < 2 or coeffs.shape[-1] != 3 or coeffs.shape[-2] < n:
        raise EconsgError(
            f"colors: got SH coefficients of shape {tuple(coeffs.shape)}, expected [..., K, 3] with "
            f"K >= {n} for sh_degree={degree}"
        )
    if dirs.shape[-1] != 3:
        raise EconsgError(f"dirs: got shape {tuple(dirs.shape)}, expected [..., 3]")
    basis = sh_basis(degree, dirs)  # [..., n]
    sh = (basis.unsqueeze(-1) * coeffs[..., :n, :]).sum(dim=-2)
    return torch.clamp_min(sh + 0.5, 0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Degree-0 SH coefficient [..., 3] whose colour is `rgb` [..., 3] (inverse of sh0_to_rgb)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Colour [..., 3] of a degree-0 SH coefficient [..., 3], before the clamp at 0."""
    return sh0 * SH_C0 + 0.5
