"""Params of the open_clip + segment-anything extract backend (econsg/features/openclip_sam.py)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from econsg.config.base import Section


class OpenClipSamParams(Section):
    """Settings of the real extract backend: dense CLIP features (MaskCLIP value path or SAM-mask crops) and SAM masks.

    Weights are read from local files only (nothing is downloaded at run time); relative paths are taken
    from the working directory the stage runs in (the repository root under `dvc repro`).
    """

    model_name: str = Field(
        "ViT-B-16",
        min_length=1,
        description="open_clip architecture name (a built-in config of open_clip with a VisionTransformer image tower).",
    )
    pretrained: str = Field(
        "laion2b_s34b_b88k",
        min_length=1,
        description="open_clip pretrained tag of model_name; its weights are looked up in the local caches "
        "(Hugging Face hub cache, ~/.cache/clip) unless clip_checkpoint is set. Name the tag of clip_checkpoint's "
        "weights too: it also sets the activation (QuickGELU for the OpenAI, DFN and MetaCLIP weights) and the "
        "input normalisation, which a weights file does not record.",
    )
    clip_checkpoint: str | None = Field(
        None,
        description="Local CLIP weights file (open_clip state dict, .bin/.pth/.safetensors) for model_name; "
        "null = find the pretrained tag's file in the caches.",
    )
    clip_cache_dir: str | None = Field(
        None,
        description="Cache directory to look in for the pretrained tag's weights (open_clip's cache_dir); "
        "null = the Hugging Face hub cache and ~/.cache/clip.",
    )
    clip_input_size: int = Field(
        448,
        ge=16,
        le=4096,
        description="Short side, in pixels, the image is resized to before the CLIP image tower (the long side "
        "keeps the aspect ratio, rounded to whole patches); 448 with patch 16 gives a 28-row patch grid.",
    )
    feature_mode: Literal["dense", "mask_crops"] = Field(
        "dense",
        description="'dense': MaskCLIP value-path patch features from one forward pass; 'mask_crops': LangSplat-style, "
        "each SAM mask's crop is encoded by CLIP and its feature painted over the mask's own pixels (METHOD.md): "
        "extract.zarr keeps the mask table and an id map beside the dense grid, which the pixels no mask covers "
        "keep.",
    )
    batch_size: int = Field(
        8, ge=1, le=1024, description="Views per CLIP forward pass (dense mode) and mask crops per pass (mask_crops)."
    )
    sam_model_type: Literal["vit_h", "vit_l", "vit_b"] = Field(
        "vit_h", description="segment-anything image encoder size; must match sam_checkpoint."
    )
    sam_checkpoint: str | None = Field(
        None,
        description="Local SAM weights file; null = checkpoints/<official file name of sam_model_type> "
        "(checkpoints/sam_vit_h_4b8939.pth for vit_h).",
    )
    points_per_side: int = Field(
        32, ge=1, le=256, description="SAM automatic mask generator: prompt points per image side (points_per_side^2 in all)."
    )
    points_per_batch: int = Field(
        64, ge=1, le=4096, description="SAM automatic mask generator: prompt points decoded at once (memory vs speed)."
    )
    pred_iou_thresh: float = Field(
        0.88, ge=0, le=1, description="SAM: masks whose predicted IoU is below this are dropped."
    )
    stability_score_thresh: float = Field(
        0.95, ge=0, le=1, description="SAM: masks whose stability score is below this are dropped."
    )
    box_nms_thresh: float = Field(
        0.7, gt=0, le=1, description="SAM: box IoU above which the lower-scoring of two masks is dropped as a duplicate."
    )
    min_mask_region_area: int = Field(
        100,
        ge=0,
        description="Disconnected islands and holes smaller than this many pixels are removed from every mask, and "
        "masks left smaller than it are dropped (0 = off).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device of both models: auto = the top-level `device` (which picks CUDA when "
        "present); mixed precision on CUDA."
    )

    stand_in: bool = Field(
        False,
        description="Replace CLIP and SAM by tiny randomly initialised models of their architectures, so that no "
        "weights are read: a dry run (`econsg smoke` sets it) that checks a scene, the params and the machine carry "
        "every stage through. Its features, labels and figures mean nothing.",
    )

    @field_validator("clip_checkpoint", "sam_checkpoint", "clip_cache_dir")
    @classmethod
    def _non_blank(cls, value: str | None) -> str | None:
        """A path given, blank refused, `~` read as the home folder (as a shell would)."""
        if value is not None and not value.strip():
            raise ValueError("expected a file path or null, got an empty string")
        return os.path.expanduser(value) if value is not None else value
