"""Per-view audit panels of what crr decided: image, raw labels, confidence, masks, refined labels, changes."""

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


def audit_panel(image, raw, confidence, masks, refined, vocabulary: Sequence[str]):
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
        ],
        columns=3,
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
            crr["refined_labels"][v], vocabulary,
        )
        paths.append(viz.save_png(picture, out_dir / f"view_{v:04d}.png"))
    if paths:
        viz.contact_sheet(paths, out_dir / "contact_sheet.png")
    rows = "\n".join(
        f'<figure><img src="{p.name}" width="720"><figcaption>{html.escape(p.stem)}</figcaption></figure>' for p in paths
    )
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>econsg crr audit</title>"
        "<h1>CRR audit</h1><p>grey = kept, yellow = relabelled by a SAM mask, red = set to ignore.</p>"
        f"<p><img src='contact_sheet.png' width='960'></p>{rows}\n"
    )
    return paths
