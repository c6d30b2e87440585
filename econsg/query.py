"""Open-vocabulary queries in the latent space: any text -> text encoder -> E -> T_z(q).

Relevancy of a query q at a pixel (or a Gaussian) with latent feature f is the softmax probability of
q against the canonical classes (the vocabulary) with logits cos(f, T_z)/T: high where q explains f
better than every vocabulary class. Several texts label a pixel by the one that explains it best, against the
canonical classes too, so a pixel that none of them explains stays unlabelled.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from econsg.autoencoder import encode_text
from econsg.config import ExtractParams
from econsg.errors import EconsgError
from econsg.features.backends import build_text_encoder, embed_classes
from econsg.scene.data import IGNORE
from econsg.semantic import latent_logits, reached, segment_latent


class LatentQuery:
    """Text -> normalised latent, with the autoencoder's encoder E and the backend's text tower. Texts whose embeddings
    a run stored (its vocabularies) are read, not embedded again: querying them needs no text tower, so no CLIP
    weights; the tower is built at the first text it has to embed."""

    def __init__(self, model, extract_params: ExtractParams, device: str = "cpu",
                 stored: Mapping[str, np.ndarray] | None = None):
        self.model = model.to(device).eval()
        self.params = extract_params
        self.device = device
        self.stored = dict(stored or {})
        self._encoder = None

    @property
    def encoder(self):
        """The backend's text tower, built on first use and refused when it embeds a stored text elsewhere than the
        run did (`check_same_tower`)."""
        if self._encoder is None:
            encoder = build_text_encoder(self.params, self.device)
            check_same_tower(encoder, self.stored, self.params)
            self._encoder = encoder
        return self._encoder

    def text_embeddings(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """[Q, D] unit text embeddings, averaged over the prompt templates (extract's, unless `templates` names
        others, e.g. ["{}"] for the bare text): the stored one where the run embedded the same text so, the text
        tower's otherwise."""
        check_query_texts(texts)
        stored = self.stored if templates is None else {}  # the run stored its texts under extract's templates
        params = self.params if templates is None else self.params.model_copy(update={"templates": list(templates)})
        new = [text for text in dict.fromkeys(texts) if text not in stored]
        embedded = dict(zip(new, embed_classes(self.encoder, new, params))) if new else {}
        return np.stack([stored[text] if text in stored else embedded[text] for text in texts]).astype(np.float32)

    @torch.no_grad()
    def text_latents(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """[Q, d] normalised latents T_z of arbitrary texts (`templates` as in text_embeddings), on the query's
        device, where the features they are compared with are rendered."""
        embeddings = torch.from_numpy(self.text_embeddings(texts, templates)).to(self.device)
        return encode_text(self.model, embeddings).to(self.device)  # encode_text returns its latents on the CPU


SAME_TOWER_COSINE = 0.99  # one tower on another device or in another precision agrees far closer; other weights don't


def check_same_tower(encoder, stored: Mapping[str, np.ndarray], params: ExtractParams) -> None:
    """Refuse a text tower that embeds the run's first stored text elsewhere than the run did: other weights under
    the same model name and tag (`openclip_sam.clip_checkpoint` names a file, not its contents) would put every new
    text in another space than the vocabulary the features were distilled against."""
    if not stored:
        return
    text, kept = next(iter(stored.items()))
    cosine = float(np.dot(embed_classes(encoder, [text], params)[0], kept) / max(float(np.linalg.norm(kept)), 1e-12))
    if cosine < SAME_TOWER_COSINE:
        raise EconsgError(f"text tower: embeds {text!r} at cosine {cosine:.3f} to the embedding this run stored for it "
                          f"(expected >= {SAME_TOWER_COSINE}); other CLIP weights than extract used? Point "
                          "extract.openclip_sam.clip_checkpoint at the run's weights file, or rerun extract and what follows")


def check_query_texts(texts: Sequence[str]) -> None:
    """Refuse an empty text, and one holding a line break or another control character (a picture's title is one
    line); any other character, an ideographic or no-break space included, is a text's own."""
    if blank := [text for text in texts if not text.strip()]:
        raise EconsgError(f"query text: got {blank[0]!r}, expected a non-empty text such as 'a red chair'")
    if broken := [text for text in texts if any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in text)]:
        raise EconsgError(f"query text: got {broken[0]!r}, which holds a line break or another control character; "
                          "expected one line of text")


@torch.no_grad()
def relevancy(features: torch.Tensor, query_latent: torch.Tensor, canonical_latents: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """P(query | f) against canonical classes: features [..., d], query [d], canonical [C, d] -> [...] in [0,1].

    Canonical classes equal to the query (same latent) are dropped so a vocabulary word can be queried too.
    0 where no Gaussian reached the pixel (F = 0).
    """
    latents = torch.cat([query_latent[None], other_canonical(canonical_latents, query_latent[None])], dim=0)
    return torch.softmax(latent_logits(features, latents, temperature), dim=-1)[..., 0] * reached(features)


def lerf_relevancy(features: torch.Tensor, query_latent: torch.Tensor, canonical_latents: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """LERF's relevancy, as the LERF-OVS protocol scores it (LangSplat's evaluation): for each canonical phrase the
    two-way softmax of the query against it, the smallest over the phrases; features [..., d] -> [...] in [0, 1].
    min_i softmax([q, c_i] / T)[0] = sigmoid((q - max_i c_i) / T) with q, c_i the cosines with f; 0 where no Gaussian
    reached the pixel (F = 0)."""
    logits = latent_logits(features, torch.cat([query_latent[None], canonical_latents]), temperature)
    return torch.sigmoid(logits[..., 0] - logits[..., 1:].max(dim=-1).values) * reached(features)


def other_canonical(canonical_latents: torch.Tensor, text_latents: torch.Tensor) -> torch.Tensor:
    """The canonical classes [C, d] that equal none of the texts [Q, d] (same latent, cos >= 0.9999)."""
    same = torch.nn.functional.cosine_similarity(canonical_latents[:, None], text_latents[None], dim=-1) >= 0.9999
    return canonical_latents[~same.any(dim=1)]


@torch.no_grad()
def segment_texts(features: torch.Tensor, text_latents: torch.Tensor, canonical_latents: torch.Tensor) -> torch.Tensor:
    """Several texts' labelled segmentation: argmax cos(f, T_z) over the texts [Q, d] and the canonical classes
    [C, d] none of them equals; [..., d] -> [...] the index of the winning text, IGNORE where a canonical class wins
    (a pixel none of the texts explains better than the vocabulary stays unlabelled)."""
    labels = segment_latent(features, torch.cat([text_latents, other_canonical(canonical_latents, text_latents)]))
    return torch.where(labels < len(text_latents), labels, IGNORE)
