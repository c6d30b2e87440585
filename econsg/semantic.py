"""The semantic terms of econSG's splat loss (METHOD.md section 5) and latent-space segmentation.

L = L_color + lambda_sem * Dist(F, F_z^2D) + lambda_2d * CE(cos(F, T_z) / T, S^h) [/ log C]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf

from econsg.errors import EconsgError
from econsg.scene.data import IGNORE


def latent_logits(features: torch.Tensor, text_latents: torch.Tensor, temperature: float) -> torch.Tensor:
    """cos(F(u), T_z(c)) / T for every pixel and class: [..., d] x [C, d] -> [..., C]."""
    return nnf.normalize(features, dim=-1) @ nnf.normalize(text_latents, dim=-1).T / temperature


def reached(features: torch.Tensor) -> torch.Tensor:
    """[..., d] -> [...] bool: the pixels some Gaussian reached. The rendered F is exactly 0, the background's,
    only where none did; its direction, which every score reads, is then undefined."""
    return features.ne(0).any(dim=-1)


def segment_latent(features: torch.Tensor, text_latents: torch.Tensor) -> torch.Tensor:
    """argmax_c cos(F(u), T_z(c)): [..., d] -> [...] class indices; IGNORE where no Gaussian reached the pixel."""
    labels = latent_logits(features, text_latents, 1.0).argmax(dim=-1)
    return torch.where(reached(features), labels, IGNORE)


def weighted_pixel_mean(per_pixel: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_u w(u) l(u) / sum_u w(u) over the pixels' losses (same shape; the plain mean when weights is None); 0 when
    there is no pixel or no weight."""
    if weights is None:
        return per_pixel.mean() if per_pixel.numel() else per_pixel.sum() * 0.0
    total = weights.sum()
    return (per_pixel * weights).sum() / total if total > 0 else per_pixel.sum() * 0.0


def semantic_distill_loss(rendered: torch.Tensor, target: torch.Tensor, dist: str,
                          valid: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dist(F, F_z^2D), mean over (valid) pixels and channels; L1 (the authors' choice) or L2.

    `valid` [H,W] bool restricts the mean to some pixels (e.g. those crr labelled); None = every pixel.
    `weights` [H,W] (e.g. the multi-view agreement) make it a weighted mean; None = every pixel alike.
    """
    diff = rendered - target
    per_pixel = diff.abs().mean(dim=-1) if dist == "l1" else diff.square().mean(dim=-1)
    if valid is not None:
        per_pixel, weights = per_pixel[valid], None if weights is None else weights[valid]
    return weighted_pixel_mean(per_pixel, weights)


def semantic_ce_loss(rendered: torch.Tensor, labels: torch.Tensor, text_latents: torch.Tensor, temperature: float,
                     normalize: bool, weights: torch.Tensor | None = None) -> torch.Tensor:
    """CE(cos(F, T_z)/T, S^h) over labelled pixels (IGNORE skipped), a weighted mean with `weights` [H,W]; divided
    by log C when `normalize`."""
    logits = latent_logits(rendered.reshape(-1, rendered.shape[-1]), text_latents, temperature)
    target = labels.reshape(-1).long()
    labelled = target != IGNORE
    if not labelled.any():
        return rendered.sum() * 0.0
    if weights is None:  # the unweighted mean, computed as it always was (the default's runs reproduce to the bit)
        loss = nnf.cross_entropy(logits, target, ignore_index=IGNORE)
    else:
        per_pixel = nnf.cross_entropy(logits[labelled], target[labelled], reduction="none")
        loss = weighted_pixel_mean(per_pixel, weights.reshape(-1)[labelled])
    return loss / math.log(text_latents.shape[0]) if normalize and text_latents.shape[0] > 1 else loss


def distilled_pixels(refined_labels: torch.Tensor, feature_source: Callable[[], torch.Tensor], rule: str) -> torch.Tensor | None:
    """The pixels Dist runs over, from crr's decisions (refined labels [V,H,W]); None = all.

    `feature_source` returns crr's feature sources [V,H,W]; it is called only by the rule that reads them, so the
    other rules never load them.

    all:                every pixel (METHOD.md's sum over u).
    labelled_or_pooled: the pixels crr labelled and the ignored ones it gave a mask's pooled feature
                        (`crr.ignored_features: mask`); not the ignored pixels left with their own feature (tau2's
                        boundary pixels, pixels no mask covers), whose patch-blurred features encode near the
                        middle of the latent space, where a class the training vocabulary lacks has its text latent.
    labelled:           only the pixels crr labelled.
    """
    if rule == "all":
        return None
    labelled = refined_labels != IGNORE
    if rule == "labelled":
        return labelled
    if rule == "labelled_or_pooled":
        return labelled | (feature_source() >= 0)
    raise EconsgError(f"splat.distill_pixels: got {rule!r}, expected 'all', 'labelled_or_pooled' or 'labelled'")


def check_semantic_targets(latent_maps: torch.Tensor, labels: torch.Tensor, text_latents: torch.Tensor,
                           distill_mask: torch.Tensor | None, pixel_weights: torch.Tensor | None) -> None:
    """Raise EconsgError naming the first target whose shape disagrees: latent maps [V,H,W,d], labels, distill_mask
    and pixel_weights [V,H,W], T_z [C,d]."""
    if latent_maps.ndim != 4:
        raise EconsgError(f"latent_maps: got shape {list(latent_maps.shape)}, expected [V, H, W, d]")
    pixels, d = list(latent_maps.shape[:3]), latent_maps.shape[3]
    for name, value in (("labels", labels), ("distill_mask", distill_mask), ("pixel_weights", pixel_weights)):
        if value is not None and list(value.shape) != pixels:
            raise EconsgError(f"{name}: got shape {list(value.shape)}, expected the latent maps' [V, H, W] = {pixels}")
    if pixel_weights is not None and not bool((torch.isfinite(pixel_weights) & (pixel_weights >= 0)).all()):
        # a view's weighted mean would divide by a NaN or negative total and fall back to 0: its loss gone, unreported
        raise EconsgError("pixel_weights: expected finite weights >= 0, got NaN, inf or a negative weight")
    if text_latents.ndim != 2 or text_latents.shape[1] != d:
        raise EconsgError(f"text_latents: got shape {list(text_latents.shape)}, expected [C, d] with the latent maps' "
                          f"d = {d}")


def make_semantic_loss(
    latent_maps: torch.Tensor,
    labels: torch.Tensor,
    text_latents: torch.Tensor,
    *,
    lambda_sem: float,
    lambda_2d: float,
    dist: str,
    temperature: float,
    ce_normalize: bool,
    distill_mask: torch.Tensor | None = None,
    dist_normalize: bool = False,
    pixel_weights: torch.Tensor | None = None,
) -> Callable:
    """The `extra_loss` hook of splat training: latent maps [V,H,W,d], refined labels [V,H,W], T_z [C,d].

    Dist runs over the pixels of `distill_mask` [V,H,W] bool (None: every pixel, METHOD.md's sum over u; see
    `distilled_pixels`), on F or on the directions of F and its target (`dist_normalize`, the authors' code's
    F / |F|; their targets are unit vectors, as autoencode.unit_latents makes them); the CE term always skips the
    ignored pixels and divides its cosines by `temperature`. `pixel_weights` [V,H,W] weigh both terms'
    pixels (None: alike). Targets whose shapes disagree are refused here, and a render without features or of
    another size or width than the latent maps when the loss runs.
    """
    check_semantic_targets(latent_maps, labels, text_latents, distill_mask, pixel_weights)

    def extra_loss(out, view_index: int, params) -> tuple[torch.Tensor, dict[str, float]]:
        if out.features is None:
            raise EconsgError("the semantic loss: the render carries no features; the Gaussians need semantic channels "
                              "(params['features'], f = z at initialisation)")
        rendered = out.features[0]
        if tuple(rendered.shape) != tuple(latent_maps.shape[1:]):
            raise EconsgError(f"the semantic loss: rendered features [H, W, d] = {list(rendered.shape)}, expected the "
                              f"latent maps' {list(latent_maps.shape[1:])}")

        def of_view(targets: torch.Tensor | None) -> torch.Tensor | None:  # may be kept on the CPU for a GPU run
            return None if targets is None else targets[view_index].to(rendered.device, non_blocking=True)

        target_labels, valid, weights = of_view(labels), of_view(distill_mask), of_view(pixel_weights)
        distilled, target = rendered, of_view(latent_maps).float()
        if dist_normalize:  # directions on both sides: a target of raw length (autoencode.unit_latents: false) too
            distilled, target = nnf.normalize(distilled, dim=-1), nnf.normalize(target, dim=-1)
        sem = semantic_distill_loss(distilled, target, dist, valid, weights)
        total = lambda_sem * sem
        logged = {"sem": float(sem.detach())}
        if lambda_2d > 0:
            ce = semantic_ce_loss(rendered, target_labels, text_latents, temperature, ce_normalize, weights)
            total = total + lambda_2d * ce
            logged["ce"] = float(ce.detach())
        return total, logged

    return extra_loss
