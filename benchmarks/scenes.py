"""The whole pipeline on other synthetic scenes: prints markdown tables (not a test).

Every scene N is a new room (`synth.seed=N`, trained with `seed=N`): its own objects, layout, textures, cameras and
teacher draws, generated into `OUT/sceneN/` and run through every stage there, so nothing of the demo's artifacts
or data is touched. It checks the defaults on scenes they were not chosen on. Two tables:
  per scene  mIoU (closed / open-set), the teacher's 2D mIoU on the same held-out views, the margin over it, the
             geometry oracle, the 3D selections by text (selection_miou), PSNR, and the classes where econsg
             scores below the teacher
  per class  over the scenes that hold it: econsg's IoU, the teacher's and the geometry oracle's, mean (min-max)

Run:  python benchmarks/scenes.py --scenes 3 4 5 [--params params.yaml] [--out scenes] [--set splat.iterations=300 ...]
(about 4 minutes a scene at the default 256 x 192 on a 2-core CPU). `--set` takes any stage's parameter, synth's too, except the scene's
own `synth.seed` and `seed` and the `paths`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from econsg.artifacts import open_artifact
from econsg.config import load_params
from econsg.evaluation import rescore_evaluate
from econsg.pipeline import STAGE_ORDER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablations import cell, difference, run_stages  # noqa: E402

COLUMNS = ("miou", "closed_set_miou", "open_set_miou", "teacher_miou", "over_teacher", "geometry_oracle_miou",
           "selection_miou", "psnr")
RESERVED = ("synth.seed", "seed", "paths")


def check_settings(settings: list[str], params_file: Path) -> None:
    """Refuse a setting the scenes own (their seeds, the paths) and any bad key or value, before anything runs."""
    for item in settings:
        key = item.split("=", 1)[0]
        if any(key == reserved or key.startswith(reserved + ".") for reserved in RESERVED):
            raise SystemExit(f"--set {item}: each scene sets synth.seed, seed and paths itself; use --scenes")
    load_params(params_file, settings)  # a bad key or value raises ConfigError naming it


def run_scene(scene: int, settings: list[str], params_file: Path, root: Path) -> dict:
    """Generate scene `scene` into `root` and run every stage there; its evaluate metrics, with the per-class IoUs
    of econsg and the teacher rescored from the label maps evaluate keeps."""
    overrides = [*settings, f"synth.seed={scene}", f"seed={scene}", f"paths.data={root / 'data'}"]
    run_stages(list(STAGE_ORDER), overrides, params_file, root)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text(encoding="utf-8"))
    store = root / "artifacts" / load_params(params_file).paths.artifact("evaluate").name
    rescored = rescore_evaluate(open_artifact(store, "evaluate"), None, [])
    metrics["per_class"] = rescored["per_class"]
    return metrics


def below_teacher(run: dict) -> str:
    """The classes econsg scores below the teacher on, as 'lamp 0.10 < 0.32'."""
    rows = sorted(run["per_class"].items(), key=lambda item: item[1]["iou"] - item[1]["teacher_iou"])
    return ", ".join(f"{name} {row['iou']:.2f} < {row['teacher_iou']:.2f}"
                     for name, row in rows if row["iou"] < row["teacher_iou"]) or "none"


def scene_table(runs: dict[int, dict]) -> str:
    """A row per scene and a mean (min-max) row; NaN (a scene without its open-set class) is left out of the mean."""
    lines = ["| scene | " + " | ".join(COLUMNS) + " | below the teacher |", "|" + "---|" * (len(COLUMNS) + 2)]
    rows = {scene: {**run, "over_teacher": difference(run, run, "miou", "teacher_miou")} for scene, run in runs.items()}
    for scene, run in rows.items():
        lines.append(f"| {scene} | " + " | ".join(cell([run.get(c)]) for c in COLUMNS) + f" | {below_teacher(run)} |")
    if len(rows) > 1:
        means = []
        for column in COLUMNS:
            values = [run.get(column) for run in rows.values()]
            values = [v for v in values if isinstance(v, (int, float)) and not np.isnan(v)]
            means.append(cell(values) if values else "-")
        lines.append("| all | " + " | ".join(means) + " | |")
    return "\n".join(lines)


def class_table(runs: dict[int, dict]) -> str:
    """A row per class over the scenes that hold it, worst econsg IoU first."""
    per_class: dict[str, list[tuple[float, float, float]]] = {}
    for run in runs.values():
        oracle = run.get("geometry_oracle_per_class_iou", {})
        for name, row in run["per_class"].items():
            per_class.setdefault(name, []).append((row["iou"], row["teacher_iou"], oracle.get(name, float("nan"))))
    lines = ["| class | scenes | IoU | teacher IoU | geometry oracle |", "|---|---|---|---|---|"]
    for name, values in sorted(per_class.items(), key=lambda item: np.mean([v[0] for v in item[1]])):
        iou, teacher, oracle = zip(*values, strict=True)
        lines.append(f"| {name} | {len(values)} | {cell(list(iou))} | {cell(list(teacher))} | {cell(list(oracle))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("scenes"))
    parser.add_argument("--scenes", nargs="+", type=int, required=True, help="scene seeds (synth.seed, seed)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting every scene runs under (repeatable)")
    args = parser.parse_args()
    check_settings(args.settings, args.params)
    runs = {}
    for scene in args.scenes:  # a row as each scene ends: a later scene's failure keeps the earlier ones in view
        runs[scene] = run_scene(scene, args.settings, args.params, args.out / f"scene{scene}")
        print(f"scene {scene}: mIoU {runs[scene]['miou']:.3f}, teacher {runs[scene]['teacher_miou']:.3f} "
              f"({args.out / f'scene{scene}'})", flush=True)
    report = scene_table(runs) + "\n\n" + class_table(runs)
    print(report)
    (args.out / "scenes.md").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
