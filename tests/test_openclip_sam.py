"""The open_clip + SAM extract backend, on tiny randomly initialised models of the real architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from econsg.config.openclip_sam import OpenClipSamParams
from econsg.errors import EconsgError
from econsg.features.base import (
    TextEncoder,
    ViewFeatures,
    labels_and_confidence,
    smallest_covering_mask,
    pixel_probabilities,
    upsample_feature_rows,
)
from econsg.features.openclip_sam import (
    OpenClipSamExtractor,
    OpenClipTextEncoder,
    check_sam_checkpoint,
    clip_input_shape,
    dense_clip_features,
    load_openclip_text_encoder,
    interpolate_positional_embedding,
    masks_from_records,
    preprocess_views,
    remove_small_mask_regions,
    resolve_clip_checkpoint,
    tiny_clip_model,
    tiny_sam_model,
)
from tests.helpers import TINY_OPENCLIP_SAM

H, W = 48, 64
VOCABULARY = ["chair", "table", "wall", "floor"]


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    return tiny_clip_model(seed=0)


@pytest.fixture(scope="module")
def sam():
    return tiny_sam_model(seed=0)


def tiny_params(**overrides) -> OpenClipSamParams:
    """Settings sized for the tiny models (tests/helpers.py), with `overrides`."""
    return OpenClipSamParams(**{**TINY_OPENCLIP_SAM, **overrides})


def make_extractor(clip_and_tokenizer, sam, **overrides) -> OpenClipSamExtractor:
    model, tokenizer = clip_and_tokenizer
    return OpenClipSamExtractor(tiny_params(**overrides), clip_model=model, tokenizer=tokenizer, sam=sam, device="cpu")


def random_images(count: int, seed: int = 0, height: int = H, width: int = W) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((height, width, 3), dtype=np.float32) for _ in range(count)]


# -- params ---------------------------------------------------------------------------------------------


def test_params_defaults_valid_and_strict():
    params = OpenClipSamParams()
    assert params.feature_mode == "dense" and params.sam_model_type == "vit_h"
    with pytest.raises(ValidationError, match="extra"):
        OpenClipSamParams(points_per_sid=8)
    with pytest.raises(ValidationError):
        OpenClipSamParams(feature_mode="sparse")
    with pytest.raises(ValidationError):
        OpenClipSamParams(sam_checkpoint="  ")
    with pytest.raises(ValidationError):
        params.batch_size = 3  # frozen
    for name, field in OpenClipSamParams.model_fields.items():
        assert field.description, name


# -- missing weights --------------------------------------------------------------------------------------


def test_weights_paths_read_a_tilde_as_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"weights")
    params = OpenClipSamParams(sam_model_type="vit_b", sam_checkpoint="~/sam_vit_b_01ec64.pth", clip_cache_dir="~/clip")
    assert check_sam_checkpoint(params) == tmp_path / "sam_vit_b_01ec64.pth"
    assert params.clip_cache_dir == str(tmp_path / "clip")


def test_missing_sam_checkpoint_names_file_url_and_key(clip_and_tokenizer, tmp_path):
    model, tokenizer = clip_and_tokenizer
    params = tiny_params(sam_model_type="vit_b", sam_checkpoint=str(tmp_path / "sam_b.pth"))
    with pytest.raises(EconsgError) as info:
        OpenClipSamExtractor(params, clip_model=model, tokenizer=tokenizer, device="cpu")
    message = str(info.value)
    assert "sam_b.pth" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message
    assert "extract.openclip_sam.sam_checkpoint" in message


def test_missing_clip_and_sam_weights_are_named_together(tmp_path):
    """Both files missing: the one error names both, so one round of downloads is enough."""
    params = tiny_params(clip_checkpoint=str(tmp_path / "clip.safetensors"), sam_checkpoint=str(tmp_path / "sam.pth"))
    with pytest.raises(EconsgError) as info:
        OpenClipSamExtractor(params, device="cpu")
    first, second = str(info.value).splitlines()
    assert first.startswith("extract.openclip_sam.clip_checkpoint: CLIP weights file") and "clip.safetensors" in first
    assert second.startswith("extract.openclip_sam.sam_checkpoint: SAM weights file") and "sam.pth" in second


def test_default_sam_path_follows_model_type(clip_and_tokenizer, tmp_path, monkeypatch):
    model, tokenizer = clip_and_tokenizer
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EconsgError, match=r"checkpoints/sam_vit_l_0b3195\.pth.*sam_vit_l_0b3195\.pth"):
        OpenClipSamExtractor(tiny_params(sam_model_type="vit_l"), clip_model=model, tokenizer=tokenizer, device="cpu")


def test_a_sam_checkpoint_of_another_model_type_says_which_in_one_line(tmp_path):
    from econsg.features.openclip_sam import load_sam

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, path)  # vit_b's first layer
    with pytest.raises(EconsgError) as info:
        load_sam(tiny_params(sam_model_type="vit_h", sam_checkpoint=str(path)), torch.device("cpu"))
    message = str(info.value)
    assert "holds SAM vit_b weights, but extract.openclip_sam.sam_model_type is vit_h; set it to vit_b" in message
    assert "\n" not in message
    with pytest.raises(EconsgError) as info:  # the right type, but not the rest of the weights
        load_sam(tiny_params(sam_model_type="vit_b", sam_checkpoint=str(path)), torch.device("cpu"))
    assert "does not hold SAM 'vit_b' weights" in str(info.value) and len(str(info.value)) < 600
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EconsgError, match="is not a readable PyTorch weights file"):
        load_sam(tiny_params(sam_model_type="vit_h", sam_checkpoint=str(path)), torch.device("cpu"))


def test_missing_clip_weights_name_tag_source_and_key(tmp_path):
    with pytest.raises(EconsgError) as info:
        resolve_clip_checkpoint("ViT-B-16", "laion2b_s34b_b88k", None, cache_dir=str(tmp_path))
    message = str(info.value)
    assert "'ViT-B-16'" in message and "'laion2b_s34b_b88k'" in message
    assert "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message
    assert str(tmp_path) in message
    assert "extract.openclip_sam.clip_checkpoint" in message
    assert f"`hf download laion/CLIP-ViT-B-16-laion2B-s34B-b88K open_clip_model.safetensors --cache-dir {tmp_path}`" in message
    with pytest.raises(EconsgError, match=r"clip_checkpoint: CLIP weights file '.*nope\.bin' not found"):
        resolve_clip_checkpoint("ViT-B-16", "laion2b_s34b_b88k", str(tmp_path / "nope.bin"))
    with pytest.raises(EconsgError, match="pretrained: 'no_such_tag'"):
        resolve_clip_checkpoint("ViT-B-16", "no_such_tag", None, cache_dir=str(tmp_path))
    with pytest.raises(EconsgError, match="model_name: got 'ViT-Z-99'"):
        resolve_clip_checkpoint("ViT-Z-99", "laion2b_s34b_b88k", None, cache_dir=str(tmp_path))
    existing = tmp_path / "weights.safetensors"
    existing.write_bytes(b"")
    assert resolve_clip_checkpoint("ViT-B-16", "laion2b_s34b_b88k", str(existing)) == existing


@pytest.fixture
def tiny_architecture(tmp_path, monkeypatch):
    """tiny_clip_model's architecture registered with open_clip as 'econsg-tiny-test' (for this test only)."""
    import json

    import open_clip.factory as factory

    monkeypatch.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "econsg-tiny-test.json").write_text(json.dumps(config))
    factory.add_model_config(tmp_path / "econsg-tiny-test.json")
    return "econsg-tiny-test"


def test_load_clip_from_local_checkpoint(clip_and_tokenizer, tmp_path, tiny_architecture):
    """The offline loading path: a registered architecture plus a local state dict gives the same text tower."""
    model, tokenizer = clip_and_tokenizer
    weights = tmp_path / "tiny.bin"
    torch.save(model.state_dict(), weights)
    params = tiny_params(model_name="econsg-tiny-test", pretrained="local", clip_checkpoint=str(weights))
    loaded = load_openclip_text_encoder(params, "cpu")
    prompts = ["a photo of a chair.", "a sofa in a room."]
    np.testing.assert_allclose(loaded.encode(prompts), OpenClipTextEncoder(model, tokenizer).encode(prompts), atol=1e-6)
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(EconsgError, match=r"clip_checkpoint: could not load '.*broken\.bin' into open_clip 'econsg-tiny-test'"):
        load_openclip_text_encoder(params.model_copy(update={"clip_checkpoint": str(broken)}), "cpu")


def test_load_clip_from_an_openai_torchscript_archive(clip_and_tokenizer, tmp_path, tiny_architecture):
    """OpenAI's own CLIP files (~/.cache/clip/ViT-B-16.pt) are TorchScript archives holding the weights under open_clip's
    names beside three metadata entries; open_clip's state-dict reader refuses them."""
    import warnings

    model, tokenizer = clip_and_tokenizer

    class Holder(torch.nn.Module):
        pass

    archive = Holder()  # an archive of the weights alone, laid out as OpenAI's module tree lays them
    for key, value in {**model.state_dict(), "input_resolution": torch.tensor(64), "vocab_size": torch.tensor(49408)}.items():
        *path, leaf = key.split(".")
        node = archive
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, Holder())
            node = getattr(node, part)
        node.register_buffer(leaf, value.detach().half().clone())  # OpenAI stores float16
    weights = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(archive), str(weights))
    params = tiny_params(model_name=tiny_architecture, pretrained="local", clip_checkpoint=str(weights))
    loaded = load_openclip_text_encoder(params, "cpu")
    prompts = ["a photo of a chair.", "a sofa in a room."]
    np.testing.assert_allclose(loaded.encode(prompts), OpenClipTextEncoder(model, tokenizer).encode(prompts), atol=2e-2)
    assert loaded.model.text_projection.dtype == torch.float32


# -- text ---------------------------------------------------------------------------------------------------


def test_text_encoder_protocol_shapes_and_norms(clip_and_tokenizer):
    model, tokenizer = clip_and_tokenizer
    encoder = OpenClipTextEncoder(model, tokenizer, "cpu")
    assert isinstance(encoder, TextEncoder) and encoder.dim == 32
    out = encoder.encode(["a photo of a chair.", "a photo of a table.", "a photo of a chair."])
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    with torch.no_grad():
        reference = F.normalize(model.encode_text(tokenizer(["a photo of a table."])), dim=-1).numpy()
    np.testing.assert_allclose(out[1], reference[0], atol=1e-6)
    with pytest.raises(EconsgError, match="single string"):
        encoder.encode("chair")


# -- dense features --------------------------------------------------------------------------------------


def test_clip_input_shape_keeps_aspect_in_whole_patches():
    assert clip_input_shape(480, 640, 448, (16, 16)) == (448, 592)  # 640 * 448 / 480 = 597.3 -> 37 patches
    assert clip_input_shape(640, 480, 448, (16, 16)) == (592, 448)
    assert clip_input_shape(48, 64, 64, (16, 16)) == (64, 80)  # 85.3 -> 5 patches
    assert clip_input_shape(10, 10, 8, (16, 16)) == (16, 16)  # never below one patch


def test_positional_interpolation_identity_and_constant_field():
    rng = torch.Generator().manual_seed(0)
    pos = torch.randn(1 + 4 * 4, 8, generator=rng)
    assert interpolate_positional_embedding(pos, (4, 4), (4, 4)) is pos
    resized = interpolate_positional_embedding(pos, (4, 4), (3, 7))
    assert resized.shape == (1 + 3 * 7, 8)
    torch.testing.assert_close(resized[0], pos[0])
    constant = torch.cat([pos[:1], torch.ones(16, 8) * 0.25])
    torch.testing.assert_close(interpolate_positional_embedding(constant, (4, 4), (6, 5))[1:], torch.full((30, 8), 0.25))
    with pytest.raises(EconsgError, match="positional_embedding"):
        interpolate_positional_embedding(pos[:10], (4, 4), (2, 2))


def test_dense_features_equal_hand_computed_value_path(clip_and_tokenizer):
    """At the tower's native size, capture the last block's input from open_clip's own forward and redo its value path."""
    model, _ = clip_and_tokenizer
    visual = model.visual
    rng = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 64, 64, generator=rng)
    captured = {}
    hook = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    with torch.no_grad():
        visual(pixels)
        hook.remove()
        x = captured["x"]  # [B, 1 + 16, 64]
        block = visual.transformer.resblocks[-1]
        width = x.shape[-1]
        w_v, b_v = block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :]
        value = block.ln_1(x) @ w_v.T + b_v
        y = x + value @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        y = y + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(y))))
        expected = visual.ln_post(y[:, 1:]) @ visual.proj
        expected = (expected / expected.norm(dim=-1, keepdim=True)).reshape(2, 4, 4, -1)
        got = dense_clip_features(visual, pixels)
        # the full block (with q-k attention mixing) gives something else: the value path is really taken
        full = visual.ln_post(block(x)[:, 1:]) @ visual.proj
    assert got.shape == (2, 4, 4, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(F.normalize(full, dim=-1).reshape(2, 4, 4, -1), got, atol=1e-3)


def test_dense_features_non_square_grid_normalised(clip_and_tokenizer, sam):
    extractor = make_extractor(clip_and_tokenizer, sam)
    grids = extractor.dense_features(random_images(2))
    assert grids.shape == (2, 4, 5, 32) and grids.dtype == np.float32  # 64 x 80 input, patch 16
    np.testing.assert_allclose(np.linalg.norm(grids, axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(grids[0], grids[1])
    with pytest.raises(EconsgError, match="mixes sizes"):
        extractor.dense_features(random_images(1) + random_images(1, height=32))


def test_preprocess_normalises_with_given_statistics():
    images = torch.full((1, 8, 8, 3), 0.5)
    out = preprocess_views(images, (8, 8), (0.5, 0.25, 0.0), (1.0, 0.5, 0.25))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 0.5, 2.0]))


# -- SAM masks -------------------------------------------------------------------------------------------


def test_remove_small_regions_drops_islands_and_fills_holes():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[6, 6] = False  # a one-pixel hole
    mask[17:19, 17:19] = True  # a 4-pixel island
    cleaned = remove_small_mask_regions(mask, 5)
    assert cleaned[6, 6] and not cleaned[17:19, 17:19].any()
    assert cleaned.sum() == 100
    np.testing.assert_array_equal(remove_small_mask_regions(mask, 0), mask)


def test_remove_small_regions_follows_segment_anythings_order_and_keeps_the_largest_of_small_islands():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[18:23, 18:23] = False
    mask[20, 20] = True  # a 24-pixel hole holding a 1-pixel island: filled, with no new hole where the island was
    assert remove_small_mask_regions(mask, 100)[5:35, 5:35].all()
    specks = np.zeros((20, 20), bool)
    specks[2:4, 2:4] = True  # 4 pixels
    specks[10, 10] = True  # 1 pixel
    kept = remove_small_mask_regions(specks, 50)  # every island small: the largest stays, the mask is not emptied
    assert kept.sum() == 4 and kept[2:4, 2:4].all()


def test_masks_from_records_sorted_and_scored():
    small, big = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    small[:3, :3] = True
    big[4:, 4:] = True
    tiny = np.zeros((10, 10), bool)
    tiny[0, 9] = True
    records = [
        {"segmentation": small, "predicted_iou": 0.9, "stability_score": 0.8},
        {"segmentation": big, "predicted_iou": 0.7, "stability_score": 0.6},
        {"segmentation": tiny, "predicted_iou": 0.99, "stability_score": 0.99},
    ]
    masks, scores = masks_from_records(records, 10, 10, min_area=2)
    assert masks.shape == (2, 10, 10) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], big)
    np.testing.assert_allclose(scores, [[0.7, 0.6, 36], [0.9, 0.8, 9]])
    empty_masks, empty_scores = masks_from_records([], 10, 10, min_area=2)
    assert empty_masks.shape == (0, 10, 10) and empty_scores.shape == (0, 3)


# -- the backend end to end --------------------------------------------------------------------------------


def test_extract_views_shapes_dtypes_and_consistency(clip_and_tokenizer, sam):
    extractor = make_extractor(clip_and_tokenizer, sam)
    text = extractor.text_embeddings(VOCABULARY)
    assert text.shape == (len(VOCABULARY), 32)
    views = list(extractor.extract_views(random_images(2), text, 0.05))
    assert len(views) == 2
    for view in views:
        assert isinstance(view, ViewFeatures)
        assert view.features.shape == (4, 5, 32) and view.features.dtype == np.float16
        np.testing.assert_allclose(np.linalg.norm(view.features.astype(np.float32), axis=-1), 1.0, atol=2e-3)
        assert view.labels.shape == (H, W) and view.labels.dtype == np.int16
        assert view.labels.min() >= 0 and view.labels.max() < len(VOCABULARY)
        assert view.confidence.dtype == np.float32
        assert np.all(view.confidence >= 1.0 / len(VOCABULARY) - 1e-6) and np.all(view.confidence <= 1.0)
        M = view.masks.shape[0]
        assert M >= 2 and view.masks.shape == (M, H, W) and view.masks.dtype == bool
        assert view.mask_scores.shape == (M, 3) and view.mask_scores.dtype == np.float32
        np.testing.assert_array_equal(view.mask_scores[:, 2], view.masks.reshape(M, -1).sum(axis=1))
        assert np.all(np.diff(view.mask_scores[:, 2]) <= 0)
        assert np.all(view.mask_scores[:, 2] >= 4)
        # labels and confidence can be recomputed from the stored (float16) features
        labels, confidence = labels_and_confidence(pixel_probabilities(view.features, text, H, W, 0.05))
        np.testing.assert_array_equal(view.labels, labels)
        np.testing.assert_allclose(view.confidence, confidence, rtol=1e-6)
    assert not np.array_equal(views[0].labels, views[1].labels)


def test_batching_equals_one_by_one_and_is_deterministic(clip_and_tokenizer, sam):
    images = random_images(2, seed=5)
    batched = make_extractor(clip_and_tokenizer, sam, batch_size=2)
    single = make_extractor(clip_and_tokenizer, sam, batch_size=1)
    text = batched.text_embeddings(VOCABULARY)
    np.testing.assert_allclose(batched.dense_features(images)[1], single.dense_features(images[1:])[0], atol=1e-5)
    first = list(batched.extract_views(images, text, 0.05))
    again = list(batched.extract_views(iter(images), text, 0.05))
    one = list(single.extract_views(images, text, 0.05))
    assert len(first) == len(again) == len(one) == 2
    for a, b, c in zip(first, again, one, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.mask_scores, b.mask_scores)
        np.testing.assert_allclose(a.features.astype(np.float32), c.features.astype(np.float32), atol=1e-3)
        np.testing.assert_array_equal(a.masks, c.masks)
        assert np.mean(a.labels == c.labels) > 0.99  # float16 rounding may flip a near-tie pixel


def test_mixed_sizes_stream_in_order(clip_and_tokenizer, sam):
    extractor = make_extractor(clip_and_tokenizer, sam, batch_size=4)
    text = extractor.text_embeddings(VOCABULARY)
    images = random_images(1) + random_images(1, height=32, width=32) + random_images(1)
    views = list(extractor.extract_views(images, text, 0.05))
    assert [v.labels.shape for v in views] == [(H, W), (32, 32), (H, W)]
    assert views[1].features.shape == (4, 4, 32)


def test_mask_crops_mode_takes_a_view_without_masks(clip_and_tokenizer, sam):
    """No mask found (every one smaller than min_mask_region_area): the view keeps its dense grid everywhere."""
    crops = make_extractor(clip_and_tokenizer, sam, feature_mode="mask_crops", min_mask_region_area=H * W + 1)
    text = crops.text_embeddings(VOCABULARY)
    view = next(crops.extract_views(random_images(1, seed=3), text, 0.05))
    assert len(view.masks) == 0 and view.painted.features.shape == (0, 32) and (view.painted.ids == -1).all()
    np.testing.assert_array_equal(view.labels, pixel_probabilities(view.features, text, H, W, 0.05).argmax(-1))


def test_mask_crops_mode_paints_crop_embeddings_over_their_masks_pixels(clip_and_tokenizer, sam):
    dense = make_extractor(clip_and_tokenizer, sam)
    crops = make_extractor(clip_and_tokenizer, sam, feature_mode="mask_crops")
    text = crops.text_embeddings(VOCABULARY)
    image = random_images(1, seed=3)[0]
    masks, _ = crops.view_masks(image)
    assert len(masks) > 0, "the fixture must find masks"
    crop_features = crops.mask_crop_features(image, masks)
    assert crop_features.shape == (len(masks), 32)
    np.testing.assert_allclose(np.linalg.norm(crop_features, axis=1), 1.0, atol=1e-5)
    view = next(crops.extract_views([image], text, 0.05))
    np.testing.assert_array_equal(view.painted.ids, smallest_covering_mask(masks))
    np.testing.assert_allclose(view.painted.features.astype(np.float32), crop_features, atol=2e-3)  # stored float16
    np.testing.assert_allclose(view.features, dense.dense_features([image])[0].astype(np.float16))  # the grid stays dense
    pixels = upsample_feature_rows(view.features, H, W, painted=view.painted)
    covered = view.painted.ids >= 0
    best = (pixels[covered] @ crop_features.T).argmax(axis=1)
    np.testing.assert_array_equal(best, view.painted.ids[covered])  # every covered pixel carries its own mask's crop
    probs = pixel_probabilities(view.features, text, H, W, 0.05, view.painted)
    np.testing.assert_array_equal(view.labels, probs.argmax(-1))  # what is stored gives the labels back
    assert next(dense.extract_views([image], text, 0.05)).painted is None


def test_bad_inputs_name_the_argument(clip_and_tokenizer, sam):
    extractor = make_extractor(clip_and_tokenizer, sam)
    text = extractor.text_embeddings(VOCABULARY)
    with pytest.raises(EconsgError, match=r"images\[0\].*expected \[0, 1\]"):
        next(extractor.extract_views([random_images(1)[0] * 255], text, 0.05))
    with pytest.raises(EconsgError, match=r"images\[1\]: got shape"):
        next(extractor.extract_views([random_images(1)[0], np.zeros((4, 4), np.float32)], text, 0.05))
    with pytest.raises(EconsgError, match=r"vocabulary_embeddings: got shape \(4, 7\)"):
        next(extractor.extract_views(random_images(1), np.ones((4, 7), np.float32), 0.05))
    with pytest.raises(EconsgError, match="temperature"):
        next(extractor.extract_views(random_images(1), text, 0.0))
    coarse, tokenizer = tiny_clip_model(seed=0, patch_size=32)
    with pytest.raises(EconsgError, match="clip_input_size: got 16, expected at least the patch size 32"):
        OpenClipSamExtractor(tiny_params(clip_input_size=16), clip_model=coarse, tokenizer=tokenizer, sam=sam)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(clip_and_tokenizer, sam):
    model, tokenizer = tiny_clip_model(seed=0)
    gpu = OpenClipSamExtractor(tiny_params(), clip_model=model, tokenizer=tokenizer, sam=tiny_sam_model(seed=0), device="cuda")
    cpu = make_extractor(clip_and_tokenizer, sam)
    images = random_images(2)
    # fp16 autocast on CUDA: cosines agree to ~1e-2
    cos = np.sum(gpu.dense_features(images) * cpu.dense_features(images), axis=-1)
    assert np.all(cos > 0.99)


def test_missing_weights_names_each_file_a_real_run_lacks_and_none_once_both_are_there(tmp_path):
    from econsg.features.openclip_sam import missing_weights

    clip, sam = tmp_path / "clip.safetensors", tmp_path / "sam_vit_h.pth"
    params = tiny_params(clip_checkpoint=str(clip), sam_checkpoint=str(sam))
    missing = missing_weights(params)
    assert len(missing) == 2 and "clip_checkpoint" in missing[0] and "sam_checkpoint" in missing[1]
    clip.write_bytes(b"")
    assert len(missing_weights(params)) == 1 and "sam_checkpoint" in missing_weights(params)[0]
    sam.write_bytes(b"")
    assert missing_weights(params) == []  # files in place (whether they load is extract's to find)
    assert missing_weights(tiny_params(stand_in=True)) == [], "the stand-in models read no file"
