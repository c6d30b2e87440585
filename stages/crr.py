"""crr: Confidence-guided Region Regularization of every training view -> crr.zarr."""

from __future__ import annotations

import numpy as np

from econsg.artifacts import ArtifactWriter, read_provenance, write_json_atomic
from econsg.config import Params
from econsg.crr import crr_threshold, identity_crr, refine_labels_crr
from econsg.errors import EconsgError
from econsg.evaluation import score_crr_labels
from econsg.features.base import pixel_probabilities, stored_painted_masks
from econsg.pipeline import stage_main, stage_params
from econsg.progress import report, track
from econsg.scene.store import open_scene
from econsg.workspace import open_stage


def run(params: Params) -> None:
    cfg = params.crr
    scene = open_scene(params.paths.artifact("ingest"))
    ex = open_stage(params, "extract")
    text = ex["text_embeddings"][...]
    temperature = float(ex.attrs["temperature"])
    train = scene.train_indices
    V, H, W = scene.num_views, scene.height, scene.width

    def finite(name: str, v: int, values: np.ndarray | None = None) -> np.ndarray:
        """extract.zarr's `name` of view v (or those `values`, already read from it), refused when not finite."""
        values = np.asarray(ex[name][v]) if values is None else values
        if not np.isfinite(values).all():
            raise EconsgError(
                f"{params.paths.artifact('extract')}: '{name}' of view {v} ({scene.names[v]}) hold NaN or inf; "
                f"expected finite values (crr, fuse and autoencode would spread them): rerun extract"
            )
        return values

    # a generator: confidences are read one view at a time
    thresholds = crr_threshold((finite("confidence", v) for v in train), mode=cfg.tau1_mode, tau1=cfg.tau1)
    confidence = stored_confidence(params.paths.artifact("extract"))
    if cfg.enabled and (warning := tau2_warning(cfg, thresholds, confidence)):
        report(warning)
    D = text.shape[1]
    tables = {}  # per-view mask-class feature tables: small, but their row count is known only at the end
    labelled = 0
    with ArtifactWriter(
        params.paths.artifact("crr"), stage="crr", params=stage_params(params, "crr"), inputs=[ex, scene.group]
    ) as out:
        refined = out.create_array("refined_labels", (V, H, W), "int16", per_view=True, fill_value=-1)
        high = out.create_array("high_confidence", (V, H, W), "bool", per_view=True, fill_value=False)
        covering = out.create_array("covering_mask", (V, H, W), "int32", per_view=True, fill_value=-1)
        source = out.create_array("feature_source", (V, H, W), "int32", per_view=True, fill_value=-1)
        mask_labels = out.create_array("mask_labels", (V, ex["masks"].shape[1]), "int16", per_view=True, fill_value=-1)
        for i, v in enumerate(track(train, "crr: refining training views")):
            features = finite("features", v)
            if cfg.enabled:
                n = int(ex["num_masks"][v])
                painted = stored_painted_masks(ex, v)
                if painted is not None:  # a NaN row spreads to every mask's table row through the sums
                    finite("mask_features", v, painted.features)
                probs = pixel_probabilities(features, text, H, W, temperature, painted)
                try:
                    result = refine_labels_crr(
                        ex["labels"][v], probs, ex["masks"][v, :n], features,
                        tau1_value=float(thresholds[i]), min_votes=cfg.min_votes, tau2=cfg.tau2,
                        ignored_features=cfg.ignored_features, painted=painted, confidence=ex["confidence"][v],
                    )  # tau1 thresholds the confidence its value was chosen from (extract.confidence)
                except EconsgError as error:
                    raise EconsgError(f"{params.paths.artifact('extract')}: view {v} ({scene.names[v]}): {error}; "
                                      "rerun extract") from None
            else:
                result = identity_crr(ex["labels"][v], D)
            refined[v] = result.refined_labels
            labelled += int((result.refined_labels >= 0).sum())
            high[v] = result.high_confidence
            covering[v] = result.covering_mask
            source[v] = result.feature_source
            if len(result.mask_labels):
                mask_labels[v, : len(result.mask_labels)] = result.mask_labels
            tables[v] = result.mask_class_features
        if labelled == 0 and cfg.enabled:
            raise nothing_labelled(cfg, thresholds, (ex["confidence"][v] for v in train), confidence)
        rows = max([len(t) for t in tables.values()] + [1])
        table = out.create_array("mask_class_features", (V, rows, D), "float16", per_view=True)
        for v, rows_v in tables.items():
            if len(rows_v):
                table[v, : len(rows_v)] = rows_v
        tau1 = np.full(V, np.nan, np.float32)
        tau1[train] = thresholds
        out.create_array("tau1", (V,), "float32", data=tau1)
        out.attrs.update({"train_views": [int(v) for v in train], "enabled": cfg.enabled})
        # scored from the store being written, one view at a time, before it replaces the previous crr.zarr
        metrics = score_crr_labels(
            scene.path,
            views=train,
            raw=lambda v: ex["labels"][v],
            refined=lambda v: refined[v],
            vocabulary=list(ex.attrs["vocabulary"]),
        )
    metrics["tau1_mean"] = float(np.nanmean(tau1))
    metrics["labelled_share"] = labelled / (len(train) * H * W)  # label-free: the share of training pixels crr labels
    report(f"crr: {metrics['labelled_share']:.0%} of the training pixels keep a label"
           + (f" (tau1 {value_range(thresholds)}, {cfg.tau1_mode})" if cfg.enabled else " (crr disabled: raw labels)"))
    write_json_atomic(params.paths.metrics_file("crr"), metrics)


def value_range(values: np.ndarray) -> str:
    """'0.311' for one value, '0.280-0.412' for a spread."""
    low, high = float(np.min(values)), float(np.max(values))
    return f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"


def stored_confidence(extract_path) -> str:
    """Which confidence k extract stored (its provenance's extract.confidence; 'softmax', the probability, for a
    store written before the option)."""
    return read_provenance(extract_path).params.get("extract", {}).get("confidence", "softmax")


def tau2_warning(cfg, thresholds: np.ndarray, confidence: str = "softmax") -> str | None:
    """A warning when the per-view tau1 resolves at or below tau2 in some view: tau2 then drops labels tau1 keeps.
    None under a cosine confidence, where tau1 thresholds a cosine and tau2 a probability."""
    if confidence != "softmax":
        return None
    below = int((thresholds <= cfg.tau2).sum())
    if not below:
        return None
    return (f"crr: warning: in {below} of {len(thresholds)} views the {cfg.tau1_mode} tau1 (lowest "
            f"{float(thresholds.min()):.3g}) is at or below crr.tau2 ({cfg.tau2}), so tau2 drops labels that tau1 keeps "
            "(a teacher whose confidences are low, as CLIP's are); lower crr.tau2 below tau1")


def nothing_labelled(cfg, thresholds: np.ndarray, confidences, confidence: str = "softmax") -> EconsgError:
    """The error for a crr that labelled no pixel at all: every later stage would train on ignore alone."""
    highest = max(float(np.max(c)) for c in confidences)
    if confidence != "softmax":  # tau1 reads the label's cosine, tau2 its probability: either may be the cause
        advice = ("lower crr.tau1 (it thresholds the label's cosine, extract.confidence: cosine) or crr.tau2 (the "
                  "probability)")
    elif cfg.tau2 >= float(np.min(thresholds)):
        advice = "lower crr.tau2 below tau1: boundary regularization drops every pixel whose probability is below it"
    elif cfg.tau1_mode == "quantile":
        advice = "lower crr.tau1"
    else:
        advice = "lower crr.tau1 or use crr.tau1_mode: quantile"
    return EconsgError(
        f"crr: no pixel of any training view keeps a label: tau1 ({cfg.tau1_mode}, crr.tau1={cfg.tau1}) is "
        f"{value_range(thresholds)} and the teacher's confidence reaches at most "
        f"{highest:.3f} (crr.tau2={cfg.tau2}, crr.min_votes={cfg.min_votes}); {advice}"
    )


if __name__ == "__main__":
    stage_main("crr")
