"""evaluate: render held-out views, segment them over the evaluation vocabulary, score -> evaluate.zarr.

Scenes without ground-truth labels still get RGB quality, consistency of the predicted labels,
render FPS and query latency; segmentation scores need labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from econsg import viz
from econsg.artifacts import ArtifactWriter, read_provenance, staged_folder, write_json_atomic
from econsg.config import Params
from econsg.errors import EconsgError, NoGroundTruthError
from econsg.edit import select_gaussians
from econsg.evaluation import (
    gaussian_ground_truth_labels,
    label_names,
    restrict_gt,
    selection_iou,
    subset_scores,
    vocabulary_to_scene_ids,
)
from econsg.device import check_backend, median_seconds, resolve_device
from econsg.features.backends import check_names_case
from econsg.features.base import pixel_probabilities, stored_painted_masks
from econsg.metrics import confusion_matrix, multiview_consistency, segmentation_scores
from econsg.pipeline import stage_main, stage_params
from econsg.progress import report, track
from econsg.protocol_eval import (
    check_scannet_scene,
    evaluate_protocol,
    lerf_labels_folder,
    ovs3d_view_indices,
    protocol_vocabulary,
)
from econsg.protocols import LERF_BARE_PROMPT, LERF_CANONICAL, LERF_RELEVANCY_TEMPERATURE
from econsg.query import lerf_relevancy
from econsg.scene.data import IGNORE
from econsg.scene.readers.lerf import read_lerf_labels
from econsg.scene.readers.ovs3d import read_ovs3d_classes, segmented_views
from econsg.scene.store import open_ground_truth, open_scene
from econsg.semantic import segment_latent
from econsg.splat.quality import load_gaussians, rgb_quality, stored_renderer
from econsg.workspace import load_autoencoder, open_stage, text_query

def run(params: Params) -> None:
    cfg = params.evaluate
    device = resolve_device(params.device)
    check_backend(params.splat.backend, device)
    scene = open_scene(params.paths.artifact("ingest"))
    try:
        truth = open_ground_truth(scene.path)
    except NoGroundTruthError:
        truth = None
    ex = open_stage(params, "extract")
    ae = open_stage(params, "autoencode")
    sp = open_stage(params, "splat")
    model = load_autoencoder(ae).to(device).eval()
    gaussians = load_gaussians(sp, device)
    draw = stored_renderer(sp, params.splat.backend)
    train_vocabulary = list(ex.attrs["vocabulary"])
    lerf_labels = lerf_labels_folder(params)
    check_scannet_scene(cfg.protocol, truth.class_names if truth is not None else [])  # before any work
    eval_vocabulary = evaluation_vocabulary(cfg, truth, train_vocabulary, lerf_labels)
    # label maps index the scene's classes (a scene without labels has only the words it is queried with), then the
    # evaluation words the scene lacks
    scene_classes = list(truth.class_names) if truth is not None else eval_vocabulary
    class_names = label_names(scene_classes, eval_vocabulary)
    ingest_params = read_provenance(scene.path).params.get("ingest", {})
    lerf_views = (lerf_frame_views(scene.names, lerf_labels, (scene.height, scene.width), ingest_params)
                  if cfg.protocol == "lerf" else [])  # checked before any work
    if cfg.protocol == "ovs3d":  # its class list and segmented views, also before any work
        check_ovs3d_views(Path(params.paths.data), scene.names, ingest_params)
    query = text_query(params, model, device)
    eval_text = query.text_embeddings(eval_vocabulary)
    eval_latents = query.text_latents(eval_vocabulary)
    lookup = vocabulary_to_scene_ids(eval_vocabulary, class_names)
    eval_ids = [c for c in lookup if c < len(scene_classes)]  # the scene's classes the vocabulary names: those scored
    C = len(class_names)
    test = scene.test_indices
    H, W = scene.height, scene.width
    confusion = {name: np.zeros((C, C + 1), np.int64) for name in ("econsg", "teacher", "oracle")}
    d = gaussians["features"].shape[1]
    # each Gaussian's ground-truth class where a training view sees it on a surface: the geometry oracle's labels and
    # what the 3D selections by text are scored against
    with_oracle = cfg.geometry_oracle and truth is not None and scene.has_depth
    gaussian_labels = gaussian_ground_truth_labels(
        gaussians["means"].detach().cpu().numpy(), scene.train_indices, classes=truth.classes, depth=scene.depth,
        Ks=scene.Ks, c2w=scene.c2w, num_classes=C) if with_oracle else None
    # the oracle's one-hot channels ride along in the same render as f (channels d: onwards)
    rendered_params = {**gaussians, "features": torch.cat([gaussians["features"], geometry_oracle_features(
        gaussian_labels, C).to(device)], dim=1)} if with_oracle else gaussians
    psnrs, ssims, preds, depths, relevancies, gts = [], [], {}, {}, {}, {}
    palette = viz.class_palette(C)
    # the pictures are written beside plots/evaluate and replace it whole once the store is in: a stopped run leaves
    # both as they were, and a labelled run's confusion.png cannot outlive an unlabelled rerun
    with staged_folder(Path(params.paths.plots) / "evaluate") as plots, ArtifactWriter(
        params.paths.artifact("evaluate"),
        stage="evaluate",
        params=stage_params(params, "evaluate"),
        inputs=[scene.group, ex, ae, sp],
    ) as out:
        pred_arr = out.create_array("pred_labels", (len(test), H, W), "int16", per_view=True, fill_value=-1)
        gt_arr = out.create_array("gt_labels", (len(test), H, W), "int16", per_view=True, fill_value=-1)
        teacher_arr = out.create_array("teacher_labels", (len(test), H, W), "int16", per_view=True)
        rgb_arr = out.create_array("renders", (len(test), H, W, 3), "uint8", per_view=True)
        feat_arr = out.create_array("feature_maps", (len(test), H, W, eval_latents.shape[1]), "float16", per_view=True)
        for i, v in enumerate(track(test, "evaluate: held-out views")):
            viewmat, K = scene.cameras(v, device)
            with torch.no_grad():
                rendered = draw(rendered_params, viewmat, K, W, H)
            rgb = rendered.colors[0].clamp(0, 1)
            psnr, ssim = rgb_quality(rgb, torch.from_numpy(scene.image(v)).to(device))
            psnrs.append(psnr)
            ssims.append(ssim)
            features = rendered.features[0][..., :d]
            index = segment_latent(features, eval_latents).cpu().numpy()
            pred = np.where(index >= 0, lookup[index], IGNORE)
            teacher = teacher_labels(ex, v, eval_text, lookup, H, W)
            # stored rounded to 8 bits as an image; PSNR/SSIM above read the float render (the stored one: ~0.005 dB lower)
            rgb_np = np.rint(rgb.cpu().numpy() * 255).astype(np.uint8)
            pred_arr[i], teacher_arr[i], rgb_arr[i] = pred, teacher, rgb_np
            feat_arr[i] = features.cpu().numpy().astype(np.float16)
            preds[v] = pred
            depths[v] = scene.depth(v) if scene.has_depth else rendered.depth[0, ..., 0].cpu().numpy()
            gt = None
            if truth is not None:
                gt = truth.classes(v).astype(np.int64)
                gts[scene.names[v]] = gt
                gt_arr[i] = gt
                # pixels of classes the evaluation vocabulary lacks cannot be named: ignored, as every protocol does
                scored = restrict_gt(gt, eval_ids)
                confusion["econsg"] += confusion_matrix(pred, scored, C)
                confusion["teacher"] += confusion_matrix(teacher, scored, C)
                if with_oracle:
                    confusion["oracle"] += confusion_matrix(oracle_labels(rendered.features[0][..., d:]), scored, C)
            if i < cfg.overlay_views:
                viz.save_png(view_panel(scene.image(v), rgb_np, gt, teacher, pred, class_names, palette),
                             plots / f"view_{v:04d}.png")
        timed_features = np.asarray(feat_arr[0], np.float32)
        out.create_array("confusion", (C, C + 1), "int64", data=confusion["econsg"])
        out.create_array("text_embeddings", eval_text.shape, "float32", data=eval_text)  # a query of these needs no text tower
        out.attrs.update({"class_names": class_names, "eval_vocabulary": eval_vocabulary, "has_ground_truth": truth is not None,
                          "train_vocabulary": train_vocabulary, "test_views": [int(v) for v in test]})

        # scored inside the writer: a failure here (a protocol's files) keeps the previous evaluate.zarr
        if lerf_views:
            prompts = LERF_BARE_PROMPT if cfg.lerf_prompts == "bare" else None  # LangSplat's scorer encodes bare phrases
            relevancies = lerf_relevancy_maps(scene, lerf_views, gaussians, draw,
                                              query.text_latents(eval_vocabulary, prompts),
                                              query.text_latents(list(LERF_CANONICAL), prompts), device)
        metrics = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "test_views": len(test), "device": device,
                   "consistency": reported_consistency(held_out_consistency(scene, test, depths, preds), len(test)),
                   "has_ground_truth": truth is not None,
                   "protocol": cfg.protocol, **speed(params, scene, gaussians, draw, query, eval_latents, timed_features, device)}
        if truth is not None:
            train_ids = [c for c in vocabulary_to_scene_ids(train_vocabulary, class_names) if c >= 0]
            metrics.update(segmentation_metrics(confusion["econsg"], confusion["teacher"], eval_ids, train_ids, class_names))
            if with_oracle:
                metrics.update(oracle_metrics(confusion["oracle"], eval_ids, class_names))
                selection = selection_scores(params, gaussians["features"], eval_latents, lookup, gaussian_labels, class_names)
                metrics.update({"selection_miou": float(np.mean(list(selection.values()))) if selection else None,
                                "selection_per_class_iou": selection})
            viz.save_png(viz.confusion_picture(confusion["econsg"], class_names), plots / "confusion.png")
            write_json_atomic(plots / "per_class_iou.json", [{"class": k, "iou": v} for k, v in metrics["per_class_iou"].items()])
        if cfg.protocol != "paper" and (truth is not None or cfg.protocol in ("lerf", "ovs3d")):
            downscale = int(ingest_params.get("downscale", 1))
            metrics["benchmark"] = evaluate_protocol(
                cfg.protocol, class_names=scene_classes, predictions={scene.names[v]: preds[v] for v in test}, ground_truth=gts or None,
                relevancy=relevancies or None, query_names=eval_vocabulary, data_root=Path(params.paths.data),
                lerf_labels=lerf_labels, downscale=downscale)
    write_json_atomic(params.paths.metrics_file("evaluate"), metrics)


def evaluation_vocabulary(cfg, truth, train_vocabulary: list[str], lerf_labels: Path | None) -> list[str]:
    """The words the held-out views are segmented over: `evaluate.vocabulary` if set, else the protocol's (on a
    labelled scene, its classes); a scene without labels keeps the training vocabulary. Checked against the scene's
    class names before any work."""
    if cfg.vocabulary is not None:
        vocabulary = list(cfg.vocabulary)
    elif truth is not None or cfg.protocol == "lerf":
        vocabulary = protocol_vocabulary(cfg.protocol, truth.class_names if truth is not None else train_vocabulary,
                                         lerf_labels)
    else:
        vocabulary = train_vocabulary
    if truth is not None:
        check_names_case(vocabulary, truth.class_names, "evaluate.vocabulary")
        if not set(vocabulary) & set(truth.class_names):
            report(f"evaluate: warning: the evaluation vocabulary {vocabulary} names none of the scene's classes "
                   f"{list(truth.class_names)}: nothing is scored (mIoU null); the label maps are kept")
    return vocabulary


def teacher_labels(ex, v: int, eval_text: np.ndarray, lookup: np.ndarray, height: int, width: int) -> np.ndarray:
    """The synthetic teacher's own 2D label map of view v over the evaluation vocabulary (scene class ids): the
    argmax of its pixel probabilities, from the features extract stored."""
    probabilities = pixel_probabilities(ex["features"][v], eval_text, height, width, float(ex.attrs["temperature"]),
                                        stored_painted_masks(ex, v))
    return lookup[probabilities.argmax(-1)]


def view_panel(image: np.ndarray, render: np.ndarray, gt: np.ndarray | None, teacher: np.ndarray, pred: np.ndarray,
               class_names: list[str], palette: np.ndarray) -> np.ndarray:
    """A held-out view's picture, three tiles a row (legible at a page's width): the image, the render, the ground
    truth (if any), then the teacher's and econsg's label maps and the overlay, with a key of the classes it shows."""
    tiles = [("image", image), ("render", render)]
    if gt is not None:
        tiles.append(("ground truth", viz.colour_labels(gt, palette)))
    tiles += [("teacher 2D (eval vocabulary)", viz.colour_labels(teacher, palette)), ("econsg 3D", viz.colour_labels(pred, palette)),
              ("overlay", np.where((pred >= 0)[..., None], viz.overlay(render, viz.colour_labels(pred, palette)),
                                   render))]  # pixels no class won stay as rendered, not darkened
    shown = np.unique(np.concatenate([m.ravel() for m in (pred, teacher, pred if gt is None else gt)]))
    return viz.with_legend(viz.panel(tiles, columns=3), viz.legend(class_names, palette, present=shown[shown >= 0]))


def held_out_consistency(scene, test: np.ndarray, depths: dict, preds: dict) -> float | None:
    """Multi-view consistency: the share of surface points two consecutive held-out views both see (via depth) on
    which their predicted labels agree, over every consecutive pair; None where no pair shares a point."""
    agree, compared = 0.0, 0
    for a, b in zip(test[:-1], test[1:]):
        fraction, count = multiview_consistency(depths[a], scene.Ks[a], scene.c2w[a], preds[a],
                                                depths[b], scene.Ks[b], scene.c2w[b], preds[b])
        if count:
            agree += fraction * count
            compared += count
    return agree / compared if compared else None


def reported_consistency(consistency: float | None, n_test: int) -> float | None:
    """The consistency, said aloud where the scene cannot give one (it is then null in metrics/evaluate.json)."""
    if consistency is None:
        why = ("the scene holds one held-out view" if n_test < 2 else
               f"no two consecutive of the {n_test} held-out views both see and both label a common surface point")
        report(f"evaluate: consistency is null: it compares the labels of consecutive held-out views where both see "
               f"and label the same surface, and {why}")
    return consistency


def segmentation_metrics(confusion: np.ndarray, teacher_confusion: np.ndarray, eval_ids: list[int], train_ids: list[int],
                         class_names: list[str]) -> dict:
    """mIoU and mAcc over the scored classes present, closed-set (the training vocabulary's classes) and open-set (the
    evaluation vocabulary's others) apart, the teacher's on the same pixels, and each class's IoU."""
    open_ids = [c for c in eval_ids if c not in set(train_ids)]
    open_scores = subset_scores(confusion, open_ids)
    if open_ids and not open_scores["classes"]:
        report(f"evaluate: the open-set class(es) {', '.join(class_names[c] for c in open_ids)} appear in no held-out "
               "view, so open_set_miou is null and miou covers the training classes alone")
    overall, teacher_scores = subset_scores(confusion, eval_ids), subset_scores(teacher_confusion, eval_ids)
    class_iou = segmentation_scores(confusion)["iou"]
    return {
        "miou": overall["miou"], "macc": overall["macc"],
        "closed_set_miou": subset_scores(confusion, train_ids)["miou"],
        "open_set_miou": open_scores["miou"] if open_ids else None,
        "open_set_classes": [class_names[c] for c in open_ids],
        "open_set_classes_present": [class_names[c] for c in open_scores["classes"]],
        "teacher_miou": teacher_scores["miou"], "teacher_macc": teacher_scores["macc"],
        "per_class_iou": {class_names[c]: float(class_iou[c]) for c in overall["classes"]},
    }


def lerf_frame_views(view_names: list[str], labels_folder: Path, scene_size: tuple[int, int], ingest_params: dict) -> list[int]:
    """The views of the LERF-OVS labelled frames (frame_00152.jpg -> the view named frame_00152), whatever their
    split: LangSplat scores them as training views, and every 8th view held out by the readers rarely is one. The
    scene must hold every labelled frame at the labels' size (`scene_size` = height, width); `ingest_params` name
    the setting that dropped or shrank one."""
    frames = read_lerf_labels(labels_folder)
    names = [Path(frame.name).stem for frame in frames]
    missing = [name for name in names if name not in view_names]
    if missing:
        raise EconsgError(f"{labels_folder}: labelled frames {missing[:5]} are no view of the scene (views are named "
                          f"like {view_names[:3]}); {dropped_views_cause(ingest_params, 'the label files of this scene')}")
    wrong_size = [f for f in frames if (f.height, f.width) != tuple(scene_size)]
    if wrong_size:
        first = wrong_size[0]
        downscale = ingest_params.get("downscale", 1)
        fix = ("ingest LERF-OVS scenes with ingest.downscale: 1" if downscale != 1 else
               "the scene's images/ are another size than the labels were drawn on; use LERF-OVS's own images")
        raise EconsgError(f"{labels_folder}: labelled frames {[f.name for f in wrong_size[:5]]} are {first.height}x{first.width} "
                          f"(height x width), the scene's views {scene_size[0]}x{scene_size[1]} "
                          f"(ingest.downscale: {downscale}); the LERF-OVS scorer works at the labels' size: {fix}")
    return [view_names.index(name) for name in names]


def dropped_views_cause(ingest_params: dict, expected: str) -> str:
    """Why a protocol's scored views are not in the scene: the ingest settings that kept only some views, if any."""
    chosen = {key: ingest_params[key] for key, default in (("sparse_views", None), ("frame_stride", 1))
              if ingest_params.get(key, default) != default}
    if not chosen:
        return f"expected {expected}"
    return (f"ingest kept only some views ({', '.join(f'ingest.{k}: {v}' for k, v in chosen.items())}): the protocol "
            "scores those views, so ingest must keep them (leave those settings at their defaults)")


def check_ovs3d_views(root: Path, view_names: list[str], ingest_params: dict) -> None:
    """The 3D-OVS class list and segmented views exist, and the scene holds every segmented view."""
    read_ovs3d_classes(root)
    index_of = ovs3d_view_indices(root)
    folders = segmented_views(root)
    missing = [name for name, index in index_of.items() if index in folders and name not in view_names]
    if missing:
        raise EconsgError(f"{root / 'segmentations'}: segmented views {missing[:5]} are no view of the scene; "
                          f"{dropped_views_cause(ingest_params, 'the segmentations of this scene')}")


@torch.no_grad()
def lerf_relevancy_maps(scene, views: list[int], gaussians, draw, query_latents: torch.Tensor,
                        canonical: torch.Tensor, device: str) -> dict[str, np.ndarray]:
    """[Q, H, W] LERF relevancy (`lerf_relevancy`, LangSplat's temperature) of every query in each of `views` (the
    labelled frames', `lerf_frame_views`), keyed by view name; `draw` renders (`stored_renderer`)."""
    maps = {}
    for v in track(views, "evaluate: LERF-OVS labelled frames"):
        viewmat, K = scene.cameras(v, device)
        features = draw(gaussians, viewmat, K, scene.width, scene.height).features[0]
        maps[scene.names[v]] = np.stack([lerf_relevancy(features, q, canonical, LERF_RELEVANCY_TEMPERATURE).cpu().numpy()
                                         for q in query_latents])
    return maps


def oracle_metrics(confusion: np.ndarray, eval_ids: list[int], class_names: list[str]) -> dict:
    """The geometry oracle's mIoU over the scored classes present and its IoU per class (`geometry_oracle_features`)."""
    scores = subset_scores(confusion, eval_ids)
    iou = segmentation_scores(confusion)["iou"]
    return {"geometry_oracle_miou": scores["miou"],
            "geometry_oracle_per_class_iou": {class_names[c]: float(iou[c]) for c in scores["classes"]}}


def geometry_oracle_features(gaussian_labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """[N, C] one-hot features of the geometry oracle: every Gaussian carries the GT class its training views see
    at its mean (`gaussian_ground_truth_labels`; Gaussians no training view sees on its surface carry zeros).
    Rendered and segmented like f, they score the trained geometry with perfect semantics: the gap between that
    mIoU and the method's is semantic error; what it misses is geometry's."""
    onehot = torch.nn.functional.one_hot(torch.from_numpy(gaussian_labels + 1), num_classes + 1)[:, 1:]  # IGNORE -> zeros
    return onehot.float()


@torch.no_grad()
def selection_scores(params: Params, features: torch.Tensor, eval_latents: torch.Tensor, lookup: np.ndarray,
                     gaussian_labels: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """3D selection IoU per class, as `econsg edit` selects: the Gaussians whose relevancy for the class's text,
    against the evaluation vocabulary, passes evaluate.relevancy_threshold, scored against the Gaussians of that
    ground-truth class (`selection_iou`). Classes no Gaussian carries are left out."""
    scores = {}
    for k, scene_id in enumerate(lookup):
        if scene_id < 0:
            continue
        selected = select_gaussians(features, eval_latents[k], eval_latents, params.splat.temperature,
                                    params.evaluate.relevancy_threshold)
        iou = selection_iou(selected.cpu().numpy(), gaussian_labels, int(scene_id))
        if not np.isnan(iou):
            scores[class_names[scene_id]] = iou
    return scores


def oracle_labels(channels: torch.Tensor) -> np.ndarray:
    """The geometry oracle's label map from its rendered one-hot class channels [H, W, C]: the strongest class, and
    IGNORE (no prediction, an error) where no labelled Gaussian reached the pixel, instead of class 0."""
    labels = channels.argmax(-1).cpu().numpy()
    labels[(channels.amax(-1) <= 0).cpu().numpy()] = IGNORE
    return labels


@torch.no_grad()
def speed(params: Params, scene, gaussians, draw, query, eval_latents, cached_features, device) -> dict:
    """Render FPS (RGB + semantic channels, one held-out view) and the latency of a new text on a cached render."""
    repeats = params.evaluate.timing_repeats
    viewmat, K = scene.cameras(scene.test_indices[:1], device)
    render_seconds = median_seconds(lambda r: draw(gaussians, viewmat, K, scene.width, scene.height), repeats, device)
    cached = torch.from_numpy(cached_features).to(device)

    def new_text(r: int):
        latent = query.text_latents([f"an unseen thing number {r}"])
        return segment_latent(cached, torch.cat([latent, eval_latents])).cpu()

    return {"render_fps": 1.0 / render_seconds, "query_latency_ms": 1000 * median_seconds(new_text, repeats, device)}


if __name__ == "__main__":
    stage_main("evaluate")
