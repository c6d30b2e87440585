"""Per-view audit panels of what crr decided: image, raw labels, confidence, masks, refined labels, changes,
and where each pixel's refined feature came from."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from econsg import viz
from econsg.scene.data import IGNORE


def crr_change_map(raw: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """[H,W,3]: grey = kept, yellow = relabelled by a mask, red = set to ignore."""
    out = np.full((*raw.shape, 3), 60, np.uint8)
    relabelled = (refined != raw) & (refined != IGNORE)
    ignored = refined == IGNORE
    out[relabelled] = (255, 220, 0)
    out[ignored] = (220, 30, 30)
    return out


def feature_source_map(refined: np.ndarray, feature_source: np.ndarray) -> np.ndarray:
    """[H,W,3]: grey = the pixel's own feature, blue = its mask's class mean, magenta = its mask's pooled mean
    (an ignored pixel, `crr.ignored_features: mask`)."""
    out = np.full((*refined.shape, 3), 60, np.uint8)
    from_table = feature_source >= 0
    out[from_table & (refined != IGNORE)] = (40, 110, 230)
    out[from_table & (refined == IGNORE)] = (220, 40, 200)
    return out


def audit_panel(image, raw, confidence, masks, refined, feature_source, vocabulary: Sequence[str]):
    """The audit picture of one view (PIL image) with a legend of the vocabulary's colours."""
    palette = viz.class_palette(len(vocabulary))
    figure = viz.panel(
        [
            ("image", image),
            ("raw labels", viz.colour_labels(raw, palette)),
            ("confidence", viz.colour_scalar(confidence)),
            (f"masks ({len(masks)})", viz.colour_masks(masks)),
            ("refined labels", viz.colour_labels(refined, palette)),
            ("crr changes", crr_change_map(raw, refined)),
            ("refined features", feature_source_map(refined, feature_source)),
        ],
        columns=4,
    )
    return viz.with_legend(figure, viz.legend(vocabulary, palette))


def write_audit(scene, extract, crr, views: Sequence[int], out_dir: Path, track=lambda x, d: x) -> list[Path]:
    """Write one panel per view, a contact sheet and an index.html; returns the panel paths."""
    vocabulary = list(extract.attrs["vocabulary"])
    paths = []
    for v in track(views, "audit: panels"):
        n = int(extract["num_masks"][v])
        picture = audit_panel(
            scene.image(v), extract["labels"][v], extract["confidence"][v], extract["masks"][v, :n],
            crr["refined_labels"][v], crr["feature_source"][v], vocabulary,
        )
        paths.append(viz.save_png(picture, out_dir / f"view_{v:04d}.png"))
    if paths:
        viz.contact_sheet(paths, out_dir / "contact_sheet.png")
    rows = "\n".join(
        f'<figure><img src="{p.name}" width="720"><figcaption>{html.escape(p.stem)}</figcaption></figure>' for p in paths
    )
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>econsg crr audit</title>"
        "<h1>CRR audit</h1><p>crr changes: grey = kept, yellow = relabelled by a SAM mask, red = set to ignore. "
        "Refined features: grey = the pixel's own, blue = its mask's class mean, magenta = an ignored pixel's "
        "pooled mask mean.</p>"
        f"<p><img src='contact_sheet.png' width='960'></p>{rows}\n"
    )
    return paths
