"""One table per dataset from the per-scene evaluate.json files: a row per scene, a mean row.

Layout follows econSG's Table 1 (paper; slides "Segmentation Results of Novel Views"): per setting
(sparse-view, multi-view) the protocol's columns, mIoU and mAcc in percent, then rendering quality (PSNR)
and speed (FPS). Other protocols bring their own columns: 3D-OVS reports mIoU and accuracy
(Kunhao-Liu/3D-OVS), LERF-OVS mIoU and localization accuracy (LangSplat eval/evaluate_iou_loc.py).

Each metrics file is `<out>/<scene>/<setting>/evaluate.json` or `<out>/<scene>/evaluate.json`: scene and
setting are read from its folder relative to `<out>`. A file's protocol scores are its `benchmark`
mapping (econsg.protocol_eval's output) when present, else its top-level keys (the 'paper' protocol).
The mean row averages the scenes that have a value; a missing value (e.g. a scene without labels) is "-".

    python -m econsg.summary <dataset> <metrics files...> [--out metrics/<dataset>]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from econsg.artifacts import write_file_atomic, write_json_atomic
from econsg.errors import EconsgError, refused_path

SEGMENTATION_COLUMNS = (("mIoU", "miou"), ("mAcc", "macc"))
PROTOCOL_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "paper": SEGMENTATION_COLUMNS,
    "scannet19": SEGMENTATION_COLUMNS,
    "scannet15": SEGMENTATION_COLUMNS,
    "scannet10": SEGMENTATION_COLUMNS,
    "ovs3d": (("mIoU", "miou"), ("Acc", "accuracy")),
    "lerf": (("mIoU", "miou"), ("Loc. acc", "localization_accuracy")),
}
PERCENT_KEYS = {"miou", "macc", "accuracy", "localization_accuracy"}
COMMON_COLUMNS = (("PSNR", "psnr"), ("FPS", "render_fps"))
SETTING_TITLES = {"sparse": "sparse-view", "multi": "multi-view", "": ""}


@dataclass(frozen=True)
class RunMetrics:
    """One scene under one setting: its protocol and the values the table shows (None = missing)."""

    scene: str
    setting: str
    protocol: str
    values: dict[str, float | None]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def run_metrics(path: Path, out: Path) -> RunMetrics:
    """Read one evaluate.json; scene / setting come from its folder relative to `out`."""
    path, out = Path(path), Path(out)
    try:
        parts = path.parent.relative_to(out).parts
    except ValueError:
        raise EconsgError(f"{path}: not inside {out}; expected <out>/<scene>[/<setting>]/evaluate.json") from None
    if len(parts) not in (1, 2):
        raise EconsgError(f"{path}: expected <out>/<scene>/evaluate.json or <out>/<scene>/<setting>/evaluate.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EconsgError(f"{path}: unreadable metrics file ({error})") from None
    if not isinstance(data, dict):
        raise EconsgError(f"{path}: expected a JSON object of metrics")
    scores = data.get("benchmark", data)
    if not isinstance(scores, dict):
        raise EconsgError(f"{path}: 'benchmark' must be an object of protocol metrics")
    protocol = str(scores.get("protocol", data.get("protocol", "paper")))
    if protocol not in PROTOCOL_COLUMNS:
        raise EconsgError(f"{path}: protocol {protocol!r} is not one of {sorted(PROTOCOL_COLUMNS)}")
    values = {key: _number(scores.get(key)) for _, key in PROTOCOL_COLUMNS[protocol]}
    values |= {key: _number(data.get(key)) for _, key in COMMON_COLUMNS}
    return RunMetrics(scene=parts[0], setting=parts[1] if len(parts) == 2 else "", protocol=protocol, values=values)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summary_table(dataset: str, runs: Sequence[RunMetrics]) -> dict:
    """The table as data: settings in the paper's order (others after them, in order of first appearance), scenes
    in order of first appearance, one row per scene, a mean row."""
    if not runs:
        raise EconsgError(f"summary {dataset}: no metrics files given")
    protocols = sorted({r.protocol for r in runs})
    if len(protocols) != 1:
        raise EconsgError(f"summary {dataset}: runs mix protocols {protocols}; one table holds one protocol")
    protocol = protocols[0]
    known = list(SETTING_TITLES)  # the paper's order (sparse, then multi), whatever order the files came in
    settings = sorted(dict.fromkeys(r.setting for r in runs), key=lambda s: known.index(s) if s in known else len(known))
    scenes = list(dict.fromkeys(r.scene for r in runs))
    by_key = {}
    for r in runs:
        if (r.scene, r.setting) in by_key:
            raise EconsgError(f"summary {dataset}: scene {r.scene!r} setting {r.setting!r} is given twice")
        by_key[(r.scene, r.setting)] = r
    keys = [key for _, key in PROTOCOL_COLUMNS[protocol] + COMMON_COLUMNS]
    rows = [
        {"scene": scene, **{s: {k: by_key[(scene, s)].values[k] if (scene, s) in by_key else None for k in keys} for s in settings}}
        for scene in scenes
    ]
    mean = {"scene": "mean", **{s: {k: _mean([row[s][k] for row in rows]) for k in keys} for s in settings}}
    return {"dataset": dataset, "protocol": protocol, "settings": settings, "columns": keys, "rows": rows, "mean": mean}


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in PERCENT_KEYS:
        return f"{100 * value:.1f}"
    return f"{value:.1f}" if key in ("psnr", "render_fps") or value >= 10 else f"{value:.3f}"


def render_markdown(table: dict) -> str:
    """The table in Markdown: protocol columns per setting (percent), then PSNR (dB) and FPS."""
    titles = dict(PROTOCOL_COLUMNS[table["protocol"]] + COMMON_COLUMNS)
    names = {key: title for title, key in titles.items()}
    header = ["scene"]
    for setting in table["settings"]:
        prefix = f"{SETTING_TITLES.get(setting, setting)} " if setting else ""
        header += [f"{prefix}{names[key]}" for key in table["columns"]]
    lines = [
        f"# {table['dataset']}: protocol `{table['protocol']}`",
        "",
        "mIoU / mAcc / Acc / Loc. acc in percent; PSNR in dB; FPS = rendered frames per second.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table["rows"] + [table["mean"]]:
        cells = [f"**{row['scene']}**" if row is table["mean"] else row["scene"]]
        for setting in table["settings"]:
            cells += [_cell(key, row[setting][key]) for key in table["columns"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(dataset: str, metrics_files: Sequence[str | Path], out: str | Path) -> dict:
    """Read the metrics files, write `<out>/summary.json` and `<out>/summary.md`; returns the table."""
    out = Path(out)
    table = summary_table(dataset, [run_metrics(Path(p), out) for p in metrics_files])
    write_json_atomic(out / "summary.json", table)  # a DVC metrics file: strict JSON (NaN as null), never half-written
    write_file_atomic(out / "summary.md", lambda tmp: tmp.write_text(render_markdown(table), encoding="utf-8"))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m econsg.summary DATASET FILES... [--out DIR]`; errors print one line and return 1."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m econsg.summary", description="Summary table of a dataset's scenes.")
    parser.add_argument("dataset", help="dataset name (the table's title)")
    parser.add_argument("metrics", nargs="+", help="evaluate.json files under <out>/<scene>[/<setting>]/")
    parser.add_argument("--out", default=None, help="output folder (default metrics/<dataset>)")
    args = parser.parse_args(argv)
    try:
        table = write_summary(args.dataset, args.metrics, args.out or f"metrics/{args.dataset}")
    except (EconsgError, OSError) as error:
        print(f"error: {refused_path(error) if isinstance(error, OSError) else error}", file=sys.stderr)
        return 1
    print(render_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
