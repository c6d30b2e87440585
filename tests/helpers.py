"""Small fixtures shared by the tests: a tiny Blender-layout dataset written by hand, tiny backend settings."""

from __future__ import annotations

import importlib.util
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

# openclip_sam settings sized for tiny_clip_model / tiny_sam_model: thresholds 0 and NMS 1, so that random SAM
# weights still yield many masks
TINY_OPENCLIP_SAM = dict(clip_input_size=64, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                         box_nms_thresh=1.0, min_mask_region_area=4, batch_size=4, device="cpu")


def look_at_c2w(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world looking from eye at target (z forward, y down)."""
    eye, target, up = (np.asarray(x, float) for x in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def write_tiny_blender(root: Path, *, views: int = 4, width: int = 16, height: int = 12, classes=("wall", "box")) -> Path:
    """A dataset of cameras looking at a plane z=0 from height 2: depth 2 m at the centre pixel."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "depth", "semantic", "instance"):
        (root / sub).mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    fx = 20.0
    frames = {"train": [], "test": []}
    for v in range(views):
        name = f"frame_{v:04d}"
        c2w = look_at_c2w((0.3 * v, 0.0, 2.0), (0.3 * v, 0.0, 0.0), up=(0.0, 1.0, 0.0))
        image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        depth = np.full((height, width), 2000, np.uint16)
        Image.fromarray(depth).save(root / "depth" / f"{name}.png")
        semantic = np.zeros((height, width), np.uint8)
        semantic[:, width // 2 :] = 1
        Image.fromarray(semantic).save(root / "semantic" / f"{name}.png")
        Image.fromarray((semantic.astype(np.uint16) + 1)).save(root / "instance" / f"{name}.png")
        split = "test" if v == views - 1 else "train"
        frames[split].append(
            {
                "file_path": f"images/{name}.png",
                "depth_file_path": f"depth/{name}.png",
                "semantic_file_path": f"semantic/{name}.png",
                "instance_file_path": f"instance/{name}.png",
                "transform_matrix": (c2w @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist(),
            }
        )
    for split, items in frames.items():
        meta = {"camera_model": "PINHOLE", "w": width, "h": height, "fl_x": fx, "fl_y": fx,
                "cx": width / 2, "cy": height / 2, "depth_scale": 1000.0, "frames": items}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


@contextmanager
def load_benchmark(path: Path):
    """The benchmark script as a module, registered in sys.modules while in use (dataclasses resolve their module
    through it)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def painted_example(seed: int = 0, height: int = 12, width: int = 16, dim: int = 6):
    """A coarse [2, 2, dim] grid and PaintedMasks over a [height, width] view: one large mask, one of 2 x 2 pixels
    inside it (far smaller than a grid cell), and pixels no mask covers; returns grid, painted and the brute-force
    [H, W, dim] pixel features (the up-sampled grid, each covered pixel's row replaced by its mask's feature)."""
    from econsg.features.base import PaintedMasks, normalize_rows, smallest_covering_mask, upsample_feature_rows

    rng = np.random.default_rng(seed)
    grid = rng.standard_normal((2, 2, dim)).astype(np.float32)
    masks = np.zeros((2, height, width), bool)
    masks[0, : height // 2, : width // 2] = True
    masks[1, 2:4, 3:5] = True  # 4 pixels, inside mask 0
    painted = PaintedMasks(smallest_covering_mask(masks), rng.standard_normal((2, dim)).astype(np.float16))
    cube = upsample_feature_rows(grid, height, width)
    unit = normalize_rows(painted.features)
    cube[masks[0]] = unit[0]
    cube[masks[1]] = unit[1]
    return grid, painted, cube


def restamp(store: Path, readers: tuple[Path, ...] = ()) -> None:
    """A store's provenance rehashed to its files now: as if its stage had written the values a test put in it
    (opening it otherwise refuses the change as damage). `readers`: later stores that read it, their record of its
    hash updated too, as if they had been built from it."""
    import zarr

    from econsg.artifacts import PROVENANCE_KEY, hash_store_content

    group = zarr.open_group(store=str(store), mode="r+")
    digest = hash_store_content(Path(store))
    group.attrs[PROVENANCE_KEY] = {**group.attrs[PROVENANCE_KEY], "content_hash": digest}
    for reader in readers:
        group = zarr.open_group(store=str(reader), mode="r+")
        provenance = dict(group.attrs[PROVENANCE_KEY])
        inputs = {path: (digest if Path(path).name == Path(store).name else old) for path, old in provenance["inputs"].items()}
        group.attrs[PROVENANCE_KEY] = {**provenance, "inputs": inputs}
