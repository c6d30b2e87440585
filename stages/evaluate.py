"""evaluate: render held-out views, segment them over the evaluation vocabulary, score -> evaluate.zarr."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from econsg import viz
from econsg.artifacts import ArtifactWriter, open_artifact, write_json_atomic
from econsg.config import Params
from econsg.evaluation import subset_scores, vocabulary_to_scene_ids
from econsg.features.backends import embed_classes, resolve_device
from econsg.features.base import pixel_probabilities
from econsg.metrics import confusion_matrix, multiview_consistency
from econsg.pipeline import stage_main, stage_params
from econsg.progress import track
from econsg.query import LatentQuery
from econsg.scene.store import open_ground_truth, open_scene
from econsg.semantic import segment_latent
from econsg.splat.quality import load_gaussians, render_views
from econsg.workspace import load_autoencoder

def run(params: Params) -> None:
    cfg = params.evaluate
    device = resolve_device(params.device)
    scene = open_scene(params.paths.artifact("ingest"))
    truth = open_ground_truth(scene.path)
    ex = open_artifact(params.paths.artifact("extract"), "extract")
    ae = open_artifact(params.paths.artifact("autoencode"), "autoencode")
    sp = open_artifact(params.paths.artifact("splat"), "splat")
    model = load_autoencoder(ae).to(device).eval()
    gaussians = load_gaussians(sp, device)
    sh_degree = int(sp.attrs["sh_degree"])
    train_vocabulary = list(ex.attrs["vocabulary"])
    eval_vocabulary = list(cfg.vocabulary) if cfg.vocabulary is not None else list(truth.class_names)
    query = LatentQuery(model, params.extract, device)
    eval_text = embed_classes(query.encoder, eval_vocabulary, params.extract)
    eval_latents = query.text_latents(eval_vocabulary)
    lookup = vocabulary_to_scene_ids(eval_vocabulary, truth.class_names)
    C = len(truth.class_names)
    test = scene.test_indices
    H, W = scene.height, scene.width
    conf_pred = np.zeros((C, C + 1), np.int64)
    conf_teacher = np.zeros((C, C + 1), np.int64)
    psnrs, ssims, preds, depths = [], [], {}, {}
    palette = viz.class_palette(C)
    plots = Path(params.paths.plots) / "evaluate"
    with ArtifactWriter(
        params.paths.artifact("evaluate"),
        stage="evaluate",
        params=stage_params(params, "evaluate"),
        inputs=[scene.path, params.paths.artifact("extract"), params.paths.artifact("autoencode"), params.paths.artifact("splat")],
    ) as out:
        pred_arr = out.create_array("pred_labels", (len(test), H, W), "int16", per_view=True, fill_value=-1)
        gt_arr = out.create_array("gt_labels", (len(test), H, W), "int16", per_view=True, fill_value=-1)
        teacher_arr = out.create_array("teacher_labels", (len(test), H, W), "int16", dims=("view", "y", "x"), per_view=True)
        rgb_arr = out.create_array("renders", (len(test), H, W, 3), "uint8", dims=("view", "y", "x", "rgb"), per_view=True)
        feat_arr = out.create_array("feature_maps", (len(test), H, W, eval_latents.shape[1]), "float16",
                                    dims=("view", "y", "x", "latent"), per_view=True)
        for i, v in enumerate(track(test, "evaluate: held-out views")):
            viewmat = torch.from_numpy(np.linalg.inv(scene.c2w[v : v + 1])).float().to(device)
            K = torch.from_numpy(scene.Ks[v : v + 1]).float().to(device)
            with torch.no_grad():
                rendered = render_views(gaussians, viewmat, K, W, H, sh_degree, params.splat.backend)
            rgb = rendered.colors[0].clamp(0, 1)
            gt_rgb = torch.from_numpy(scene.image(v)).to(device)
            psnrs.append(float(peak_signal_noise_ratio(rgb[None].permute(0, 3, 1, 2), gt_rgb[None].permute(0, 3, 1, 2), data_range=1.0)))
            ssims.append(float(structural_similarity_index_measure(rgb[None].permute(0, 3, 1, 2), gt_rgb[None].permute(0, 3, 1, 2), data_range=1.0)))
            features = rendered.features[0]
            pred = lookup[segment_latent(features, eval_latents).cpu().numpy()]
            gt = truth.classes(v).astype(np.int64)
            teacher_probs = pixel_probabilities(ex["features"][v], eval_text, H, W, float(ex.attrs["temperature"]))
            teacher = lookup[teacher_probs.argmax(-1)]
            conf_pred += confusion_matrix(pred, gt, C)
            conf_teacher += confusion_matrix(teacher, gt, C)
            pred_arr[i], gt_arr[i], teacher_arr[i] = pred, gt, teacher
            rgb_np = (rgb.cpu().numpy() * 255).astype(np.uint8)
            rgb_arr[i] = rgb_np
            feat_arr[i] = features.cpu().numpy().astype(np.float16)
            preds[v] = pred
            depths[v] = scene.depth(v) if scene.has_depth else rendered.depth[0, ..., 0].cpu().numpy()
            if i < cfg.overlay_views:
                figure = viz.panel([
                    ("image", scene.image(v)), ("render", rgb_np), ("ground truth", viz.colour_labels(gt, palette)),
                    ("teacher 2D", viz.colour_labels(teacher, palette)), ("econsg 3D", viz.colour_labels(pred, palette)),
                    ("overlay", viz.overlay(rgb_np, viz.colour_labels(pred, palette))),
                ])
                viz.save_png(viz.with_legend(figure, viz.legend(truth.class_names, palette)), plots / f"view_{v:04d}.png")
        out.create_array("confusion", (C, C + 1), "int64", data=conf_pred)
        out.attrs.update({"class_names": list(truth.class_names), "eval_vocabulary": eval_vocabulary,
                          "train_vocabulary": train_vocabulary, "test_views": [int(v) for v in test]})

    consistency, compared = [], 0
    for a, b in zip(test[:-1], test[1:]):
        agree, count = multiview_consistency(depths[a], scene.Ks[a], scene.c2w[a], preds[a],
                                             depths[b], scene.Ks[b], scene.c2w[b], preds[b])
        if count:
            consistency.append(agree * count)
            compared += count

    # speed: render FPS (RGB + semantic channels) and the latency of a new text query on a cached render
    viewmat = torch.from_numpy(np.linalg.inv(scene.c2w[test[:1]])).float().to(device)
    K = torch.from_numpy(scene.Ks[test[:1]]).float().to(device)
    with torch.no_grad():
        render_views(gaussians, viewmat, K, W, H, sh_degree, params.splat.backend)
        start = time.perf_counter()
        for _ in range(cfg.timing_repeats):
            render_views(gaussians, viewmat, K, W, H, sh_degree, params.splat.backend)
        render_seconds = (time.perf_counter() - start) / cfg.timing_repeats
    cached = torch.from_numpy(np.asarray(feat_arr[0], np.float32)).to(device)
    start = time.perf_counter()
    for r in range(cfg.timing_repeats):
        latent = query.text_latents([f"an unseen thing number {r}"])
        segment_latent(cached, torch.cat([latent, eval_latents]))
    query_ms = 1000 * (time.perf_counter() - start) / cfg.timing_repeats

    train_ids = [c for c in vocabulary_to_scene_ids(train_vocabulary, truth.class_names) if c >= 0]
    eval_ids = [c for c in lookup if c >= 0]
    open_ids = [c for c in eval_ids if c not in set(train_ids)]
    overall, teacher = subset_scores(conf_pred, eval_ids), subset_scores(conf_teacher, eval_ids)
    per_class = {truth.class_names[c]: float(conf_pred[c, c] / max(conf_pred[c].sum() + conf_pred[:, c].sum() - conf_pred[c, c], 1))
                 for c in overall["classes"]}
    metrics = {
        "miou": overall["miou"], "macc": overall["macc"],
        "closed_set_miou": subset_scores(conf_pred, train_ids)["miou"],
        "open_set_miou": subset_scores(conf_pred, open_ids)["miou"] if open_ids else None,
        "open_set_classes": [truth.class_names[c] for c in open_ids],
        "teacher_miou": teacher["miou"], "teacher_macc": teacher["macc"],
        "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
        "consistency": float(sum(consistency) / max(compared, 1)),
        "render_fps": 1.0 / render_seconds, "query_latency_ms": query_ms,
        "per_class_iou": per_class, "test_views": len(test), "device": device,
    }
    write_json_atomic(params.paths.metrics_file("evaluate"), metrics)
    viz.save_png(viz.confusion_picture(conf_pred, truth.class_names), plots / "confusion.png")
    write_json_atomic(plots / "per_class_iou.json", [{"class": k, "iou": v} for k, v in per_class.items()])


if __name__ == "__main__":
    stage_main("evaluate")
