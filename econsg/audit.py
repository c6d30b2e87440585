"""Per-view audit panels of what crr decided: image, raw labels, confidence, masks, refined labels, changes,
where each pixel's refined feature came from, and (once fuse has run) how far the other views agree with it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from econsg import viz
from econsg.scene.data import IGNORE


KEPT, RELABELLED, SET_IGNORE = (60, 60, 60), (255, 220, 0), (220, 30, 30)
OWN_FEATURE, CLASS_MEAN, POOLED = (60, 60, 60), (40, 110, 230), (220, 40, 200)
NO_SAMPLE = (30, 60, 160)


def crr_change_map(raw: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """[H,W,3]: grey = kept, yellow = relabelled by a mask, red = set to ignore."""
    out = np.full((*raw.shape, 3), KEPT, np.uint8)
    relabelled = (refined != raw) & (refined != IGNORE)
    ignored = refined == IGNORE
    out[relabelled] = RELABELLED
    out[ignored] = SET_IGNORE
    return out


def feature_source_map(refined: np.ndarray, feature_source: np.ndarray) -> np.ndarray:
    """[H,W,3]: grey = the pixel's own feature, blue = its mask's class mean, magenta = its mask's pooled mean
    (an ignored pixel, `crr.ignored_features: mask`)."""
    out = np.full((*refined.shape, 3), OWN_FEATURE, np.uint8)
    from_table = feature_source >= 0
    out[from_table & (refined != IGNORE)] = CLASS_MEAN
    out[from_table & (refined == IGNORE)] = POOLED
    return out


def agreement_map(agreement: np.ndarray) -> np.ndarray:
    """[H,W,3]: fuse's multi-view agreement on the dark-to-yellow ramp (1 = every view of the surface made the same
    decision), blue where no 3D sample fell."""
    out = viz.colour_scalar(np.nan_to_num(agreement, nan=0.0))
    out[~np.isfinite(agreement)] = NO_SAMPLE
    return out


def audit_keys(vocabulary: Sequence[str], palette: np.ndarray, with_agreement: bool):
    """The keys beside an audit panel: the classes' colours, then what the other tiles' colours mean."""
    keys = [
        viz.legend(vocabulary, palette),
        viz.ramp_key("confidence", "0", "1"),
        viz.key([("no mask", (0, 0, 0))], title="masks: a colour each"),
        viz.key([("kept", KEPT), ("relabelled by a mask", RELABELLED), ("set to ignore", SET_IGNORE)], title="crr changes"),
        viz.key([("own", OWN_FEATURE), ("mask's class mean", CLASS_MEAN), ("pooled (ignored pixel)", POOLED)],
                title="refined features"),
    ]
    if with_agreement:
        keys += [viz.ramp_key("multi-view agreement", "0", "1"), viz.key([("no 3D sample", NO_SAMPLE)])]
    return viz.stack(keys)


def audit_panel(image, raw, confidence, masks, refined, feature_source, vocabulary: Sequence[str], agreement=None,
                palette=None):
    """The audit picture of one view (PIL image) with a legend of the vocabulary's colours (`palette` [C,3], one per
    vocabulary class; default: by position); `agreement` [H,W] (fuse's, None before fuse has run) adds its tile."""
    palette = viz.class_palette(len(vocabulary)) if palette is None else palette
    tiles = [
        ("image", image),
        ("raw labels", viz.colour_labels(raw, palette)),
        ("confidence", viz.colour_scalar(confidence)),
        (f"masks ({len(masks)})", viz.colour_masks(masks)),
        ("refined labels", viz.colour_labels(refined, palette)),
        ("crr changes", crr_change_map(raw, refined)),
        ("refined features", feature_source_map(refined, feature_source)),
    ]
    if agreement is not None:
        tiles.append(("multi-view agreement", agreement_map(np.asarray(agreement, dtype=np.float32))))
    figure = viz.panel(tiles, columns=4)
    return viz.with_legend(figure, audit_keys(vocabulary, palette, agreement is not None))


def write_audit(scene, extract, crr, views: Sequence[int], out_dir: Path, track=lambda x, d: x, fuse=None,
                classes: Sequence[str] | None = None) -> list[Path]:
    """Write one panel per view, a contact sheet and an index.html; returns the panel paths. With `fuse` (its store),
    each panel shows the multi-view agreement too. Labels are coloured by name from `classes`, the run's class list
    that every picture of it colours by (default: the scene's classes, else the training vocabulary)."""
    vocabulary = list(extract.attrs["vocabulary"])
    palette = viz.named_palette(vocabulary, classes or scene.class_names or vocabulary)
    paths = []
    for v in track(views, "audit: panels"):
        n = int(extract["num_masks"][v])
        picture = audit_panel(
            scene.image(v), extract["labels"][v], extract["confidence"][v], extract["masks"][v, :n],
            crr["refined_labels"][v], crr["feature_source"][v], vocabulary,
            None if fuse is None else fuse["agreement"][v], palette,
        )
        paths.append(viz.save_png(picture, out_dir / f"view_{v:04d}.png"))
    for stale in set(Path(out_dir).glob("view_*.png")) - set(paths):  # an earlier audit's panels, which the index
        stale.unlink()  # no longer lists, would show another crr's decisions beside these
    if paths:
        viz.contact_sheet(paths, out_dir / "contact_sheet.png")
    rows = "\n".join(
        f'<figure><a href="{p.name}"><img src="{p.name}" style="max-width: 100%"></a>'
        f"<figcaption>{html.escape(p.stem)} (click for the full-size panel)</figcaption></figure>"
        for p in paths
    )
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>econsg crr audit</title>"
        "<h1>CRR audit</h1><p>crr changes: grey = kept, yellow = relabelled by a SAM mask, red = set to ignore. "
        "Refined features: grey = the pixel's own, blue = its mask's class mean, magenta = an ignored pixel's "
        "pooled mask mean. Multi-view agreement (after fuse): the share of all training views' samples of the same "
        "surface that made the same decision (dark = contradicted, yellow = confirmed, blue = no 3D sample).</p>"
        f"<p><img src='contact_sheet.png' width='960'></p>{rows}\n"
    , encoding="utf-8")
    return paths
