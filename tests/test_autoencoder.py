"""Tests of econsg.autoencoder: the latent autoencoder, its losses, training and persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from econsg.autoencoder import (
    IGNORE,
    LatentAutoencoder,
    autoencoder_loss,
    encode_features,
    encode_text,
    latent_class_accuracy,
    model_from_arrays,
    reconstruction_cosine,
    state_to_arrays,
    train_autoencoder,
)
from econsg.config.autoencode import AutoencodeParams
from econsg.errors import EconsgError


def separable_features(rng: np.random.Generator, n: int, d: int, c: int, noise: float = 1.0, flip: float = 0.05):
    """Unit class embeddings sharing a common direction (pairwise cos 0.6) and noisy unit features.

    Returns features [n, d], labels [n] (a fraction `flip` re-drawn at random), true classes [n], text [c, d].
    """
    basis, _ = np.linalg.qr(rng.normal(size=(d, c + 1)))
    text = math.sqrt(0.6) * basis[:, :1].T + math.sqrt(0.4) * basis[:, 1:].T
    truth = rng.integers(0, c, n)
    feats = text[truth] + noise * rng.normal(size=(n, d)) / math.sqrt(d)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    labels = np.where(rng.uniform(size=n) < flip, rng.integers(0, c, n), truth)
    return feats.astype(np.float32), labels, truth, text.astype(np.float32)


def test_synthetic_classes_share_a_common_component():
    _, _, _, text = separable_features(np.random.default_rng(0), 10, 32, 5)
    gram = text @ text.T
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-5)
    np.testing.assert_allclose(gram[~np.eye(5, dtype=bool)], 0.6, rtol=1e-5)


def test_architecture_mirrors_hidden_widths():
    model = LatentAutoencoder(64, 6, hidden=(32, 16))
    widths = [(m.in_features, m.out_features) for m in model.linear_layers()]
    assert widths == [(64, 32), (32, 16), (16, 6), (6, 16), (16, 32), (32, 64)]
    z, recon = model(torch.zeros(3, 64))
    assert z.shape == (3, 6) and recon.shape == (3, 64)
    # no activation at the ends: the last module of each half is Linear
    assert isinstance(model.encoder[-1], torch.nn.Linear) and isinstance(model.decoder[-1], torch.nn.Linear)


def test_construction_does_not_touch_the_global_rng():
    state = torch.random.get_rng_state()
    LatentAutoencoder(16, 3, hidden=(8,))
    assert torch.equal(state, torch.random.get_rng_state())


def test_loss_parts_non_negative_and_ce_ignores_ignore_labels():
    rng = np.random.default_rng(1)
    feats, labels, _, text = separable_features(rng, 16, 24, 4)
    model = LatentAutoencoder(24, 3, hidden=(12,), generator=torch.Generator().manual_seed(1))
    f, t = torch.from_numpy(feats), torch.from_numpy(text)
    y = torch.from_numpy(labels).long()
    total, parts = autoencoder_loss(model, f, y, t, temperature=0.1)
    assert set(parts) == {"l2", "ce_feature", "ce_latent"} and all(v >= 0 for v in parts.values())
    assert math.isclose(total.item(), sum(parts.values()), rel_tol=1e-5)
    # CE by hand over the labelled half only
    y_half = y.clone()
    y_half[::2] = IGNORE
    _, half = autoencoder_loss(model, f, y_half, t, temperature=0.1)
    z, recon = model(f)
    logits = F.normalize(recon, dim=1) @ F.normalize(t, dim=1).T / 0.1
    expected = F.cross_entropy(logits[1::2], y[1::2]).item()
    assert math.isclose(half["ce_feature"], expected, rel_tol=1e-5)
    assert math.isclose(half["l2"], parts["l2"], rel_tol=1e-6)  # L2 still uses every point
    # all IGNORE: CE terms vanish, the loss stays finite and differentiable
    total, none = autoencoder_loss(model, f, torch.full_like(y, IGNORE), t, temperature=0.1)
    assert none["ce_feature"] == 0 and none["ce_latent"] == 0 and torch.isfinite(total)
    total.backward()


def test_authors_loss_matches_its_formula():
    model = LatentAutoencoder(8, 2, hidden=(4,))
    f = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    total, parts = autoencoder_loss(model, f, torch.zeros(5, dtype=torch.long), torch.eye(8)[:2], 0.1, kind="authors")
    _, recon = model(f)
    mse = ((recon - f) ** 2).mean().item()
    channel_cosines = [F.cosine_similarity(recon[:, j], f[:, j], dim=0) for j in range(8)]  # their dim=0: per channel
    cos = 1 - torch.stack(channel_cosines).mean().item()
    assert math.isclose(parts["mse"], mse, rel_tol=1e-5) and math.isclose(total.item(), mse + 0.001 * cos, rel_tol=1e-5)
    with pytest.raises(EconsgError, match="loss kind: expected 'paper' or 'authors', got 'l1'"):
        autoencoder_loss(model, f, torch.zeros(5, dtype=torch.long), torch.eye(8)[:2], 0.1, kind="l1")


def test_training_reaches_high_latent_accuracy_on_separable_features():
    rng = np.random.default_rng(2)
    feats, labels, truth, text = separable_features(rng, 2000, 64, 5, noise=1.0, flip=0.05)
    model, curve = train_autoencoder(feats, labels, text, latent_dim=6, hidden=(64, 32, 16), iterations=150,
                                     batch_size=256, lr=3e-3, temperature=0.05, generator=torch.Generator().manual_seed(0),
                                     progress=False)  # fmt: skip
    assert latent_class_accuracy(model, feats, truth, text) >= 0.95
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert curve[-1]["iteration"] == 150 and {"l2", "ce_feature", "ce_latent", "lr"} <= set(curve[-1])
    # the signal is a unit class direction plus isotropic noise of equal norm: cos(f, t_y) ~ 1/sqrt(2)
    assert reconstruction_cosine(model, feats) > 0.5
    q = encode_text(model, text)
    assert q.shape == (5, 6)
    np.testing.assert_allclose(q.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_training_is_deterministic_for_a_fixed_generator():
    rng = np.random.default_rng(3)
    feats, labels, _, text = separable_features(rng, 200, 16, 3)
    kw = dict(latent_dim=3, hidden=(8,), iterations=20, batch_size=64, progress=False)
    a, ca = train_autoencoder(feats, labels, text, generator=torch.Generator().manual_seed(7), **kw)
    b, cb = train_autoencoder(feats, labels, text, generator=torch.Generator().manual_seed(7), **kw)
    c, _ = train_autoencoder(feats, labels, text, generator=torch.Generator().manual_seed(8), **kw)
    for name, value in state_to_arrays(a).items():
        np.testing.assert_array_equal(value, state_to_arrays(b)[name])
    assert ca == cb
    assert not np.array_equal(state_to_arrays(a)["encoder.0.weight"], state_to_arrays(c)["encoder.0.weight"])


def test_weights_round_trip_through_arrays():
    model = LatentAutoencoder(20, 4, hidden=(10, 7), generator=torch.Generator().manual_seed(4))
    arrays = state_to_arrays(model)
    assert arrays["encoder.0.weight"].shape == (10, 20) and arrays["decoder.2.bias"].shape == (20,)
    again = model_from_arrays(arrays)
    assert (again.feature_dim, again.latent_dim, again.hidden) == (20, 4, (10, 7))
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(again(x)[1], model(x)[1], rtol=0, atol=0)
    torch.testing.assert_close(encode_features(again, x.numpy()), model.encode(x).detach(), rtol=0, atol=0)
    broken = dict(arrays)
    broken["decoder.0.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(EconsgError, match=r"arrays\['decoder.0.weight'\]: expected shape \(7, 4\)"):
        model_from_arrays(broken)


def test_a_store_missing_a_weight_is_refused_naming_the_store_and_the_weight(tmp_path):
    import zarr

    from econsg.errors import ArtifactError
    from econsg.workspace import WEIGHT_PREFIX, load_autoencoder

    arrays = state_to_arrays(LatentAutoencoder(20, 4, hidden=(10, 7), generator=torch.Generator().manual_seed(4)))
    store = zarr.open_group(tmp_path / "autoencode.zarr", mode="w")
    for name, value in arrays.items():
        if name != "decoder.2.weight":
            store.create_array(WEIGHT_PREFIX + name, data=value)
    with pytest.raises(ArtifactError, match=r"autoencode.zarr: its weights.\* arrays: a 20 -> 4 autoencoder lacks "
                                            r"\['decoder.2.weight'\]; rerun autoencode"):
        load_autoencoder(store)
    store.create_array(WEIGHT_PREFIX + "decoder.2.weight", data=arrays["decoder.2.weight"])
    store.create_array(WEIGHT_PREFIX + "decoder.9.weight", data=arrays["decoder.2.weight"])
    with pytest.raises(ArtifactError, match=r"has no place for \['decoder.9.weight'\]"):
        load_autoencoder(store)


def test_bad_inputs_name_the_argument():
    feats = np.zeros((4, 8), np.float32)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(EconsgError, match=r"text_embeddings: expected shape \[C, 8\]"):
        train_autoencoder(feats, np.zeros(4), np.zeros((3, 5)), generator=g, progress=False)
    with pytest.raises(EconsgError, match=r"labels: expected class ids in \[0, 3\)"):
        train_autoencoder(feats, np.array([0, 1, 2, 3]), np.zeros((3, 8)), generator=g, progress=False)
    broken = feats.copy()
    broken[2, 5] = np.nan
    with pytest.raises(EconsgError, match=r"features: 1 of 4 rows hold NaN or inf \(the first, row 2\)"):
        train_autoencoder(broken, np.zeros(4), np.zeros((3, 8)), generator=g, progress=False)
    with pytest.raises(EconsgError, match="every label is IGNORE"):
        latent_class_accuracy(LatentAutoencoder(8, 2, (4,)), feats, np.full(4, IGNORE), np.eye(8)[:3])


def test_autoencode_params():
    p = AutoencodeParams()
    assert (p.latent_dim, p.hidden, p.loss) == (16, (256, 128, 64, 32), "paper")
    assert AutoencodeParams(latent_dim=32).latent_dim == 32
    for bad in ({"latent_dim": 1}, {"loss": "l1"}, {"hidden": (64, 0)}, {"temperature": 0}, {"epochs": 3}):
        with pytest.raises(ValueError):
            AutoencodeParams(**bad)


@pytest.mark.slow
def test_demo_scale_latent_accuracy():
    """The demo's size with AutoencodeParams defaults: 15k points, D = 512, 10 classes, d = 16. (Its time is the
    demo's own figure: metrics/autoencode.json, train_seconds.)"""
    p = AutoencodeParams()
    feats, labels, truth, text = separable_features(np.random.default_rng(0), 15000, 512, 10, noise=1.0, flip=0.05)
    model, _ = train_autoencoder(feats, labels, text, latent_dim=p.latent_dim, hidden=p.hidden, iterations=p.iterations,
                                 batch_size=p.batch_size, lr=p.lr, temperature=p.temperature, loss_kind=p.loss,
                                 generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    assert latent_class_accuracy(model, feats, truth, text) >= 0.95


def test_unit_latents_keep_the_direction_and_drop_the_length():
    model = LatentAutoencoder(20, 4, hidden=(10, 7), generator=torch.Generator().manual_seed(4))
    x = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(6))
    raw = encode_features(model, x)
    unit = encode_features(model, x, unit=True)
    assert unit.shape == raw.shape == (2, 3, 4)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(F.cosine_similarity(unit, raw, dim=-1), torch.ones(2, 3))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2, 3))


def test_ce_weights_scale_each_points_cross_entropy():
    """Per-point CE weights: all ones is the unweighted loss; a zero weight removes that point from both CE terms
    (the same loss as that point unlabelled) but not from L2; weights that are not one per point are refused."""
    gen = torch.Generator().manual_seed(0)
    model = LatentAutoencoder(8, 3, (6,), generator=gen)
    feats = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    text = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    labels = torch.tensor([0, 1, 2, 1, IGNORE])
    plain, plain_parts = autoencoder_loss(model, feats, labels, text, 0.1)
    ones, _ = autoencoder_loss(model, feats, labels, text, 0.1, weights=torch.ones(5))
    assert torch.allclose(plain, ones)
    dropped, dropped_parts = autoencoder_loss(model, feats, labels, text, 0.1, weights=torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]))
    unlabelled, unlabelled_parts = autoencoder_loss(model, feats, torch.tensor([0, IGNORE, 2, 1, IGNORE]), text, 0.1)
    assert torch.allclose(dropped, unlabelled) and not torch.allclose(dropped, plain)
    assert dropped_parts["l2"] == pytest.approx(plain_parts["l2"]), "the weights touch the CE terms only"
    with pytest.raises(EconsgError, match="label_weights: expected 5"):
        train_autoencoder(feats, labels, text, latent_dim=3, hidden=(6,), iterations=1, batch_size=5, generator=gen,
                          progress=False, label_weights=np.ones(4))


def test_training_weighs_down_the_ce_of_points_crr_mostly_ignored():
    """Points labelled as class 0 but whose features lie nearest class 1's text, with weight near zero, end up
    classified 1 by their latents; with uniform weights the CE terms pull them to their (wrong) label 0."""
    rng = np.random.default_rng(3)
    feats, labels, _, text = separable_features(rng, 600, 32, 3, noise=0.5, flip=0.0)
    odd = np.flatnonzero(labels == 1)[:150]
    noisy = labels.copy()
    noisy[odd] = 0  # labelled wrongly, as the open-set plant's few labelled samples name it lamp
    weights = np.ones(len(labels), np.float32)
    weights[odd] = 0.01
    kw = dict(latent_dim=4, hidden=(16,), iterations=300, batch_size=128, progress=False)

    def classified_as_one(label_weights) -> float:
        model, _ = train_autoencoder(feats, noisy, text, generator=torch.Generator().manual_seed(0),
                                     label_weights=label_weights, **kw)
        with torch.no_grad():
            z = F.normalize(model.encode(torch.from_numpy(feats[odd])), dim=1)
            t_z = encode_text(model, torch.from_numpy(text))
        return float(((z @ t_z.T).argmax(1) == 1).float().mean())

    assert classified_as_one(weights) > classified_as_one(None) + 0.2


def test_the_ce_weight_rules_read_the_fused_points_shares():
    from stages.autoencode import ce_weights

    fused = {"labelled_share": np.array([1.0, 0.5, 0.2], np.float32), "vote_share": np.array([1.0, 0.6, 0.5], np.float32)}
    np.testing.assert_allclose(ce_weights(fused, "labelled_share"), [1.0, 0.5, 0.2])
    np.testing.assert_allclose(ce_weights(fused, "label_support"), [1.0, 0.3, 0.1])  # the share carrying the label
    assert ce_weights(fused, "uniform") is None
    with pytest.raises(EconsgError, match="ce_weights"):
        ce_weights(fused, "labelled")


def test_autoencoder_lr_decays_to_one_percent():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.rand(16, 8, generator=g), dim=1)
    _, curve = train_autoencoder(feats, np.zeros(16, np.int64), torch.eye(2, 8), latent_dim=2, hidden=(4,),
                                 iterations=4, batch_size=8, lr=1e-3, generator=g, progress=False, log_every=1)
    assert [row["lr"] for row in curve] == pytest.approx(
        [1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * i / 4))) for i in (1, 2, 3, 4)])
    assert curve[-1]["lr"] == pytest.approx(1e-5)
