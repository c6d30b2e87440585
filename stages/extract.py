"""extract: per-view vision-language features, labels, confidence and SAM(-like) masks -> extract.zarr."""

from __future__ import annotations

import time

import numpy as np

from econsg.artifacts import ArtifactWriter, write_json_atomic
from econsg.config import Params
from econsg.device import resolve_device
from econsg.errors import EconsgError, NoGroundTruthError
from econsg.features.backends import (
    absent_open_set_warning,
    build_text_encoder,
    coarse_grid_warning,
    embed_classes,
    one_class_warning,
    training_vocabulary,
)
from econsg.features.base import ViewFeatures
from econsg.pipeline import stage_main, stage_params
from econsg.progress import report, track
from econsg.scene.store import open_scene


def synthetic_views(params: Params, scene, vocabulary_embeddings, encoder):
    """The offline teacher's views, one at a time: reads ground truth only through its degradation model. A scene
    without ground truth is refused here, before any store is opened, naming the backend to use instead."""
    from econsg.features.teacher import synthetic_teacher_view
    from econsg.scene.store import open_ground_truth

    try:
        truth = open_ground_truth(scene.path)
    except NoGroundTruthError:
        raise EconsgError(f"extract.backend: 'synthetic' builds its features from ground-truth labels, which {scene.path} "
                          "lacks; set extract.backend: openclip_sam and extract.vocabulary to the words to segment") from None
    class_embeddings = embed_classes(encoder, truth.class_names, params.extract)

    def views():
        # A view's draws are keyed by its place in the whole dataset, not in this selection: a sparse-view run's
        # teacher sees every view it keeps, the held-out ones included, exactly as the full run's does.
        unlabelled = []
        for v in range(scene.num_views):
            gt_class = truth.classes(v)
            if scene.is_train[v] and not (gt_class >= 0).any():
                unlabelled.append(scene.names[v])
            yield synthetic_teacher_view(
                gt_class,
                truth.instances(v),
                class_embeddings,
                vocabulary_embeddings,
                params.extract.synthetic,
                params.extract.softmax_temperature,
                np.random.default_rng([params.seed, 2, int(scene.dataset_views[v])]),
                class_names=truth.class_names,
                object_seed=params.seed,
                confidence=params.extract.confidence,
            )
        if unlabelled:
            report(unlabelled_training_views_warning(unlabelled))

    return views()


def unlabelled_training_views_warning(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"extract: warning: extract.backend: synthetic builds its features from ground-truth labels, and {len(names)} "
            f"training view(s) have none ({shown}): their features carry no class (3D-OVS labels its test views only). "
            "Use extract.backend: openclip_sam on such a dataset")


def openclip_sam_views(params: Params, scene, vocabulary_embeddings, extractor):
    images = (scene.image(v) for v in range(scene.num_views))
    yield from extractor.extract_views(images, vocabulary_embeddings, params.extract.softmax_temperature,
                                       params.extract.confidence)


def run(params: Params) -> None:
    ex = params.extract
    scene = open_scene(params.paths.artifact("ingest"))
    vocabulary = training_vocabulary(ex, scene.class_names)
    stand_in = ("extract: warning: extract.openclip_sam.stand_in: tiny random CLIP and SAM stand in for the weights; "
                "the features, labels and every figure that follows mean nothing"
                if ex.backend == "openclip_sam" and ex.openclip_sam.stand_in else None)
    for warning in (absent_open_set_warning(ex, scene.class_names), one_class_warning(vocabulary), stand_in,
                    coarse_grid_warning(ex, scene.height, scene.width)):
        if warning:
            report(warning)
    # the backend's own device when set, else the run's
    backend_device = ex.openclip_sam.device if ex.backend == "openclip_sam" else "auto"
    device = (resolve_device(params.device) if backend_device == "auto"
              else resolve_device(backend_device, "extract.openclip_sam.device"))
    if ex.backend == "synthetic":
        encoder = build_text_encoder(ex, device)
        text = embed_classes(encoder, vocabulary, ex)
        views = synthetic_views(params, scene, text, encoder)
    else:
        from econsg.features.openclip_sam import OpenClipSamExtractor

        extractor = OpenClipSamExtractor(ex.openclip_sam, device=device)
        text = embed_classes(extractor.text_encoder, vocabulary, ex)
        views = openclip_sam_views(params, scene, text, extractor)

    V, H, W = scene.num_views, scene.height, scene.width
    start = time.perf_counter()
    with ArtifactWriter(
        params.paths.artifact("extract"), stage="extract", params=stage_params(params, "extract"), inputs=[scene.group]
    ) as out:
        out.create_array("text_embeddings", text.shape, "float32", data=text)
        labels = out.create_array("labels", (V, H, W), "int16", per_view=True)
        confidence = out.create_array("confidence", (V, H, W), "float32", per_view=True)
        masks = out.create_array("masks", (V, ex.max_masks, H, W), "bool", per_view=True, fill_value=False)
        scores = out.create_array("mask_scores", (V, ex.max_masks, 3), "float32", per_view=True)
        num_masks = np.zeros(V, np.int32)
        dropped = np.zeros(V, np.int32)
        features = None
        mask_ids, mask_tables = None, {}  # the mask-crop backend's id maps and mask tables (rows known at the end)
        for v, view in enumerate(track(views, f"extract ({ex.backend})", total=V)):
            view: ViewFeatures
            if features is None:
                h, w, D = view.features.shape
                features = out.create_array("features", (V, h, w, D), "float16", per_view=True)
            features[v] = view.features.astype(np.float16)
            if view.painted is not None:
                if mask_ids is None:
                    mask_ids = out.create_array("mask_ids", (V, H, W), "int32", per_view=True, fill_value=-1)
                mask_ids[v] = view.painted.ids
                mask_tables[v] = view.painted.features.astype(np.float16)
            labels[v] = view.labels
            confidence[v] = view.confidence
            keep = min(len(view.masks), ex.max_masks)  # masks come sorted by area: the smallest are dropped
            num_masks[v], dropped[v] = keep, len(view.masks) - keep
            if keep:
                masks[v, :keep] = view.masks[:keep]
                scores[v, :keep] = view.mask_scores[:keep]
        if mask_ids is not None:
            rows = max([len(t) for t in mask_tables.values()] + [1])
            table = out.create_array("mask_features", (V, rows, D), "float16", per_view=True)
            for v, rows_v in mask_tables.items():
                if len(rows_v):
                    table[v, : len(rows_v)] = rows_v
        seconds = time.perf_counter() - start
        if dropped.any():
            report(f"extract: warning: {int((dropped > 0).sum())} of {V} views had more than extract.max_masks = "
                   f"{ex.max_masks} masks; their {int(dropped.sum())} smallest masks were not stored, so crr cannot "
                   "vote within them (the features still used them); raise extract.max_masks to keep them")
        out.create_array("num_masks", (V,), "int32", data=num_masks)
        out.attrs.update(
            {"vocabulary": vocabulary, "temperature": ex.softmax_temperature, "backend": ex.backend, "templates": list(ex.templates)}
        )
    write_json_atomic(
        params.paths.metrics_file("extract"),
        {"backend": ex.backend, "views": V, "seconds": round(seconds, 3), "views_per_second": round(V / max(seconds, 1e-9), 2),
         "mean_masks_per_view": float(num_masks.mean()),
         "masks_not_stored": int(dropped.sum())},
    )


if __name__ == "__main__":
    stage_main("extract")
