"""The synthetic teacher's own held-out mIoU over many draws, per confusion scope: prints a table (not a test).

evaluate sets econsg against the teacher's 2D mIoU on the same held-out views (`teacher_miou`), one draw of the
teacher's degradations per run. This redraws only the teacher, as extract does for the held-out views (the draw keyed
by `seed` and each view's place in the dataset), for seeds 0..N-1, once with the confusions drawn per view (the
default `extract.synthetic.confusion_scope: view`) and once per object (`object`: an object the teacher misreads, it
misreads in every view), and scores each draw as evaluate scores the teacher: argmax over the scene's classes, one
confusion matrix over the held-out views, the mean IoU over the classes present. It reads ground truth, as evaluate
and the teacher do; nothing goes back into a stage. A few seconds per draw on 2 cores.

Run after `dvc repro` (it reads scene.zarr):  python benchmarks/teacher_draws.py [--params params.yaml] [--seeds 10]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from econsg.config import load_params
from econsg.features.backends import build_text_encoder, embed_classes
from econsg.features.base import pixel_probabilities
from econsg.features.teacher import synthetic_teacher_view
from econsg.metrics import confusion_matrix, segmentation_scores
from econsg.scene.store import open_ground_truth, open_scene


def teacher_miou(params, scene, truth, class_embeddings, scope: str, seed: int) -> float:
    """The teacher's held-out mIoU for one draw (`seed`) under one confusion scope."""
    synthetic = params.extract.synthetic.model_copy(update={"confusion_scope": scope})
    temperature = params.extract.softmax_temperature
    C = len(truth.class_names)
    confusion = np.zeros((C, C + 1), np.int64)
    for v in scene.test_indices:
        view = synthetic_teacher_view(truth.classes(v), truth.instances(v), class_embeddings, class_embeddings, synthetic,
                                      temperature, np.random.default_rng([seed, 2, int(scene.dataset_views[v])]),
                                      class_names=truth.class_names, object_seed=seed)  # fmt: skip
        predicted = pixel_probabilities(view.features, class_embeddings, scene.height, scene.width, temperature).argmax(-1)
        confusion += confusion_matrix(predicted, truth.classes(v).astype(np.int64), C)
    return float(segmentation_scores(confusion)["miou"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, default=10, help="draws 0..N-1 (default 10)")
    args = parser.parse_args()
    params = load_params(args.params)
    scene = open_scene(params.paths.artifact("ingest"))
    truth = open_ground_truth(scene.path)
    class_embeddings = embed_classes(build_text_encoder(params.extract), truth.class_names, params.extract)
    print(f"teacher mIoU on {len(scene.test_indices)} held-out views, seeds 0-{args.seeds - 1}\n")
    print("| confusion scope | mean | min-max | per seed |\n|---|---|---|---|")
    for scope in ("view", "object"):
        scores = [teacher_miou(params, scene, truth, class_embeddings, scope, seed) for seed in range(args.seeds)]
        print(f"| {scope} | {statistics.mean(scores):.3f} | {min(scores):.3f}-{max(scores):.3f} | "
              + " / ".join(f"{s:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
