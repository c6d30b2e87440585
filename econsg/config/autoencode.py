"""Params of the autoencode stage: the low-dimensional latent space of the fused features."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from econsg.config.base import TEMPERATURE_MIN, Section


class AutoencodeParams(Section):
    """The latent autoencoder E: D -> d, G: d -> D (METHOD.md section 4)."""

    latent_dim: int = Field(
        16,
        ge=2,
        le=128,
        description="Latent width d rendered by the splats; the paper uses 6, 16 or 32 (any >= 2 works). 16, not 6: a class "
        "no training text names has room of its own, where at 6 the autoencoder's seed decides whether it keeps one "
        "(README, 'Latent width').",
    )
    hidden: tuple[int, ...] = Field(
        (256, 128, 64, 32),
        min_length=1,
        description="Encoder hidden widths from D down to d; the decoder mirrors them (authors: 256, 128, 64, 32).",
    )
    iterations: int = Field(
        400, ge=1, description="Optimiser steps (minibatches); 400 x 1024 is ~18 epochs of the demo's 23k fused points, ~10 s on 2 CPU cores."
    )
    batch_size: int = Field(1024, ge=1, description="Fused points per minibatch (capped at the number of points).")
    lr: float = Field(2e-3, gt=0, lt=1, description="Adam learning rate (cosine-decayed to 1 % over the run).")
    temperature: float = Field(
        0.05, ge=TEMPERATURE_MIN, le=1, description="Softmax temperature T of the cosine logits cos(., t) / T in "
        "both CE terms (no effect with loss: authors, which has no CE term)."
    )
    loss: Literal["paper", "authors"] = Field(
        "paper",
        description="'paper': L2 + CE on decoded features + CE on latents against T_z; "
        "'authors': their code's L2 + 0.001 x (1 - cos) reconstruction loss only (its cosine per feature channel over "
        "the batch, as their code takes it).",
    )
    ce_weights: Literal["labelled_share", "label_support", "uniform"] = Field(
        "labelled_share",
        description="Weight of each fused point in both CE terms. 'labelled_share': the share of its voxel's samples that "
        "crr labelled (fuse.zarr's labelled_share), so a point crr mostly ignored, such as a class the training "
        "vocabulary lacks, pulls its latent toward its few labels that much less; 'label_support': the share of its "
        "samples that carry its fused label (labelled_share x vote_share), so contested labels weigh less too; "
        "'uniform': every labelled point alike (METHOD.md's formula). docs/results.md, 'CE weights of the fused points'. "
        "No effect with loss: authors, which has no CE term.",
    )
    unit_latents: bool = Field(
        True,
        description="Store every latent as z / ||z|| (points, 2D latent maps). Segmentation reads only the direction "
        "(cos(z, T_z)), but the splats alpha-blend f: with raw latents a pixel's rendered feature leans toward the "
        "Gaussians with the longest latents, and small or uncertain classes (thin lamps, the ceiling, open-set "
        "objects) have the shortest. Unit latents make the blend a weighted mean of directions.",
    )

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 1 for w in value):
            raise ValueError(f"expected positive layer widths, got {list(value)}")
        return value
