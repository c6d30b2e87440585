"""Open-vocabulary queries in the latent space: any text -> text encoder -> E -> T_z(q).

Relevancy of a query q at a pixel (or a Gaussian) with latent feature f is the softmax probability of
q against the canonical classes (the vocabulary) with logits cos(f, T_z)/T: high where q explains f
better than every vocabulary class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from econsg.autoencoder import encode_text
from econsg.config import ExtractParams
from econsg.errors import EconsgError
from econsg.features.backends import build_text_encoder, embed_classes
from econsg.semantic import latent_logits


class LatentQuery:
    """Text -> normalised latent, with the autoencoder's encoder E and the backend's text tower."""

    def __init__(self, model, extract_params: ExtractParams, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.params = extract_params
        self.device = device
        self.encoder = build_text_encoder(extract_params, device)

    @torch.no_grad()
    def text_latents(self, texts: Sequence[str]) -> torch.Tensor:
        """[Q, d] normalised latents T_z of arbitrary texts (prompt templates averaged)."""
        if blank := [text for text in texts if not text.strip()]:
            raise EconsgError(f"query text: got {blank[0]!r}, expected a non-empty text such as 'a red chair'")
        embeddings = torch.from_numpy(embed_classes(self.encoder, list(texts), self.params)).to(self.device)
        return encode_text(self.model, embeddings)


@torch.no_grad()
def relevancy(features: torch.Tensor, query_latent: torch.Tensor, canonical_latents: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """P(query | f) against canonical classes: features [..., d], query [d], canonical [C, d] -> [...] in [0,1].

    Canonical classes equal to the query (same latent) are dropped so a vocabulary word can be queried too.
    """
    keep = (torch.nn.functional.cosine_similarity(canonical_latents, query_latent[None], dim=-1) < 0.9999)
    latents = torch.cat([query_latent[None], canonical_latents[keep]], dim=0)
    return torch.softmax(latent_logits(features, latents, temperature), dim=-1)[..., 0]
