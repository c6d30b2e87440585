"""Params of the splat stage: 3DGS training (RGB + semantic channels), densification, checkpoints.

Defaults follow gsplat's `examples/simple_trainer.py` and `DefaultStrategy` (densification
thresholds), with learning rates raised and every iteration count scaled from the 30k-step GPU schedule to
the short CPU demo schedule (600 steps, 1/50: ~3.2 min at the demo's 256x192 on this 2-core CPU with the
pure-PyTorch rasterizer, about 0.33 s a step with 28k Gaussians; 1.5-3 min at 128x96).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from econsg.config.base import TEMPERATURE_MIN, SceneLength, Section


class SplatParams(Section):
    """Semantic Gaussian splatting (METHOD.md section 5)."""

    # ------------------------------------------------------------------ schedule
    iterations: int = Field(
        600,
        ge=1,
        description="Optimiser steps, one training camera per step (a fresh view permutation every epoch). The "
        "demo's 600 steps (~14 epochs of 42 views, ~28k Gaussians at 256x192) take ~3.2 min on 2 CPU cores and "
        "reach 30.1 dB test PSNR where 300 steps reach 28.2 (at 128x96: 1.5-3 min, 28.5 dB, 27.3 at 300 steps and "
        "27.9 at 450); on a GPU "
        "with gsplat, 30000 is the usual 3DGS schedule (scale the step counts below with it).",
    )
    sh_degree: int = Field(
        1,
        ge=0,
        le=3,
        description="Final spherical-harmonics degree of the colours (0..3). 1 is the CPU demo default: degree 3 "
        "costs ~8% more per render step at 128x96 (321 vs 298 ms with 20k Gaussians) and 5x the SH parameters, "
        "which two rings of ~40 low-resolution views hardly constrain.",
    )
    sh_degree_interval: int = Field(
        100, ge=1, description="Raise the active SH degree by one every this many steps (gsplat: 1000 of 30k)."
    )
    log_every: int = Field(
        10, ge=1, description="Steps per training-curve row (loss and PSNR are averaged over those steps)."
    )

    # ------------------------------------------------------------------ learning rates (Adam, eps 1e-15)
    means_lr: float = Field(
        8e-4,
        gt=0,
        description="Learning rate of the centres, multiplied by the scene scale (camera spread). The CPU demo's "
        "learning rates are gsplat's scaled up for a schedule 100x shorter (means 5x, scales and rotations 4x, colours "
        "8x): on the demo scene they lift test PSNR after 300 steps from 23.9 to 27.3 dB; 16x overfits (27.1 dB). "
        "For a 30k-step GPU run use gsplat's: means 1.6e-4, scales 5e-3, quats 1e-3, sh0 2.5e-3, shN 1.25e-4.",
    )
    means_lr_final_factor: float = Field(
        0.01, gt=0, le=1, description="The centres' learning rate decays exponentially to this fraction at the last step."
    )
    scales_lr: float = Field(2e-2, gt=0, description="Learning rate of the log-scales (gsplat: 5e-3).")
    quats_lr: float = Field(4e-3, gt=0, description="Learning rate of the (unnormalised) rotation quaternions (gsplat: 1e-3).")
    opacities_lr: float = Field(5e-2, gt=0, description="Learning rate of the opacity logits (gsplat's).")
    sh0_lr: float = Field(2e-2, gt=0, description="Learning rate of the degree-0 SH coefficients, base colour (gsplat: 2.5e-3).")
    shN_lr: float = Field(1e-3, gt=0, description="Learning rate of the higher-degree SH coefficients (gsplat: 1.25e-4).")
    feature_lr: float = Field(
        2.5e-3, gt=0, description="Learning rate of the semantic feature channels f (d per Gaussian)."
    )
    feature_lr_final_factor: float = Field(
        0.1,
        gt=0,
        le=1,
        description="f's learning rate decays exponentially to this fraction at the last step (1: constant, as the "
        "authors; the demo: 0.1). Each view's 2D targets are noisy in their own way; a decaying step averages them over the "
        "views instead of following the last few.",
    )

    # ------------------------------------------------------------------ colour loss
    ssim_lambda: float = Field(
        0.2, ge=0, le=1, description="L_color = (1 - lambda) L1 + lambda (1 - SSIM); 3DGS and the paper use 0.2."
    )

    # ------------------------------------------------------------------ densification (gsplat DefaultStrategy)
    refine_start_iter: int = Field(
        50, ge=0, description="Densify and prune only after this step (gsplat: 500 of 30k)."
    )
    refine_stop_iter: int = Field(
        500, ge=0, description="No densification or pruning from this step on; 0 switches them off (gsplat: 15k of 30k; "
        "the demo densifies for 5/6 of its short run)."
    )
    refine_every: int = Field(50, ge=1, description="Densify and prune every this many steps (gsplat: 100).")
    reset_every: int = Field(
        3000,
        ge=1,
        description="Reset opacities to 2 x prune_opa every this many steps while refining, and prune Gaussians "
        "larger than prune_scale3d only after the first reset (gsplat: 3000 of 30k). The demo default lies beyond "
        "its 600 steps: a reset needs hundreds of steps to recover from.",
    )
    prune_opa: float = Field(0.005, gt=0, lt=1, description="Prune Gaussians whose opacity is below this value.")
    grow_grad2d: float = Field(
        0.0005,
        gt=0,
        description="Duplicate or split Gaussians whose mean image-plane gradient (NDC units) exceeds this value "
        "(gsplat: 0.0002 for ~1000-pixel images; small images give larger gradients: at 128x96 0.0002 grew the demo "
        "from 20k to 55k Gaussians in 400 steps, 0.0005 to 22k).",
    )
    grow_scale3d: float = Field(
        0.01,
        gt=0,
        description="Below this largest 3D scale (fraction of the scene scale) a growing Gaussian is duplicated, "
        "above it split.",
    )
    prune_scale3d: float = Field(
        0.1,
        gt=0,
        description="Prune Gaussians whose largest 3D scale exceeds this fraction of the scene scale, from the step "
        "after the first opacity reset on (step > reset_every, as gsplat and 3DGS): it does nothing while "
        "reset_every >= refine_stop_iter, as at the demo's defaults.",
    )

    # ------------------------------------------------------------------ initialisation, rendering, checkpoints
    init_opacity: float = Field(0.1, gt=0, lt=1, description="Opacity of every Gaussian at initialisation.")
    init_scale: float = Field(
        1.0, gt=0, description="Initial scale = this factor x mean distance to the 3 nearest fused points."
    )
    near_plane: SceneLength = Field(
        0.01,
        description="The renderer's near plane: what lies closer to a camera than this along its axis is not drawn, in "
        "the scene's units (gsplat's 0.01, metres on the demo). 'auto' = the scene's median depth (ingest's "
        "median_depth) / 300, 0.011 on the demo: for scenes in arbitrary units, as COLMAP's are. splat warns when a "
        "number is more than 4x larger than what 'auto' would take. Evaluate, query, render and edit draw with the "
        "value splat trained with.",
    )
    backend: Literal["auto", "torch", "gsplat"] = Field(
        "auto", description="Rasterizer: gsplat (CUDA), the pure-PyTorch one (any device), or auto (by device)."
    )
    checkpoint_every: int = Field(
        100,
        ge=0,
        description="Write a resumable checkpoint every this many steps (0: only at the last step), under "
        "paths.checkpoints/splat. A rerun resumes from the latest checkpoint of the same training settings, inputs, "
        "code and device; a finished run removes the checkpoints of all but the two most recent other runs.",
    )

    # ------------------------------------------------------------------ semantic loss (METHOD.md section 5)
    lambda_sem: float = Field(
        20.0, ge=0, description="Weight of Dist(F, F_z^2D), the rendered-feature distillation term (authors: 20). "
        "Dist is a mean over the distilled pixels and the d channels, the scale this weight is set for; METHOD.md "
        "writes a sum over u.",
    )
    semantic_dist: Literal["l1", "l2"] = Field("l1", description="Dist of the distillation term (authors: L1).")
    dist_normalize: bool = Field(
        False,
        description="Dist compares the rendered feature's direction F(u) / |F(u)| with F_z^2D(u)'s (unit already "
        "unless autoencode.unit_latents is false), as the authors' code does; false = F(u) itself, as the paper writes "
        "it. Segmentation and queries read only the direction.",
    )
    distill_pixels: Literal["all", "labelled_or_pooled", "labelled"] = Field(
        "labelled_or_pooled",
        description="The pixels Dist(F, F_z^2D) runs over. all: every pixel, as METHOD.md's sum over u does. "
        "labelled_or_pooled: those crr labelled and the ignored ones it gave a mask's pooled feature "
        "(crr.ignored_features: mask), not the ignored pixels left with their own, patch-blurred feature (tau2's "
        "boundary pixels, pixels no mask covers): their latents lie near the middle of the latent space, where an "
        "open-set class's text latent lies too, so distilling them paints that class along object boundaries. "
        "labelled: only the pixels crr labelled (most of an open-set class's pixels are ignored). With "
        "crr.ignored_features: own no pixel is pooled, and labelled_or_pooled distils the labelled ones alone.",
    )
    pixel_weights: Literal["uniform", "agreement"] = Field(
        "uniform",
        description="Per-pixel weights of Dist and CE. uniform: every pixel alike, as METHOD.md's sums over u. "
        "agreement: each pixel weighs by the multi-view agreement of its crr decision (fuse's `agreement`: the share "
        "of its voxel's samples, over all training views, that carry the same label, or are ignored alike), so a "
        "label that a few views assert and the rest contradict or leave ignored teaches the splats little; pixels no "
        "3D sample fell on weigh 1. On the demo at 256 x 192: -0.4 on training seed 0, +3.1 / +2.7 on the bad autoencoder draws (seeds 10 / 5, measured before the teacher's streams were split); -0.3 on average over four other rooms x 3 seeds (docs/results.md).",
    )
    lambda_2d: float = Field(
        1.0, ge=0, description="Weight of CE(cos(F, T_z) / T, S^h) against crr's refined labels (authors: 1)."
    )
    ce_normalize: bool = Field(True, description="Divide the CE term by log C (C = number of training classes).")
    feature_geometry_grad: bool = Field(
        False,
        description="Let the semantic terms' gradients reach the geometry (means, scales, rotations, opacities) as "
        "in joint feature-3DGS training. false: they train f only, so the Gaussians' shapes and their "
        "densification follow the colour loss alone (as 3DGS), and f cannot bend geometry toward noisy 2D targets.",
    )
    init_features: Literal["latent", "random"] = Field(
        "latent",
        description="Initial semantic features: the fused points' latents z (the paper's 3D contextual space) or "
        "small random values (the plain feature-distillation ablation).",
    )
    ce_temperature: float = Field(
        1.0,
        ge=TEMPERATURE_MIN,
        le=1,
        description="Temperature T of the CE term's logits cos(F, T_z) / T. 1 = the raw cosines, as the paper's "
        "S(u) = cos<F(u), T_z> and the authors' code have it; 0.05 (the other softmaxes' T) was the default before.",
    )
    temperature: float = Field(
        0.05, ge=TEMPERATURE_MIN, le=1, description="Softmax temperature of cos(F, T_z) / T in relevancy maps "
        "(query, edit, evaluate's 3D selection). Training never reads it: the T of the CE term's S(u) is "
        "ce_temperature.",
    )

    def first_refine_step(self) -> int:
        """The first step that densifies and prunes: the first multiple of refine_every above refine_start_iter
        (below refine_stop_iter, which the validator checks)."""
        return (self.refine_start_iter // self.refine_every + 1) * self.refine_every

    def densification_warning(self) -> str | None:
        """A warning when densification is on but its first step lies past the run's last (steps 0 .. iterations - 1):
        the run then trains the initial Gaussians alone, which a short test run may intend and a long one rarely does."""
        first = self.first_refine_step()
        if not self.refine_stop_iter or first < self.iterations:
            return None
        return (f"splat: warning: no step densifies or prunes: the first would be step {first} "
                f"(after refine_start_iter {self.refine_start_iter}, every {self.refine_every}), past the last of "
                f"splat.iterations ({self.iterations}); lower splat.refine_start_iter, or set splat.refine_stop_iter: 0 "
                "to say densification is off")

    @model_validator(mode="after")
    def _refine_window(self) -> SplatParams:
        if self.refine_stop_iter and self.refine_start_iter >= self.refine_stop_iter:
            raise ValueError(
                f"refine_start_iter ({self.refine_start_iter}) must be below refine_stop_iter "
                f"({self.refine_stop_iter}); set refine_stop_iter: 0 to switch densification off"
            )
        first_refine = self.first_refine_step()
        if self.refine_stop_iter and first_refine >= self.refine_stop_iter:
            raise ValueError(
                f"no step densifies: a step densifies when refine_start_iter ({self.refine_start_iter}) < step < "
                f"refine_stop_iter ({self.refine_stop_iter}) and step is a multiple of refine_every "
                f"({self.refine_every}); widen the window, lower refine_every, or set refine_stop_iter: 0 to switch "
                "densification off"
            )
        return self
