"""Summary table of a dataset's per-scene metrics: layout, means, missing values, errors."""

import json

import pytest

from econsg.errors import EconsgError
from econsg.summary import main, run_metrics, summary_table, write_summary


def _write(root, rel, data):
    path = root / rel / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_rows_per_scene_and_setting_with_a_mean_row(tmp_path):
    files = [
        _write(tmp_path, "room0/sparse", {"miou": 0.2, "macc": 0.6, "psnr": 30.0, "render_fps": 100.0}),
        _write(tmp_path, "room0/multi", {"miou": 0.4, "macc": 0.8, "psnr": 32.0, "render_fps": 90.0}),
        _write(tmp_path, "room1/sparse", {"miou": 0.3, "macc": 0.7, "psnr": 28.0, "render_fps": 110.0}),
        _write(tmp_path, "room1/multi", {"miou": None, "macc": 0.9, "psnr": 29.0, "render_fps": 80.0}),
    ]
    table = write_summary("replica", files, tmp_path)
    assert table["settings"] == ["sparse", "multi"] and [r["scene"] for r in table["rows"]] == ["room0", "room1"]
    assert table["mean"]["sparse"]["miou"] == pytest.approx(0.25)
    assert table["mean"]["multi"]["miou"] == pytest.approx(0.4)  # room1's missing value is skipped, not zero
    markdown = (tmp_path / "summary.md").read_text()
    assert "| scene | sparse-view mIoU | sparse-view mAcc | sparse-view PSNR | sparse-view FPS | multi-view mIoU |" in markdown
    assert "| room1 | 30.0 | 70.0 | 28.0 | 110.0 | - | 90.0 |" in markdown
    assert "| **mean** | 25.0 | 65.0 | 29.0 | 105.0 | 40.0 | 85.0 |" in markdown
    assert json.loads((tmp_path / "summary.json").read_text())["protocol"] == "paper"
    # files in another order (a glob sorts multi before sparse): the paper's setting order all the same
    assert write_summary("replica", [files[1], files[3], files[0], files[2]], tmp_path)["settings"] == ["sparse", "multi"]


def test_protocol_columns_come_from_the_benchmark_block(tmp_path):
    path = _write(tmp_path, "figurines", {"psnr": 25.0, "miou": 0.9,
                                          "benchmark": {"protocol": "lerf", "miou": 0.5, "localization_accuracy": 0.75}})
    run = run_metrics(path, tmp_path)
    assert (run.scene, run.setting, run.protocol) == ("figurines", "", "lerf")
    assert run.values["miou"] == 0.5 and run.values["localization_accuracy"] == 0.75
    table = write_summary("lerf_ovs", [path], tmp_path)
    assert "| scene | mIoU | Loc. acc | PSNR | FPS |" in (tmp_path / "summary.md").read_text()
    assert table["mean"][""]["render_fps"] is None


def test_refuses_mixed_protocols_duplicates_and_foreign_paths(tmp_path):
    a = _write(tmp_path, "a", {"miou": 0.1})
    b = _write(tmp_path, "b", {"benchmark": {"protocol": "ovs3d", "miou": 0.2}})
    with pytest.raises(EconsgError, match="mix protocols"):
        summary_table("x", [run_metrics(a, tmp_path), run_metrics(b, tmp_path)])
    with pytest.raises(EconsgError, match="given twice"):
        summary_table("x", [run_metrics(a, tmp_path)] * 2)
    with pytest.raises(EconsgError, match="not inside"):
        run_metrics(a, tmp_path / "elsewhere")
    bad = _write(tmp_path, "c", {"benchmark": {"protocol": "nyu"}})
    with pytest.raises(EconsgError, match="not one of"):
        run_metrics(bad, tmp_path)


def test_main_writes_files_and_reports_errors(tmp_path, capsys):
    path = _write(tmp_path, "bed", {"benchmark": {"protocol": "ovs3d", "miou": 0.916, "accuracy": 0.97}})
    assert main(["ovs3d", str(path), "--out", str(tmp_path)]) == 0
    assert "| bed | 91.6 | 97.0 | - | - |" in (tmp_path / "summary.md").read_text()
    assert main(["ovs3d", str(tmp_path / "missing" / "evaluate.json"), "--out", str(tmp_path)]) == 1
    assert "unreadable metrics file" in capsys.readouterr().err


def test_a_scene_without_labels_keeps_its_protocol_and_reads_as_missing(tmp_path):
    labelled = _write(tmp_path, "scene0000_00", {"protocol": "scannet19", "psnr": 25.0,
                                                 "benchmark": {"protocol": "scannet19", "miou": 0.4, "macc": 0.6}})
    unlabelled = _write(tmp_path, "own_room", {"protocol": "scannet19", "psnr": 27.0, "has_ground_truth": False})
    table = write_summary("scannet", [labelled, unlabelled], tmp_path)
    assert table["protocol"] == "scannet19"
    assert "| own_room | - | - | 27.0 |" in (tmp_path / "summary.md").read_text()


def test_main_reports_an_output_path_the_system_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    path = _write(out, "bed", {"benchmark": {"protocol": "ovs3d", "miou": 0.9, "accuracy": 0.9}})
    (out / "summary.json").mkdir()  # a folder where the table's file goes
    assert main(["ovs3d", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'summary.json'}") and "Traceback" not in err
