"""Params of the crr stage: Confidence-guided Region Regularization (METHOD.md section 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from econsg.config.base import Section


class CrrParams(Section):
    """Thresholds of CRR: tau1 picks the high-confidence pixels, tau2 < tau1 drops uncertain boundary pixels."""

    enabled: bool = Field(True, description="false = pass the raw labels and features through unchanged (ablation).")
    tau1_mode: Literal["absolute", "quantile", "relative"] = Field(
        "quantile",
        description="How tau1 is read: 'absolute' = the confidence threshold itself; 'quantile' = that quantile of "
        "all training views' confidences (one global threshold); 'relative' = tau1 x each view's max confidence "
        "(the authors' code's threshold with tau1 = 0.5 on their confidence, the raw max cosine: extract.confidence: "
        "cosine, and crr.tau2: 0, as it is their only threshold; their votes and relabelling differ from the paper's "
        "steps b-c, which crr keeps).",
    )
    tau1: float = Field(
        0.55,
        gt=0,
        le=1,
        description="Threshold value, quantile or factor of tau1_mode (see there). The default, the 0.55 quantile, "
        "calls the most confident 45 % of all training pixels high-confidence whatever the backend's confidence "
        "scale (CLIP at T = 0.01 and the synthetic teacher differ widely). Against the 0.4 quantile: +1.25 mIoU "
        "points over twelve synthetic rooms, above on 9, mostly the open-set class (docs/results.md).",
    )
    min_votes: int = Field(
        8, ge=1, description="A mask is labelled only when it holds at least this many high-confidence pixels."
    )
    tau2: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Boundary regularization: a pixel whose probability for its final label is below tau2 becomes ignore "
        "(0: off, as in the authors' code, whose only threshold is tau1). Under tau1_mode 'absolute' and "
        "extract.confidence 'softmax', where both read probabilities, it must be below tau1.",
    )

    ignored_features: Literal["own", "mask"] = Field(
        "mask",
        description="The refined feature of a pixel crr leaves ignore: 'own' = its own (METHOD.md's rule); 'mask' = "
        "where no labelled mask covers it, the mean feature of all the pixels of its smallest SAM mask "
        "(LangSplat-style mask pooling; tau2's boundary pixels keep their own). A class the vocabulary lacks is "
        "mostly ignored, and its pooled feature is far less noisy than a pixel's: +0.3 / +2.7 / +3.6 mIoU points "
        "on the synthetic scenes of seeds 0 / 1 / 2.",
    )

