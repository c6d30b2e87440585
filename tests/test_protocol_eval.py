"""evaluate_protocol: each benchmark's glue on hand-made scenes with known answers."""

import numpy as np
import pytest
from PIL import Image

from econsg.errors import EconsgError
from econsg.protocol_eval import check_scannet_scene, evaluate_protocol, ovs3d_view_indices, protocol_vocabulary
from econsg.scene.readers.scannet import NYU40_CLASS_NAMES
from tests.dataset_fixtures import synthetic_views, write_lerf_frame, write_ovs3d


def test_paper_scores_views_by_name_over_present_classes():
    gt = {"b": np.array([[1, 1], [1, 1]]), "a": np.array([[0, 0], [1, -1]])}
    pred = {"a": np.array([[0, 1], [1, 2]]), "b": np.array([[1, 1], [1, -1]]), "unscored": np.zeros((2, 2), int)}
    scores = evaluate_protocol("paper", class_names=["x", "y", "z"], predictions=pred, ground_truth=gt)
    assert scores["protocol"] == "paper" and scores["views"] == 2
    assert scores["miou"] == pytest.approx((1 / 2 + 4 / 6) / 2)
    assert scores["macc"] == pytest.approx((1 / 2 + 4 / 5) / 2)
    assert set(scores["per_class_iou"]) == {"x", "y"}  # z is absent from the ground truth


def test_paper_refuses_a_missing_prediction():
    with pytest.raises(EconsgError, match=r"no map for views \['b'\]"):
        evaluate_protocol("paper", class_names=["x"], predictions={"a": np.zeros((2, 2), int)},
                          ground_truth={"a": np.zeros((2, 2), int), "b": np.zeros((2, 2), int)})


def test_scannet_subset_maps_nyu40_ids_and_counts_outside_predictions_wrong():
    wall, floor, otherprop = 0, 1, NYU40_CLASS_NAMES.index("otherprop")
    gt = {"v": np.array([[wall, wall], [floor, otherprop]])}
    pred = {"v": np.array([[wall, otherprop], [floor, floor]])}
    scores = evaluate_protocol("scannet10", class_names=NYU40_CLASS_NAMES, predictions=pred, ground_truth=gt)
    # otherprop is outside the subset: its gt pixel is ignored, its prediction on a wall pixel is wrong.
    assert scores["per_class_iou"] == {"wall": pytest.approx(0.5), "floor": pytest.approx(1.0)}
    assert scores["macc"] == pytest.approx((0.5 + 1.0) / 2)
    assert protocol_vocabulary("scannet10", NYU40_CLASS_NAMES)[:2] == ["wall", "floor"]


def test_ovs3d_reads_masks_and_matches_views_by_image_name(tmp_path):
    views = synthetic_views(n=6, width=8, height=6, num_classes=3)
    names = ["cup", "apple", "book"]
    write_ovs3d(tmp_path, views, names, segmented=(0, 4))
    classes = sorted(names)
    index = ovs3d_view_indices(tmp_path)
    perfect = {name: np.maximum(views.labels[i], 0).astype(np.int64) for name, i in index.items()}  # top row unlabelled
    scores = evaluate_protocol("ovs3d", class_names=classes, predictions=perfect, data_root=tmp_path)
    assert scores["views"] == 2 and set(scores["per_view_miou"]) == {"000", "004"}

    def iou(pred, truth, c):
        union = ((pred == c) | (truth == c)).sum()
        return ((pred == c) & (truth == c)).sum() / union if union else 0.0

    expected = np.mean([np.mean([iou(perfect[f"{v:03d}"], views.labels[v], c) for c in range(3)]) for v in (0, 4)])
    assert scores["miou"] == pytest.approx(expected)
    assert scores["accuracy"] == pytest.approx(5 / 6)  # the unlabelled top row is in no mask: always wrong
    wrong = dict(perfect, **{"004": (views.labels[4] + 1) % 3})
    assert evaluate_protocol("ovs3d", class_names=classes, predictions=wrong, data_root=tmp_path)["accuracy"] == pytest.approx(5 / 12)


def test_ovs3d_shrinks_masks_like_ingest_and_checks_classes(tmp_path):
    views = synthetic_views(n=5, width=8, height=6, num_classes=2)
    write_ovs3d(tmp_path, views, ["a", "b"], segmented=(0,))
    # the reference shrinks each class mask with PIL's NEAREST resize: predictions that are that, exactly, score 1
    full = Image.fromarray(views.labels[0].astype(np.uint8))
    small = {"000": np.asarray(full.resize((full.width // 2, full.height // 2), Image.NEAREST)).astype(np.int64)}
    scores = evaluate_protocol("ovs3d", class_names=["a", "b"], predictions=small, data_root=tmp_path, downscale=2)
    assert scores["accuracy"] == pytest.approx(1.0)
    with pytest.raises(EconsgError, match="downscale"):
        evaluate_protocol("ovs3d", class_names=["a", "b"], predictions=small, data_root=tmp_path)
    with pytest.raises(EconsgError, match="differ from the scene"):
        evaluate_protocol("ovs3d", class_names=["b", "a"], predictions=small, data_root=tmp_path, downscale=2)


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_lerf_matches_frames_to_views_and_picks_each_frames_queries(tmp_path):
    H, W = 40, 60
    write_lerf_frame(tmp_path / "frame_00001.json", "frame_00001.jpg", H, W,
                     [{"category": "cup", "bbox": [5, 5, 20, 20], "segmentation": _square(5, 5, 20, 20)}])
    write_lerf_frame(tmp_path / "frame_00007.json", "frame_00007.jpg", H, W,
                     [{"category": "book", "bbox": [35, 10, 55, 30], "segmentation": _square(35, 10, 55, 30)}])
    assert protocol_vocabulary("lerf", [], tmp_path) == ["cup", "book"]
    queries = ["book", "cup", "unused"]
    good = np.zeros((3, H, W))
    good[1, 5:21, 5:21] = 1.0  # cup where the cup is
    good[0, 10:31, 35:56] = 1.0  # book where the book is
    bad = np.zeros((3, H, W))
    bad[0, 0:8, 0:8] = 1.0  # book in the wrong corner
    relevancy = {"frame_00001": good, "frame_00007": bad}
    scores = evaluate_protocol("lerf", class_names=[], relevancy=relevancy, query_names=queries, lerf_labels=tmp_path)
    assert scores["queries"] == 2 and scores["frames"] == 2
    assert scores["per_category_localization"] == {"cup": 1.0, "book": 0.0}
    assert scores["localization_accuracy"] == pytest.approx(0.5)
    assert scores["per_category_iou"]["cup"] > 0.8 and scores["per_category_iou"]["book"] == 0.0
    with pytest.raises(EconsgError, match=r"\['frame_00007'\] have no rendered"):
        evaluate_protocol("lerf", class_names=[], relevancy={"frame_00001": good}, query_names=queries, lerf_labels=tmp_path)
    with pytest.raises(EconsgError, match="full resolution"):
        evaluate_protocol("lerf", class_names=[], relevancy={k: v[:, ::2, ::2] for k, v in relevancy.items()},
                          query_names=queries, lerf_labels=tmp_path)


def test_a_word_the_scene_lacks_is_scored_wrong_and_scannet_refuses_other_scenes(tmp_path):
    """evaluate.vocabulary may add words the scene lacks (ids past its classes): the ScanNet and 3D-OVS scorers count
    their pixels wrong rather than stop; a scannetN protocol refuses a scene whose classes are not NYU40's."""
    gt = {"a": np.array([[0, 1], [1, 4]])}
    extra = len(NYU40_CLASS_NAMES)  # the first word past the scene's classes
    scores = evaluate_protocol("scannet10", class_names=NYU40_CLASS_NAMES, predictions={"a": np.array([[0, 1], [extra, 4]])},
                               ground_truth=gt)
    assert scores["per_class_iou"]["floor"] == pytest.approx(0.5) and scores["per_class_iou"]["wall"] == 1.0
    views = synthetic_views(n=5, width=8, height=6, num_classes=2)
    write_ovs3d(tmp_path, views, ["a", "b"], segmented=(0,))
    truth = np.maximum(views.labels[0], 0).astype(np.int64)
    perfect = evaluate_protocol("ovs3d", class_names=["a", "b"], predictions={"000": truth}, data_root=tmp_path)
    lacking = evaluate_protocol("ovs3d", class_names=["a", "b"], predictions={"000": np.where(truth == 1, 2, truth)},
                                data_root=tmp_path)  # class b's pixels to a third word
    assert lacking["per_view_miou"]["000"] < perfect["per_view_miou"]["000"]
    assert lacking["accuracy"] == pytest.approx(perfect["accuracy"] - (truth == 1).mean())
    check_scannet_scene("scannet19", NYU40_CLASS_NAMES)
    check_scannet_scene("paper", ["wall", "floor", "lamp"])
    with pytest.raises(EconsgError, match="'scannet19' scores ScanNet scenes.*wall, floor, lamp.*evaluate.protocol: paper"):
        check_scannet_scene("scannet19", ["wall", "floor", "lamp"])


def test_unknown_protocol_and_missing_inputs_are_named():
    with pytest.raises(EconsgError, match="not one of"):
        evaluate_protocol("nyu", class_names=["a"])
    with pytest.raises(EconsgError, match="'lerf'"):
        evaluate_protocol("lerf", class_names=[])
    with pytest.raises(EconsgError, match="needs a scene with ground-truth classes"):
        protocol_vocabulary("paper", [])


def test_lerf_labelled_frames_are_found_among_all_views_or_named(tmp_path):
    from stages.evaluate import lerf_frame_views

    write_lerf_frame(tmp_path / "frame_00002.json", "frame_00002.jpg", 4, 4, [])
    write_lerf_frame(tmp_path / "frame_00009.json", "frame_00009.jpg", 4, 4, [])
    names = [f"frame_{i:05d}" for i in range(1, 12)]  # every view, training ones included
    assert lerf_frame_views(names, tmp_path, (4, 4), {}) == [1, 8]
    with pytest.raises(EconsgError, match=r"labelled frames \['frame_00009'\] are no view of the scene.*expected the label"):
        lerf_frame_views(names[:5], tmp_path, (4, 4), {"sparse_views": None, "frame_stride": 1})
    # a setting that dropped views or shrank them is named before any rendering
    with pytest.raises(EconsgError, match=r"are no view of the scene.*\(ingest.sparse_views: 3\)"):
        lerf_frame_views(names[:5], tmp_path, (4, 4), {"sparse_views": 3, "frame_stride": 1})
    with pytest.raises(EconsgError, match=r"are 4x4 \(height x width\), the scene's views 2x2 \(ingest.downscale: 2\)"):
        lerf_frame_views(names, tmp_path, (2, 2), {"downscale": 2})
    with pytest.raises(EconsgError, match=r"\(ingest.downscale: 1\).*images/ are another size than the labels"):
        lerf_frame_views(names, tmp_path, (2, 2), {"downscale": 1})  # no setting to blame: the images themselves
    with pytest.raises(EconsgError, match=r"\(ingest.sparse_views: 1\)"):  # 1 is no default of sparse_views
        lerf_frame_views(names[:5], tmp_path, (4, 4), {"sparse_views": 1, "frame_stride": 1})


def test_ovs3d_segmented_views_dropped_by_ingest_are_named_before_any_work(tmp_path):
    from stages.evaluate import check_ovs3d_views

    write_ovs3d(tmp_path, synthetic_views(n=9, width=8, height=6, num_classes=2), ["a", "b"], segmented=(1, 4))
    names = [f"{i:03d}" for i in range(9)]
    check_ovs3d_views(tmp_path, names, {})
    strided = [name for name in names if name != "004"]
    with pytest.raises(EconsgError, match=r"segmented views \['004'\] are no view of the scene; .*ingest.frame_stride: 2"):
        check_ovs3d_views(tmp_path, strided, {"frame_stride": 2, "sparse_views": None})
