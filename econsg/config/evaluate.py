"""Params of the evaluate stage: vocabulary, protocol, and what to render."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from econsg.config.base import Section, unique_names


class EvaluateParams(Section):
    """Scores held-out views: RGB quality, segmentation, consistency, speed."""

    protocol: Literal["paper", "ovs3d", "lerf", "scannet19", "scannet15", "scannet10"] = Field(
        "paper", description="Scoring protocol: 'paper' = mIoU/mAcc over classes present (econSG's Replica/ScanNet "
        "table); 'ovs3d' = 3D-OVS's per-view, per-class IoU and accuracy on its segmented views; 'lerf' = LERF-OVS as "
        "LangSplat scores it (localization accuracy, and mIoU of each query's relevancy at 0.4, on the labelled "
        "frames); 'scannet19' / 'scannet15' / 'scannet10' = OpenGaussian's ScanNet class subsets, on the 2D label maps. "
        "Every protocol's own figures land under `benchmark` in metrics/evaluate.json.",
    )
    vocabulary: list[str] | None = Field(
        None,
        description="Evaluation vocabulary; null = the protocol's: under 'paper' and 'ovs3d' every class of the scene "
        "(training vocabulary plus the open-set classes), under 'scannetN' the subset's names, under 'lerf' the label "
        "files' categories; on a scene without labels, the training vocabulary. Pixels of scene classes it lacks are "
        "not scored.",
    )
    relevancy_threshold: float = Field(
        0.5, gt=0, lt=1, description="Threshold on the relevancy, the softmax probability of the text against the "
        "evaluation vocabulary (`econsg.query.relevancy`), for query masks and edit's and selection_miou's 3D "
        "selection. The LERF-OVS protocol's mIoU always takes LangSplat's 0.4."
    )
    overlay_views: int = Field(4, ge=0, description="Held-out views rendered as overlay pictures for people and dvc plots.")
    lerf_labels: str | None = Field(
        None, description="LERF-OVS protocol: folder of frame_*.json label files; null = <paths.data>/label."
    )
    lerf_prompts: Literal["bare", "templates"] = Field(
        "bare",
        description="LERF-OVS protocol: how its queries and canonical phrases (object, things, stuff, texture) are "
        "embedded for the relevancy it scores: 'bare', the phrase alone, as LangSplat's scorer encodes them; "
        "'templates', averaged over extract.templates, as every other text here.",
    )
    timing_repeats: int = Field(
        5, ge=1, le=100, description="Timed repeats, after one untimed warm-up, of a held-out render and of a new "
        "text's query: render FPS and query latency are their medians.",
    )
    geometry_oracle: bool = Field(
        True,
        description="Also score the geometry oracle (scenes with labels and depth): every trained Gaussian gets the "
        "ground-truth class its training views see at its centre; the held-out mIoU of that rendering bounds what "
        "better semantics could reach on this geometry. The same labels score the 3D selections by text "
        "(selection_miou). Costs one projection of the Gaussians per training view.",
    )

    @field_validator("vocabulary")
    @classmethod
    def _unique_vocabulary(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) == 1:  # argmax over one text labels every pixel with it: a perfect score
            raise ValueError(f"{value}: one word; expected at least two, or null (segmentation picks among them)")
        return unique_names(value)
