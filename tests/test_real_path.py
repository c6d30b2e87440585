"""The path a researcher's own scene takes, end to end: a COLMAP scene (images, poses, sparse points; no depth
maps, no labels) -> extract with the open_clip + SAM backend -> crr -> fuse from the points -> autoencode ->
splat -> evaluate, then `econsg query` and `econsg render` on a text no vocabulary holds.

The weights cannot be downloaded here, so the loaders are replaced by tiny randomly initialised models of the
real architectures (the loaders themselves are tested in test_openclip_sam.py); everything else is the stages'
own code, run in process the way `econsg run STAGE` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import econsg.features.openclip_sam as openclip_sam
from econsg.artifacts import open_artifact
from econsg.config import Params
from econsg.config.openclip_sam import OpenClipSamParams
from econsg.pipeline import STAGE_ORDER, run_stage
from tests.dataset_fixtures import PLANE_Z, synthetic_views, write_colmap
from tests.helpers import TINY_OPENCLIP_SAM, restamp

VOCABULARY = ["wall", "floor", "chair"]
EVAL_VOCABULARY = [*VOCABULARY, "a potted fern"]  # a word the training vocabulary lacks, as a user would query
TINY_CLIP_DIM = 32  # tiny_clip_model's embed_dim
REAL_LOADERS = {name: getattr(openclip_sam, name) for name in ("load_clip", "check_sam_checkpoint", "load_sam")}


def plane_points(step: float = 0.25, extent: float = 4.0) -> np.ndarray:
    """A sparse grid on the plane z = PLANE_Z that every fixture view looks at (as SfM points would sample it)."""
    axis = np.arange(-extent, extent + 1e-9, step)
    x, y = np.meshgrid(axis, axis)
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, PLANE_Z)], axis=1)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_scene")
    views = synthetic_views(n=12, width=48, height=36)
    write_colmap(root / "data", views, points=plane_points())
    params = Params().model_dump(mode="json")
    params["paths"] = {"data": "data", "artifacts": "artifacts", "metrics": "metrics", "plots": "plots",
                       "checkpoints": "checkpoints"}
    params["extract"].update(backend="openclip_sam", vocabulary=VOCABULARY, open_set_classes=[])
    params["extract"]["openclip_sam"].update(TINY_OPENCLIP_SAM)
    params["autoencode"].update(iterations=30, batch_size=256)
    params["splat"].update(iterations=12, checkpoint_every=1000, refine_start_iter=4, refine_every=4, refine_stop_iter=9,
                           near_plane="auto")  # COLMAP's unit is arbitrary, as in the lerf_ovs pipeline
    params["evaluate"].update(timing_repeats=1, overlay_views=1, vocabulary=EVAL_VOCABULARY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    clip = openclip_sam.tiny_clip_model(seed=0)
    patch = pytest.MonkeyPatch()
    patch.setattr(openclip_sam, "load_clip", lambda p, device: (clip[0].to(device), clip[1]))
    patch.setattr(openclip_sam, "check_sam_checkpoint", lambda p: Path(p.sam_checkpoint or "sam.pth"))
    patch.setattr(openclip_sam, "load_sam", lambda p, device: openclip_sam.tiny_sam_model(seed=0).to(device))
    patch.chdir(root)
    try:  # undone even when a stage fails here, so no later test inherits the stand-in models or the folder
        for stage in STAGE_ORDER[STAGE_ORDER.index("ingest"):]:
            run_stage(stage, root / "params.yaml")
        yield root, views
    finally:
        patch.undo()


def test_own_scene_runs_from_colmap_to_evaluate_on_the_real_backend(real_run):
    root, views = real_run
    artifacts = root / "artifacts"
    ex = open_artifact(artifacts / "extract.zarr", "extract")
    assert list(ex.attrs["vocabulary"]) == VOCABULARY
    assert ex["text_embeddings"].shape == (len(VOCABULARY), TINY_CLIP_DIM), "text from CLIP's tower, not the stand-in"
    assert ex["features"].shape[0] == len(views.images) and ex["features"].shape[-1] == TINY_CLIP_DIM
    assert (ex["num_masks"][:] > 0).all(), "SAM's automatic masks reach every view"
    cr = open_artifact(artifacts / "crr.zarr", "crr")
    refined = cr["refined_labels"][:]
    assert ((refined >= 0) & (refined < len(VOCABULARY))).any() and (refined >= -1).all()
    fused = open_artifact(artifacts / "fuse.zarr", "fuse")
    assert fused.attrs["source"] == "points", "no depth maps: fuse projects the COLMAP points with a depth test"
    xyz = fused["xyz"][:]
    assert 0 < len(xyz) <= len(plane_points()) and np.allclose(xyz[:, 2], PLANE_Z, atol=0.05)
    ae = open_artifact(artifacts / "autoencode.zarr", "autoencode")
    latent_dim = yaml.safe_load((root / "params.yaml").read_text())["autoencode"]["latent_dim"]
    assert ae["latent"].shape == (len(xyz), latent_dim)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert metrics["has_ground_truth"] is False and "miou" not in metrics, "no labels: nothing is scored against them"
    for stage in ("crr", "fuse"):  # so that `econsg metrics` says "n/a (no labels)" for their scores too
        assert json.loads((root / "metrics" / f"{stage}.json").read_text())["has_ground_truth"] is False, stage
    assert metrics["protocol"] == "paper"
    ev = open_artifact(artifacts / "evaluate.zarr", "evaluate")
    assert list(ev.attrs["class_names"]) == EVAL_VOCABULARY, "no labels: the label maps index the words queried"
    assert (ev["pred_labels"][:] >= 0).all(), "every pixel goes to one of the evaluation words, the new one included"
    is_train = open_artifact(artifacts / "scene.zarr", "ingest")["is_train"][:]
    assert np.isfinite(metrics["psnr"]) and metrics["test_views"] == int((~is_train).sum()) > 0
    assert 0.0 <= metrics["consistency"] <= 1.0, "consistency falls back on the rendered depth"
    assert metrics["query_latency_ms"] > 0 and metrics["render_fps"] > 0


def test_own_scene_answers_a_new_text_flies_a_path_audits_and_edits(real_run):
    from typer.testing import CliRunner

    from econsg.cli import app

    root, _ = real_run
    runner = CliRunner()
    first_held_out = int(open_artifact(root / "artifacts" / "evaluate.zarr", "evaluate").attrs["test_views"][0])
    query = runner.invoke(app, ["query", "a potted fern", "--view", str(first_held_out)])
    assert query.exit_code == 0, query.stderr
    assert (root / f"plots/query/a-potted-fern_view_{first_held_out:04d}.png").is_file()
    render = runner.invoke(app, ["render", "a potted fern", "--through", "0,1", "--frames", "2"])
    assert render.exit_code == 0, render.stderr
    assert len(list((root / "plots/render/a-potted-fern/frames").glob("frame_*.png"))) == 3, "two keys, two frames a segment, plus the last"
    audit = runner.invoke(app, ["audit", "--views", "1"])
    assert audit.exit_code == 0, audit.stderr
    assert (root / "plots/audit/view_0001.png").is_file(), "crr's audit panel over real SAM masks"
    edit = runner.invoke(app, ["edit", "wall", "--action", "extract", "--threshold", "0.001"])  # nearly every Gaussian
    assert edit.exit_code == 0, edit.stderr
    assert (root / "plots/edit/wall_extract_t0.001_before_after.png").is_file(), "the picture beside the PLY, not over it"
    from econsg.splat.ply import load_ply

    extracted, _ = load_ply(root / "plots/edit/wall_extract_t0.001.ply")
    gaussians = open_artifact(root / "artifacts" / "splat.zarr", "splat")
    assert 0 < len(extracted["means"]) <= gaussians["means"].shape[0]


def test_the_run_s_vocabularies_are_queried_without_clip_weights(real_run, monkeypatch):
    """Texts extract (training vocabulary) or evaluate (evaluation vocabulary) embedded are read from their stores, the
    same embeddings CLIP's tower gives; only a text no store holds needs the weights."""
    import torch
    from typer.testing import CliRunner

    from econsg.cli import app
    from econsg.config import load_params
    from econsg.errors import EconsgError
    from econsg.query import LatentQuery
    from econsg.workspace import load_autoencoder, open_stage, text_query

    root, _ = real_run
    params = load_params(root / "params.yaml")
    model = load_autoencoder(open_stage(params, "autoencode"))
    expected = LatentQuery(model, params.extract).text_latents(EVAL_VOCABULARY)  # every text through the tiny tower
    # other templates (the LERF-OVS protocol's bare phrases) are embedded afresh, never read from the templated store
    bare = text_query(params, model, evaluated=True).text_latents(["wall"], templates=["{}"])
    bare_params = params.extract.model_copy(update={"templates": ["{}"]})
    assert torch.allclose(bare, LatentQuery(model, bare_params).text_latents(["wall"]), atol=1e-6)
    assert not torch.allclose(bare, expected[:1], atol=1e-3)

    def absent(*_):
        raise EconsgError("CLIP weights: not found")

    monkeypatch.setattr(openclip_sam, "load_clip", absent)
    stored = text_query(params, model, evaluated=True)
    assert torch.allclose(stored.text_latents(EVAL_VOCABULARY), expected, atol=1e-6)
    assert "a potted fern" not in text_query(params, model).stored, "evaluate's words only for commands after the run"
    runner = CliRunner()
    for text in ("wall", "a potted fern"):
        result = runner.invoke(app, ["query", text, "--view", str(int(open_stage(params, "evaluate").attrs["test_views"][0]))])
        assert result.exit_code == 0, result.stderr
    refused = runner.invoke(app, ["query", "a lamp"])
    assert refused.exit_code != 0 and "CLIP weights: not found" in refused.stderr
    # other weights under the same model name (another clip_checkpoint file): a new text would land in another space
    other = openclip_sam.tiny_clip_model(seed=1)
    monkeypatch.setattr(openclip_sam, "load_clip", lambda p, device: (other[0].to(device), other[1]))
    with pytest.raises(EconsgError, match=r"text tower: embeds 'wall' at cosine .* other CLIP weights than extract used"):
        text_query(params, model, evaluated=True).text_latents(["a lamp"])
    assert torch.allclose(text_query(params, model).text_latents(["wall"]), expected[:1], atol=1e-6), "stored: no tower"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_backends_own_device_is_honoured_and_refused_where_absent(real_run):
    from econsg.errors import EconsgError

    root, _ = real_run
    with pytest.raises(EconsgError, match=r"extract.openclip_sam.device: 'cuda' requested but CUDA is not available"):
        run_stage("extract", root / "params.yaml", ("extract.openclip_sam.device=cuda",))


def test_lerf_protocol_scores_the_labelled_frames_training_views_included(real_run, tmp_path):
    """LERF-OVS labels frames that are mostly training views (LangSplat scores them so); evaluate renders each, into
    copies of the run's stores (the other tests read the run's own evaluate store)."""
    import shutil

    from tests.dataset_fixtures import write_lerf_frame

    root, views = real_run
    scene = open_artifact(root / "artifacts" / "scene.zarr", "ingest")
    names, is_train = list(scene.attrs["view_names"]), scene["is_train"][:]
    chosen = [names[int(np.flatnonzero(is_train)[1])], names[int(np.flatnonzero(~is_train)[0])]]  # a training view too
    height, width = views.shape
    box = {"bbox": [2, 2, 20, 15], "segmentation": [[2, 2], [20, 2], [20, 15], [2, 15]]}
    for i, (name, category) in enumerate(zip(chosen, ("chair", "floor"))):
        write_lerf_frame(root / "lerf_labels" / f"frame_{i:05d}.json", f"{name}.jpg", height, width,
                         [{"category": category, **box}])
    shutil.copytree(root / "artifacts", tmp_path / "artifacts")
    moved = tuple(f"paths.{key}={tmp_path / key}" for key in ("artifacts", "metrics", "plots"))
    run_stage("evaluate", root / "params.yaml", ("evaluate.protocol=lerf", f"evaluate.lerf_labels={root / 'lerf_labels'}",
                                                  "evaluate.vocabulary=null", *moved))
    benchmark = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())["benchmark"]
    assert benchmark["protocol"] == "lerf" and benchmark["frames"] == 2 and benchmark["queries"] == 2
    # the scores are those of LERF's relevancy of the bare phrases (LangSplat's scorer), recomputed here from the
    # trained Gaussians: random stand-in models make the figures meaningless, not the plumbing
    from econsg.config import load_params
    from econsg.protocol_eval import evaluate_protocol
    from econsg.protocols import LERF_CANONICAL, LERF_RELEVANCY_TEMPERATURE
    from econsg.query import lerf_relevancy
    from econsg.scene.store import open_scene
    from econsg.splat.quality import load_gaussians, stored_renderer
    from econsg.workspace import load_autoencoder, open_stage, text_query

    params = load_params(root / "params.yaml", moved)
    queries = list(open_artifact(tmp_path / "artifacts" / "evaluate.zarr", "evaluate").attrs["eval_vocabulary"])
    assert sorted(queries) == ["chair", "floor"]
    text = text_query(params, load_autoencoder(open_stage(params, "autoencode")))
    latents, canonical = text.text_latents(queries, ["{}"]), text.text_latents(list(LERF_CANONICAL), ["{}"])
    splat, scene = open_stage(params, "splat"), open_scene(params.paths.artifact("ingest"))
    gaussians, draw, maps = load_gaussians(splat, "cpu"), stored_renderer(splat, "torch"), {}
    assert splat.attrs["near_plane"] == pytest.approx(scene.median_depth / 300), "splat.near_plane: auto, resolved"
    for name in chosen:
        viewmat, K = scene.cameras(names.index(name))
        features = draw(gaussians, viewmat, K, width, height).features[0]
        maps[name] = np.stack([lerf_relevancy(features, q, canonical, LERF_RELEVANCY_TEMPERATURE).numpy() for q in latents])
        assert maps[name].std() > 0, "a relevancy map that varies over the view"
    expected = evaluate_protocol("lerf", class_names=queries, relevancy=maps, query_names=queries,
                                 lerf_labels=root / "lerf_labels")
    for key in ("localization_accuracy", "miou"):
        assert benchmark[key] == pytest.approx(expected[key], abs=1e-6), key


def test_a_store_built_from_an_upstream_rerun_since_is_refused(real_run, tmp_path, capsys):
    """extract rerun with another setting, crr not: opening crr (as fuse would) names what to rerun. The smaller
    extract.max_masks leaves masks unstored, which the metrics count and a warning names."""
    import shutil

    from econsg.config import load_params
    from econsg.errors import ArtifactError
    from econsg.workspace import open_stage

    root, _ = real_run
    shutil.copytree(root / "artifacts", tmp_path / "artifacts")
    moved = (f"paths.artifacts={tmp_path / 'artifacts'}", f"paths.metrics={tmp_path / 'metrics'}")
    params = load_params(root / "params.yaml", moved)
    open_stage(params, "crr")  # consistent as written
    run_stage("extract", root / "params.yaml", (*moved, "extract.max_masks=3"))
    found = open_artifact(root / "artifacts" / "extract.zarr", "extract")["num_masks"][:]
    assert found.max() > 3, "the fixture must find more than 3 masks in a view for this check"
    metrics = json.loads((tmp_path / "metrics" / "extract.json").read_text())
    assert metrics["masks_not_stored"] == int(np.maximum(found - 3, 0).sum())
    assert "raise extract.max_masks to keep them" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match=r"crr.zarr: built from another extract.zarr than the one there now"):
        open_stage(params, "crr")
    # evaluate read extract.zarr itself, but the stage to rerun is crr, the earliest whose store is stale
    with pytest.raises(ArtifactError, match=r"evaluate.zarr: built from another extract.zarr .*; rerun the crr stage"):
        open_stage(params, "evaluate")


def test_mask_crops_store_a_mask_table_and_id_map_that_crr_fuse_and_autoencode_read(real_run, tmp_path):
    """extract.openclip_sam.feature_mode: mask_crops keeps each view's mask table and id map beside the dense grid;
    the labels it stores come back from them, and the stages after it run on them."""
    import shutil

    from econsg.features.base import pixel_probabilities, stored_painted_masks

    root, _ = real_run
    shutil.copytree(root / "artifacts", tmp_path / "artifacts")
    moved = (f"paths.artifacts={tmp_path / 'artifacts'}", f"paths.metrics={tmp_path / 'metrics'}",
             f"paths.plots={tmp_path / 'plots'}", "extract.openclip_sam.feature_mode=mask_crops")
    for stage in ("extract", "crr", "fuse", "autoencode"):
        run_stage(stage, root / "params.yaml", moved)
    ex = open_artifact(tmp_path / "artifacts" / "extract.zarr", "extract")
    assert ex["mask_ids"].shape[1:] == ex["labels"].shape[1:] and ex["mask_features"].shape[2] == TINY_CLIP_DIM
    text, temperature = ex["text_embeddings"][...], float(ex.attrs["temperature"])
    covered = 0
    for v in range(ex["labels"].shape[0]):
        painted = stored_painted_masks(ex, v)
        covered += int((painted.ids >= 0).sum())
        probs = pixel_probabilities(ex["features"][v], text, *painted.ids.shape, temperature, painted)
        np.testing.assert_array_equal(ex["labels"][v], probs.argmax(-1))
    assert covered > 0, "SAM's masks cover pixels, which take their crops' features"
    assert "mask_ids" not in open_artifact(root / "artifacts" / "extract.zarr", "extract"), "dense mode: the grid alone"
    latent_maps = open_artifact(tmp_path / "artifacts" / "autoencode.zarr", "autoencode")["latent_maps"]
    assert np.isfinite(np.asarray(latent_maps[0], np.float32)).all()

    # one NaN in a mask's crop feature reached every mask's table row through crr's sums, unreported
    import zarr

    from econsg.errors import EconsgError
    from econsg.scene.store import open_scene

    view = int(open_scene(tmp_path / "artifacts" / "scene.zarr").train_indices[0])
    zarr.open_group(tmp_path / "artifacts" / "extract.zarr", mode="r+")["mask_features"][view, 0, 0] = np.nan
    restamp(tmp_path / "artifacts" / "extract.zarr")
    with pytest.raises(EconsgError, match=rf"extract.zarr: 'mask_features' of view {view} \(.*hold NaN or inf"):
        run_stage("crr", root / "params.yaml", moved)


def test_texts_are_refused_under_another_clip_model_than_extract_used(real_run):
    from econsg.config import load_params
    from econsg.errors import ArtifactError
    from econsg.workspace import load_autoencoder, open_stage, text_query

    root, _ = real_run
    params = load_params(root / "params.yaml", ("extract.openclip_sam.pretrained=another",))
    with pytest.raises(ArtifactError, match=r"built with extract.openclip_sam.pretrained = .*the params say 'another'"):
        text_query(params, load_autoencoder(open_stage(params, "autoencode")))


def test_smoke_runs_every_stage_with_stand_in_models_and_leaves_the_run_s_stores(real_run, tmp_path):
    """`econsg smoke` on the scene: no weights read (the stand-ins), its stores in its own folder, the run's untouched;
    a folder already holding files is refused before any work."""
    from typer.testing import CliRunner

    from econsg.artifacts import read_provenance
    from econsg.cli import app

    root, _ = real_run
    before = {path.name: read_provenance(path).content_hash for path in (root / "artifacts").glob("*.zarr")}
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:  # the loaders themselves, not the fixture's: this machine has no weights
        for name, loader in REAL_LOADERS.items():
            patch.setattr(openclip_sam, name, loader)
        real_sam = OpenClipSamParams()  # a real run's mask filters, which the random stand-in's masks all failed
        filters = [f"extract.openclip_sam.{key}={getattr(real_sam, key)}" for key in
                   ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")]
        result = runner.invoke(app, ["smoke", "--out", str(tmp_path / "smoke"), *(a for f in filters for a in ("--set", f))])
    assert result.exit_code == 0, result.stderr
    masks = json.loads((tmp_path / "smoke" / "metrics" / "extract.json").read_text())["mean_masks_per_view"]
    assert masks > 0, "crr's mask votes run in the dry run too"
    assert "stand in for the weights" in result.stderr, "extract says its figures mean nothing"
    assert "the real run's weights: still missing:" in result.stdout, "what the real run needs, said after the dry run"
    assert "openclip_sam.clip_checkpoint" in result.stdout and "openclip_sam.sam_checkpoint" in result.stdout
    extract = tmp_path / "smoke" / "artifacts" / "extract.zarr"
    assert read_provenance(extract).params["extract"]["openclip_sam"]["stand_in"] is True
    assert (tmp_path / "smoke" / "metrics" / "evaluate.json").is_file()
    assert {path.name: read_provenance(path).content_hash for path in (root / "artifacts").glob("*.zarr")} == before
    refused = runner.invoke(app, ["smoke", "--out", str(tmp_path / "smoke")])
    assert refused.exit_code == 1 and "is not an empty folder" in refused.stderr
    missing = runner.invoke(app, ["smoke", "--set", f"paths.data={tmp_path / 'nowhere'}"])
    assert missing.exit_code == 1 and "smoke: ingest failed: " in missing.stderr and "does not exist" in missing.stderr
    into_the_run = runner.invoke(app, ["smoke", "--set", f"paths.artifacts={root / 'artifacts'}"])
    assert into_the_run.exit_code == 1 and "only paths.data may be set" in into_the_run.stderr
    # the run's own params are checked as they are: smoke's shorter training must not hide a broken setting
    broken = runner.invoke(app, ["smoke", "--set", "splat.refine_start_iter=600", "--set", "splat.refine_stop_iter=500"])
    assert broken.exit_code == 1 and "refine_start_iter (600) must be below refine_stop_iter (500)" in broken.stderr
    assert {path.name: read_provenance(path).content_hash for path in (root / "artifacts").glob("*.zarr")} == before
    from econsg.config import load_params
    from econsg.errors import ArtifactError
    from econsg.workspace import load_autoencoder, open_stage, text_query

    smoke_run = load_params(root / "params.yaml", tuple(f"paths.{key}={tmp_path / 'smoke' / key}" for key in ("artifacts", "metrics")))
    with pytest.raises(ArtifactError, match=r"built with extract.openclip_sam.stand_in = True, the params say False"):
        text_query(smoke_run, load_autoencoder(open_stage(smoke_run, "autoencode")))  # real CLIP: another text space
