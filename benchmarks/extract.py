"""Throughput of the extract backends: views per second at 640x480 (random weights, no checkpoints needed).

openclip_sam: open_clip ViT-B-16 + SAM vit_h architectures with random weights (the real per-view cost of
the architecture; random SAM weights give fewer masks than trained ones, so mask post-processing is
cheaper here than in a real run). Thresholds are set to 0 so random SAM masks still reach NMS.
Rows: the CLIP dense pass alone, SAM automatic masks alone, and the whole backend (extract_views).
`--tiny` swaps in the small random test models so a CPU run finishes in seconds.
synthetic: the synthetic teacher (econsg.features.teacher) on a random box scene, when it imports.

Run: .venv/bin/python benchmarks/extract.py --device cpu --tiny
     .venv/bin/python benchmarks/extract.py --device cpu --clip-only --views 2 --batch-size 2
     .venv/bin/python benchmarks/extract.py --device cuda --views 16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from econsg.config.openclip_sam import OpenClipSamParams
from econsg.device import resolve_device, synchronize
from econsg.features.openclip_sam import (
    OpenClipSamExtractor,
    random_clip_model,
    random_sam_model,
    tiny_clip_model,
    tiny_sam_model,
)
from econsg.features.text import HashedTextEncoder, encode_vocabulary

VOCABULARY = ["wall", "floor", "ceiling", "table", "chair", "sofa", "lamp", "shelf", "bed", "cabinet"]


def timed(fn, device: torch.device) -> float:
    """Wall seconds of fn() (CUDA synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def openclip_sam_rows(args, device: torch.device) -> list[tuple[str, float, str]]:
    """(name, views/s, note) rows for the openclip_sam backend."""
    if args.tiny:
        (clip, tokenizer), sam = tiny_clip_model(seed=0), tiny_sam_model(seed=0)
        arch = "tiny CLIP ViT (w64, 2 layers) + tiny SAM"
    else:
        clip, tokenizer = random_clip_model("ViT-B-16", seed=0)
        # --clip-only never runs SAM: a tiny stand-in spares building vit_h's 632M random weights
        sam = tiny_sam_model(seed=0) if args.clip_only else random_sam_model("vit_h", seed=0)
        arch = "ViT-B-16" if args.clip_only else "ViT-B-16 + SAM vit_h"
    params = OpenClipSamParams(
        clip_input_size=args.clip_input_size,
        points_per_side=args.points_per_side,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        batch_size=args.batch_size,
        feature_mode=args.feature_mode,
        device=device.type,
    )
    extractor = OpenClipSamExtractor(params, clip_model=clip, tokenizer=tokenizer, sam=sam, device=device)
    rng = np.random.default_rng(0)
    images = [rng.random((args.height, args.width, 3), dtype=np.float32) for _ in range(args.views)]
    text = extractor.text_embeddings(VOCABULARY)

    def dense():
        for start in range(0, len(images), args.batch_size):
            extractor.dense_features(images[start : start + args.batch_size])

    dense()  # warm-up (allocations, kernels)
    t_dense = timed(dense, device)
    grid = extractor.dense_features(images[:1]).shape[1:3]
    dense_row = ("openclip_sam: CLIP dense pass", args.views / t_dense, f"{arch}, batch {args.batch_size}, grid {grid[0]}x{grid[1]}")
    if args.clip_only:
        return [dense_row]
    extractor.view_masks(images[0])  # warm-up
    masks_per_view = []
    t_sam = timed(lambda: masks_per_view.extend(len(extractor.view_masks(im)[0]) for im in images), device)
    t_all = timed(lambda: list(extractor.extract_views(images, text, 0.01)), device)
    note = f"{params.points_per_side}^2 points, {np.mean(masks_per_view):.0f} masks/view"
    return [
        dense_row,
        ("openclip_sam: SAM automatic masks", args.views / t_sam, note),
        (f"openclip_sam: whole backend ({args.feature_mode})", args.views / t_all, ""),
    ]


def synthetic_rows(args) -> list[tuple[str, float, str]]:
    """The synthetic teacher on random axis-aligned boxes (ground truth) at the same resolution."""
    try:
        from econsg.config.extract import SyntheticTeacherParams
        from econsg.features.teacher import synthetic_teacher_view
    except ImportError as error:
        return [("synthetic teacher", float("nan"), f"not available ({error})")]
    rng = np.random.default_rng(0)
    encoder = HashedTextEncoder(dim=512, seed=0)
    class_embeddings = encode_vocabulary(encoder, VOCABULARY)
    params = SyntheticTeacherParams()
    H, W = args.height, args.width
    views = []
    for _ in range(args.views):
        gt_class = np.zeros((H, W), np.int64)
        gt_instance = np.zeros((H, W), np.int64)
        for instance in range(1, 13):
            y0, x0 = rng.integers(0, H - 40), rng.integers(0, W - 40)
            y1, x1 = y0 + rng.integers(30, H // 2), x0 + rng.integers(30, W // 2)
            gt_class[y0:y1, x0:x1] = rng.integers(0, len(VOCABULARY))
            gt_instance[y0:y1, x0:x1] = instance
        views.append((gt_class, gt_instance))
    start = time.perf_counter()
    for v, (gt_class, gt_instance) in enumerate(views):
        synthetic_teacher_view(
            gt_class, gt_instance, class_embeddings, class_embeddings, params, 0.05, np.random.default_rng([0, v]),
            class_names=VOCABULARY,
        )
    seconds = time.perf_counter() - start
    return [("synthetic teacher", args.views / seconds, f"D=512, patch {params.patch_size}, 12 boxes/view")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--tiny", action="store_true", help="small random models (fast on CPU)")
    parser.add_argument("--views", type=int, default=None, help="views timed (default 16 on CUDA, 4 tiny, 1 full on CPU)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clip-input-size", type=int, default=448)
    parser.add_argument("--points-per-side", type=int, default=None, help="default 32 (full) or 8 (tiny)")
    parser.add_argument("--feature-mode", choices=["dense", "mask_crops"], default="dense")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--clip-only", action="store_true", help="time only the CLIP dense pass (full models on CPU)")
    args = parser.parse_args()
    device = torch.device(resolve_device(args.device))
    if args.views is None:
        args.views = 16 if device.type == "cuda" else (4 if args.tiny else 1)
    if args.points_per_side is None:
        args.points_per_side = 8 if args.tiny else 32
    if args.tiny and args.clip_input_size == 448:
        args.clip_input_size = 64

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"extract throughput at {args.width}x{args.height}, {args.views} views, device {name}")
    rows = openclip_sam_rows(args, device)
    if not args.skip_synthetic:
        rows += synthetic_rows(args)
    print(f"{'backend':<42} {'views/s':>9}  notes")
    for label, rate, note in rows:
        print(f"{label:<42} {rate:9.3f}  {note}")


if __name__ == "__main__":
    main()
