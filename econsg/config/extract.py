"""Params of the extract stage: vocabulary, text prompts, and the 2D feature backend (synthetic teacher or open_clip + SAM)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from econsg.config.base import TEMPERATURE_MIN, Section, unique_names
from econsg.config.openclip_sam import OpenClipSamParams
from econsg.features.text import PROMPT_TEMPLATES, template_error

DEFAULT_CONFUSIONS: tuple[tuple[str, str], ...] = (
    ("sofa", "chair"),
    ("table", "cabinet"),
    ("bed", "sofa"),
    ("lamp", "plant"),
    ("shelf", "cabinet"),
    ("wall", "ceiling"),
    ("tv", "cabinet"),
)


AUTO_TEMPERATURE = {"synthetic": 0.05, "openclip_sam": 0.01}  # extract.temperature: auto, per backend


class SyntheticTeacherParams(Section):
    """Knobs of the synthetic teacher's degradation model (econsg/features/teacher.py documents each step).

    Defaults give raw 2D labels of roughly 0.55-0.70 mIoU on the embedded room, with errors CRR can fix
    (patch blur at boundaries, blotchy noise inside objects) and errors no mask can fix (confused instances). By
    default a confusion is drawn per view, so the other views of a confused object can outvote it in 3D;
    `confusion_scope: object` makes it the same in every view, which nothing can fix.
    """

    patch_size: int = Field(
        8, ge=1, le=64, description="Pixels per side of a feature-grid cell (the VLM's patch): clean features are average-pooled over it."
    )
    grid_blur: float = Field(
        0.0, ge=0, le=8, description="Std of an extra Gaussian blur of the feature grid, in grid cells (0 = none)."
    )
    feature_noise: float = Field(
        3.5,
        ge=0,
        le=100,
        description="Gaussian noise added to every grid cell, as the expected noise norm relative to the unit clean "
        "feature (per-component std = feature_noise / sqrt(D)).",
    )
    confusion_prob: float = Field(
        0.2, ge=0, le=1, description="Chance that an instance's feature is pulled toward a confusable class."
    )
    confusion_weight_min: float = Field(
        0.3, ge=0, le=1, description="Smallest mixing weight w of a confusion: clean = normalize((1 - w) t_true + w t_other)."
    )
    confusion_weight_max: float = Field(
        0.8, ge=0, le=1, description="Largest mixing weight w of a confusion (w > 0.5 flips the whole instance's label)."
    )
    confusions: list[tuple[str, str]] = Field(
        default_factory=lambda: [list(pair) for pair in DEFAULT_CONFUSIONS],
        description="Confusable class pairs (applied both ways); a class with no listed partner in the scene is "
        "confused with its nearest class in text space.",
    )
    confusion_scope: Literal["view", "object"] = Field(
        "view",
        description="Where a confusion is drawn: 'view' draws it afresh for every instance in every view, so an object "
        "is confused in some views and right in the others, and fusing the views can outvote it; 'object' draws it "
        "once per object (instance id, else class) for all views, as a VLM that always misreads an object would.",
    )
    p_split: float = Field(0.15, ge=0, le=1, description="Chance that an instance mask is cut in two by a random line.")
    p_merge: float = Field(0.1, ge=0, le=1, description="Chance that an instance mask is merged with a touching instance.")
    p_drop: float = Field(0.1, ge=0, le=1, description="Chance that an instance mask is missing.")
    boundary_jitter: int = Field(
        2, ge=0, le=16, description="Masks are dilated or eroded by a random 0..boundary_jitter pixels."
    )
    min_area: int = Field(16, ge=1, description="Masks smaller than this many pixels are removed.")
    part_masks: int = Field(3, ge=0, le=64, description="Random part masks (a disc inside an instance) added per view.")

    @model_validator(mode="after")
    def _weights_ordered(self) -> SyntheticTeacherParams:
        if self.confusion_weight_min > self.confusion_weight_max:
            raise ValueError(
                f"confusion_weight_min ({self.confusion_weight_min}) must not exceed confusion_weight_max "
                f"({self.confusion_weight_max})"
            )
        return self

    @field_validator("confusions")
    @classmethod
    def _pairs_distinct(cls, value: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for a, b in value:
            if a == b or not a.strip() or not b.strip():
                raise ValueError(f"expected pairs of two different class names, got ({a!r}, {b!r})")
        return value


class ExtractParams(Section):
    """2D vision-language features, labels, confidence and SAM(-like) masks per view (METHOD.md section 1)."""

    backend: Literal["synthetic", "openclip_sam"] = Field(
        "synthetic",
        description="'synthetic': the offline teacher degrading the ground truth (embedded demo); "
        "'openclip_sam': dense CLIP features and SAM masks from local checkpoints.",
    )
    vocabulary: list[str] | None = Field(
        None,
        description="Training vocabulary (class names); null = the scene's class list minus open_set_classes.",
    )
    open_set_classes: list[str] = Field(
        default_factory=lambda: ["plant"],
        description="Classes held out of the training vocabulary and queried only at evaluation (open-set). "
        "'plant' is a small, distinct object class of the demo room, so holding it out tests open-vocabulary "
        "queries without removing a structural class (wall, floor) that the rest of the scene depends on.",
    )
    temperature: Annotated[float, Field(ge=TEMPERATURE_MIN, le=1)] | Literal["auto"] = Field(
        "auto",
        description="Softmax temperature T of p = softmax(cos(F, t) / T), in (0, 1], or auto: the backend's own. "
        "CLIP's cosines differ by ~0.05 between classes and use T = 0.01 (auto for openclip_sam); the hashed text "
        "encoder's differ by ~0.3, so 0.05 gives probabilities of comparable sharpness (auto for synthetic). At "
        "0.05 CLIP's probabilities are nearly flat, and crr's tau2 ignores most pixels.",
    )
    confidence: Literal["softmax", "cosine"] = Field(
        "softmax",
        description="The confidence k(u) extract stores, which crr's tau1 thresholds and fuse weighs votes by: "
        "'softmax' = the label's probability, max_c softmax(cos(F, t_c) / T) (METHOD.md); 'cosine' = the label's cosine "
        "itself, max_c cos(F, t_c), at least 0 (the authors' code; with crr.tau1_mode: relative, crr.tau1: 0.5 "
        "and crr.tau2: 0, their threshold; the rest of crr stays the paper's). crr's tau2 reads the probability either "
        "way.",
    )
    feature_dim: int = Field(
        512, ge=2, le=4096, description="Feature width D of the synthetic teacher and its hashed text encoder (512, as "
        "CLIP ViT-B's). openclip_sam takes D from its CLIP model and leaves this unread.")
    templates: list[str] = Field(
        default_factory=lambda: list(PROMPT_TEMPLATES),
        min_length=1,
        description="Prompt templates, each with one '{}' for the class name; embeddings are averaged over them.",
    )
    max_masks: int = Field(
        128, ge=1, le=4096, description="Most masks stored per view for crr's votes: the smallest beyond this number are not stored "
                                     "(extract warns and counts them in its metrics; the features still use them)."
    )
    synthetic: SyntheticTeacherParams = Field(
        default_factory=SyntheticTeacherParams, description="Degradation model of the synthetic teacher."
    )
    openclip_sam: OpenClipSamParams = Field(
        default_factory=OpenClipSamParams, description="Settings of the open_clip + segment-anything backend."
    )

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, value: list[str]) -> list[str]:
        for template in value:
            if (why := template_error(template)) is not None:
                raise ValueError(f"{template!r}: {why}")
        return value

    @field_validator("vocabulary")
    @classmethod
    def _unique_vocabulary(cls, value: list[str] | None) -> list[str] | None:
        return unique_names(value)

    @field_validator("open_set_classes")
    @classmethod
    def _unique_open_set(cls, value: list[str]) -> list[str]:
        return unique_names(value) if value else value

    def settings_read(self) -> dict:
        """Every field but the other backend's: the synthetic teacher's (and its feature width) under openclip_sam,
        openclip_sam's under synthetic. A setting of the backend not in use then leaves extract.zarr as it was, and
        `dvc repro` stops after extract."""
        unread = {"synthetic": {"openclip_sam"}, "openclip_sam": {"synthetic", "feature_dim"}}[self.backend]
        return self.model_dump(mode="json", exclude=unread)

    @property
    def softmax_temperature(self) -> float:
        """T of p = softmax(cos(F, t) / T): the set value, or the backend's own for 'auto'."""
        if self.temperature != "auto":
            return float(self.temperature)
        return AUTO_TEMPERATURE[self.backend]

    @model_validator(mode="after")
    def _vocabulary_disjoint(self) -> ExtractParams:
        if self.vocabulary is not None:  # case aside: CLIP's tokenizer, as the offline encoder, lower-cases
            held = sorted({name.casefold() for name in self.vocabulary} & {name.casefold() for name in self.open_set_classes})
            if held:
                raise ValueError(f"vocabulary: {held} also listed in open_set_classes; a held-out class cannot be trained on")
        return self
