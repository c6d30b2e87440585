"""Render-time benchmark of econsg.render on whatever device is present.

    python benchmarks/render.py [--device cpu|cuda] [--repeats 5] [--quick] [--threads N]
    python benchmarks/render.py --scene artifacts/room [--views 6] [--repeats 3]

Prints, per number of Gaussians, resolution and channel set, the median time of one forward render
and of forward + backward, per view; on CUDA also the FPS for 300k Gaussians at 640x480 with
RGB + 16 feature channels and its ratio to RGB only. The scene is random (fixed seed): Gaussians
spread over the view frustum at 2-4 m, a few pixels wide.

With `--scene ARTIFACTS` (a finished run's artifact folder) it times a training step's render instead: the trained
Gaussians of `splat.zarr` rendered into the first `--views` training views of `scene.zarr` as splat trains them
(RGB at the stored SH degree + the semantic channels, no feature gradient into the geometry), then the backward of
a loss on every output; it prints the median and the fastest forward, backward and step over views and repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from econsg.artifacts import open_artifact
from econsg.device import median_seconds, synchronize
from econsg.render import render
from econsg.scene.store import open_scene
from econsg.splat.quality import load_gaussians, stored_renderer


def random_scene(n: int, width: int, height: int, focal: float, n_features: int, device: str, seed: int = 0):
    """N Gaussians in front of an identity camera covering the image, 2D std 0.5-2 px."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=gen) * 2 + 2
    uv = torch.rand(n, 2, generator=gen) * torch.tensor([width, height], dtype=torch.float32)
    xy = (uv - torch.tensor([width / 2, height / 2])) / focal * z[:, None]
    scene = {
        "means": torch.cat([xy, z[:, None]], 1),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": (torch.rand(n, 3, generator=gen) * 1.5 + 0.5) * z[:, None] / focal,
        "opacities": torch.rand(n, generator=gen) * 0.8 + 0.1,
        "colors": torch.rand(n, 3, generator=gen),
        "features": torch.randn(n, n_features, generator=gen) if n_features else None,
    }
    scene = {k: (v.to(device) if v is not None else None) for k, v in scene.items()}
    viewmats = torch.eye(4, device=device)[None]
    Ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], device=device)[None]
    return scene, viewmats, Ks


def time_render(scene, viewmats, Ks, width, height, device, backward: bool, repeats: int) -> float:
    """Median seconds of one render (and backward of a loss on every output when asked)."""
    params = {k: (v.clone().requires_grad_(backward) if v is not None else None) for k, v in scene.items()}

    def once(_repeat: int):
        if backward:
            out = render(params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
                         viewmats, Ks, width, height, features=params["features"])  # fmt: skip
            loss = out.colors.sum() + out.alpha.sum() + out.depth.sum()
            if out.features is not None:
                loss = loss + out.features.sum()
            loss.backward()
        else:
            with torch.no_grad():
                render(params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
                       viewmats, Ks, width, height, features=params["features"])  # fmt: skip

    return median_seconds(once, repeats, device)


def time_trained_scene(artifacts: Path, n_views: int, repeats: int, device: str) -> None:
    """Forward, backward and step times of training-like renders of a finished run's Gaussians (see the module doc)."""
    splat = open_artifact(artifacts / "splat.zarr", "splat")
    scene = open_scene(artifacts / "scene.zarr")
    stored = load_gaussians(splat, device)
    views = scene.train_indices[:n_views]
    viewmats, Ks = scene.cameras(views, device)
    draw = stored_renderer(splat)

    def step(view: int) -> tuple[float, float]:
        params = {name: value.clone().requires_grad_(True) for name, value in stored.items()}
        synchronize(device)
        start = time.perf_counter()
        out = draw(params, viewmats[view : view + 1], Ks[view : view + 1], scene.width, scene.height,
                   feature_geometry_grad=False)
        synchronize(device)
        middle = time.perf_counter()
        loss = out.colors.square().sum() + out.alpha.sum() + (out.features.abs().sum() if out.features is not None else 0)
        loss.backward()
        synchronize(device)
        return middle - start, time.perf_counter() - middle

    step(0)  # warm-up
    times = [step(view) for _ in range(repeats) for view in range(len(views))]
    forward, backward = zip(*times)
    steps = [f + b for f, b in times]
    print(f"{artifacts}: {len(stored['means'])} Gaussians, {scene.width}x{scene.height}, {len(views)} views x {repeats}, "
          f"device={device}, torch threads={torch.get_num_threads()}")  # fmt: skip
    print(f"{'ms':>10} {'median':>8} {'fastest':>8}")
    for label, values in (("forward", forward), ("backward", backward), ("step", steps)):
        print(f"{label:>10} {statistics.median(values) * 1e3:>8.0f} {min(values) * 1e3:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="CPU: skip 640x480")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--scene", type=Path, default=None, help="a finished run's artifact folder: time its training renders")
    parser.add_argument("--views", type=int, default=6, help="with --scene: how many training views")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.scene is not None:
        for store in ("splat.zarr", "scene.zarr"):
            if not (args.scene / store).exists():
                raise SystemExit(f"--scene {args.scene}: no {store} there; run the pipeline through splat first")
        time_trained_scene(args.scene, args.views, args.repeats, device)
        return
    backend = "gsplat" if device == "cuda" else "torch"
    counts = (1_000, 10_000, 100_000) if device == "cuda" else (1_000, 10_000)
    sizes = [(128, 128), (640, 480)] if (device == "cuda" or not args.quick) else [(128, 128)]
    print(f"device={device} backend={backend} torch threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'N':>8} {'W x H':>9} {'channels':>10} {'render ms':>10} {'fwd+bwd ms':>11}")
    for width, height in sizes:
        focal = float(width)
        for n in counts:
            if device == "cpu" and width * height > 128 * 128 and n > 10_000:
                continue
            for n_feat in (0, 8, 16, 32):
                scene, viewmats, Ks = random_scene(n, width, height, focal, n_feat, device)
                fwd = time_render(scene, viewmats, Ks, width, height, device, False, args.repeats)
                both = time_render(scene, viewmats, Ks, width, height, device, True, args.repeats)
                label = "RGB" if n_feat == 0 else f"RGB+{n_feat}"
                print(f"{n:>8} {f'{width}x{height}':>9} {label:>10} {fwd * 1e3:>10.1f} {both * 1e3:>11.1f}", flush=True)
    if device == "cuda":
        width, height, n = 640, 480, 300_000
        fps = {}
        for n_feat in (0, 16):
            scene, viewmats, Ks = random_scene(n, width, height, float(width), n_feat, device)
            fps[n_feat] = 1.0 / time_render(scene, viewmats, Ks, width, height, device, False, max(args.repeats, 20))
        print(f"300k Gaussians 640x480: RGB {fps[0]:.0f} FPS, RGB+16 {fps[16]:.0f} FPS "
              f"(ratio RGB+16 / RGB = {fps[16] / fps[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
