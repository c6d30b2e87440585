"""Language-guided editing: select Gaussians by text in 3D, then remove, recolour or extract them."""

from __future__ import annotations

import torch

from econsg.errors import EconsgError
from econsg.query import relevancy
from econsg.render.sh import rgb_to_sh0


def select_gaussians(features: torch.Tensor, query_latent: torch.Tensor, canonical_latents: torch.Tensor,
                     temperature: float, threshold: float) -> torch.Tensor:
    """[N] bool: Gaussians whose semantic feature f gives the query a relevancy above `threshold`."""
    return relevancy(features, query_latent, canonical_latents, temperature) > threshold


def apply_edit(params: dict[str, torch.Tensor], selected: torch.Tensor, action: str,
               colour: tuple[float, float, float] = (1.0, 0.0, 1.0)) -> dict[str, torch.Tensor]:
    """A new parameter dict: 'remove' drops the selection, 'extract' keeps only it, 'recolour' paints it. An empty
    selection is refused (the edit would change nothing, or extract an empty scene), and so is a removal or an
    extraction of every Gaussian (an empty scene, or the scene itself)."""
    if action in ("remove", "extract", "recolour") and not bool(selected.any()):
        raise EconsgError(f"{action}: the text selects no Gaussian (0 of {selected.numel()}), so the edit would "
                          f"{'leave an empty scene' if action == 'extract' else 'change nothing'}; try another text or "
                          "a lower --threshold")
    if action in ("remove", "extract") and bool(selected.all()):
        raise EconsgError(f"{action}: the text selects every Gaussian ({selected.numel()}), so the edited scene would "
                          f"{'be empty' if action == 'remove' else 'be the scene itself'}; try another text or a higher "
                          "--threshold")
    if action == "remove":
        return {k: v[~selected] for k, v in params.items()}
    if action == "extract":
        return {k: v[selected] for k, v in params.items()}
    if action == "recolour":
        edited = {k: v.clone() for k, v in params.items()}
        edited["sh0"][selected] = rgb_to_sh0(torch.tensor(colour, dtype=edited["sh0"].dtype,
                                                          device=edited["sh0"].device)).reshape(1, 1, 3)
        edited["shN"][selected] = 0.0
        return edited
    raise EconsgError(f"action: {action!r}; expected remove, extract or recolour")


def selection_summary(selected: torch.Tensor) -> dict[str, int]:
    """How many Gaussians the selection holds, of how many, and how many a removal keeps."""
    return {"selected": int(selected.sum()), "total": int(selected.numel()), "kept": int((~selected).sum())}
