"""The low-dimensional latent space: an MLP autoencoder over fused 3D features (METHOD.md section 4).

E: R^D -> R^d and G: R^d -> R^D are trained on the fused points' features F_in with

    paper:   L2(F_in, F_re) + CE(cos(F_re, t) / T, y) + CE(cos(z, T_z) / T, y)
    authors: MSE(F_in, F_re) + 0.001 * (1 - cos(F_in, F_re))        (their public code)

(the authors' cosine is taken per feature channel down the batch, torch's cosine_similarity at dim=0, as their code
computes it; weighted 0.001, it barely moves the result)

where z = E(F_in), F_re = G(z), t = the vocabulary's text embeddings [C, D], T_z = normalize(E(t)) and
y the fused labels (IGNORE = -1 skipped). L2 is the squared Euclidean distance per point averaged
over points (for unit features it equals 2 - 2 cos), so it weighs like the CE terms; the authors'
MSE averages over elements as their code does. Each CE term may weigh its points (`weights`): the stage
passes each point's labelled share (`autoencode.ce_weights`), so a point crr mostly ignored counts less.

Open-vocabulary queries go through the same encoder: any text -> text encoder -> E -> normalize.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from econsg.config.autoencode import AutoencodeParams
from econsg.errors import EconsgError
from econsg.progress import track

IGNORE = -1
LossKind = Literal["paper", "authors"]
DEFAULTS = AutoencodeParams()  # the library's keyword defaults are the stage's


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers through `widths` with GELU between them, none after the last; parameters left empty."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out, device="meta"))  # no global-RNG init; see reset_parameters
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers).to_empty(device="cpu")


class LatentAutoencoder(nn.Module):
    """Encoder E: D -> hidden... -> d and its mirror decoder G: d -> ...hidden reversed -> D.

    Args:
        feature_dim: D, the VLM feature width (512 for CLIP ViT-B).
        latent_dim: d, the latent width rendered by the splats (6, 16 or 32 in the paper).
        hidden: encoder hidden widths, largest first (the authors': 256, 128, 64, 32).
        generator: seeds the initial weights (He-uniform weights, zero biases); None = a fixed seed 0,
            so construction never touches torch's global RNG.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        hidden: tuple[int, ...] | list[int] = DEFAULTS.hidden,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if int(feature_dim) < 1:
            raise EconsgError(f"feature_dim: expected >= 1, got {feature_dim}")
        if int(latent_dim) < 1:
            raise EconsgError(f"latent_dim: expected >= 1, got {latent_dim}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise EconsgError(f"hidden: expected positive layer widths, got {list(hidden)}")
        self.feature_dim = int(feature_dim)
        self.latent_dim = int(latent_dim)
        self.hidden = hidden
        self.encoder = _mlp([self.feature_dim, *hidden, self.latent_dim])
        self.decoder = _mlp([self.latent_dim, *reversed(hidden), self.feature_dim])
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-uniform weights U(-sqrt(6 / fan_in), +sqrt(6 / fan_in)) drawn from `generator`, zero biases."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in self.linear_layers():
                bound = math.sqrt(6.0 / layer.in_features)
                w = torch.rand(layer.weight.shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
                layer.weight.copy_(w)
                layer.bias.zero_()

    def linear_layers(self) -> list[nn.Linear]:
        """Encoder then decoder Linear layers, in order."""
        return [m for m in (*self.encoder, *self.decoder) if isinstance(m, nn.Linear)]

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """[..., D] features -> [..., d] latents z (not normalised)."""
        return self.encoder(features)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[..., d] latents -> [..., D] reconstructed features F_re (not normalised)."""
        return self.decoder(latents)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., D] -> (z [..., d], F_re [..., D])."""
        z = self.encode(features)
        return z, self.decode(z)


# ------------------------------------------------------------------------------------------- loss


def _masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over labels != IGNORE (weighted by `weights` if given); 0 (with a graph) when every label is IGNORE."""
    keep = labels != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    if weights is None:
        return F.cross_entropy(logits[keep], labels[keep])
    w = weights[keep]
    return (F.cross_entropy(logits[keep], labels[keep], reduction="none") * w).sum() / w.sum().clamp_min(1e-12)


def autoencoder_loss(
    model: LatentAutoencoder,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_embeddings: torch.Tensor,
    temperature: float,
    kind: LossKind = DEFAULTS.loss,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss on one batch.

    Args:
        features: [B, D] fused features F_in (unit norm).
        labels: [B] int64 class ids, IGNORE = -1 contributes to L2 only.
        text_embeddings: [C, D] unit text embeddings t of the training vocabulary.
        temperature: T of the cosine logits (> 0).
        kind: "paper" or "authors" (see the module docstring).
        weights: [B] per-point weights of the CE terms (None: uniform); a weighted mean over labelled points.

    Returns:
        total: scalar tensor to back-propagate.
        parts: float values of each term ("l2", "ce_feature", "ce_latent" | "mse", "cosine"), all >= 0.
    """
    if not temperature > 0:
        raise EconsgError(f"temperature: expected > 0, got {temperature}")
    z, recon = model(features)
    if kind == "paper":
        l2 = (recon - features).pow(2).sum(dim=1).mean()
        t = F.normalize(text_embeddings, dim=1)
        logits_feature = F.normalize(recon, dim=1) @ t.T / temperature
        t_z = F.normalize(model.encode(text_embeddings), dim=1)
        logits_latent = F.normalize(z, dim=1) @ t_z.T / temperature
        ce_feature = _masked_cross_entropy(logits_feature, labels, weights)
        ce_latent = _masked_cross_entropy(logits_latent, labels, weights)
        total = l2 + ce_feature + ce_latent
        parts = {"l2": l2.item(), "ce_feature": ce_feature.item(), "ce_latent": ce_latent.item()}
    elif kind == "authors":
        mse = (recon - features).pow(2).mean()
        cosine = 1.0 - F.cosine_similarity(recon, features, dim=0).mean()  # per channel over the batch, as theirs
        total = mse + 0.001 * cosine
        parts = {"mse": mse.item(), "cosine": cosine.item()}
    else:
        raise EconsgError(f"loss kind: expected 'paper' or 'authors', got {kind!r}")
    return total, parts


# --------------------------------------------------------------------------------------- training


def _as_tensors(features, labels, text_embeddings, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    feats = torch.as_tensor(np.asarray(features, dtype=np.float32) if not torch.is_tensor(features) else features)
    text = torch.as_tensor(
        np.asarray(text_embeddings, dtype=np.float32) if not torch.is_tensor(text_embeddings) else text_embeddings
    )
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise EconsgError(f"features: expected a non-empty [P, D] array, got shape {tuple(feats.shape)}")
    if not bool(torch.isfinite(feats).all()):
        bad = (~torch.isfinite(feats).all(dim=1)).nonzero()[:, 0]
        raise EconsgError(f"features: {len(bad)} of {feats.shape[0]} rows hold NaN or inf (the first, row {int(bad[0])}); "
                          f"expected finite features: training on them would make every latent NaN")
    if text.ndim != 2 or text.shape[1] != feats.shape[1]:
        raise EconsgError(f"text_embeddings: expected shape [C, {feats.shape[1]}] like the features, got {tuple(text.shape)}")
    labs = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).reshape(-1).long().cpu()
    if labs.shape[0] != feats.shape[0]:
        raise EconsgError(f"labels: expected {feats.shape[0]} entries like features, got {labs.shape[0]}")
    if labs.numel() and (int(labs.min()) < IGNORE or int(labs.max()) >= text.shape[0]):
        raise EconsgError(
            f"labels: expected class ids in [0, {text.shape[0]}) or {IGNORE}, got range [{int(labs.min())}, {int(labs.max())}]"
        )
    return feats.float().to(device), labs.to(device), text.float().to(device)


def train_autoencoder(
    features,
    labels,
    text_embeddings,
    *,
    latent_dim: int = DEFAULTS.latent_dim,
    hidden: tuple[int, ...] = DEFAULTS.hidden,
    iterations: int = DEFAULTS.iterations,
    batch_size: int = DEFAULTS.batch_size,
    lr: float = DEFAULTS.lr,
    temperature: float = DEFAULTS.temperature,
    loss_kind: LossKind = DEFAULTS.loss,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_every: int | None = None,
    label_weights=None,
) -> tuple[LatentAutoencoder, list[dict[str, float]]]:
    """Train E and G on fused features with Adam (learning rate cosine-decayed to 1 %).

    Args:
        features: [P, D] fused features (numpy or torch); labels: [P] class ids or IGNORE;
        text_embeddings: [C, D] unit text embeddings of the training vocabulary.
        generator: a CPU torch.Generator; it seeds the initial weights and the minibatch order
            (epochs of a random permutation), so a fixed seed gives identical weights on CPU at a given number of
            torch threads (another count sums in another order: weights within ~1e-6).
        log_every: iterations between curve entries (default: 50 entries over the run, plus the last).
        label_weights: [P] non-negative weights of the points in both CE terms (None: uniform).

    Returns:
        model: trained, in eval mode, on `device`.
        curve: one dict per logged step: "iteration", "loss", "lr" and the loss parts.
    """
    for name, value, low in (("latent_dim", latent_dim, 1), ("iterations", iterations, 1), ("batch_size", batch_size, 1)):
        if int(value) < low:
            raise EconsgError(f"{name}: expected >= {low}, got {value}")
    if not lr > 0:
        raise EconsgError(f"lr: expected > 0, got {lr}")
    feats, labs, text = _as_tensors(features, labels, text_embeddings, device)
    lw = None if label_weights is None else torch.as_tensor(np.asarray(label_weights, np.float32)).reshape(-1).to(device)
    if lw is not None and lw.shape[0] != feats.shape[0]:
        raise EconsgError(f"label_weights: expected {feats.shape[0]} values like features, got {lw.shape[0]}")
    if lw is not None and not (bool(torch.isfinite(lw).all()) and bool((lw >= 0).all())):
        raise EconsgError(f"label_weights: expected finite non-negative values, got range [{float(lw.min())}, {float(lw.max())}]")
    model = LatentAutoencoder(feats.shape[1], latent_dim, hidden, generator=generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(i, iterations) / iterations))
    )
    n = feats.shape[0]
    batch = min(int(batch_size), n)
    log_every = log_every or max(1, iterations // 50)
    curve: list[dict[str, float]] = []
    perm = torch.randperm(n, generator=generator)
    cursor = 0
    steps = range(1, iterations + 1)
    model.train()
    for it in track(steps, "autoencoder") if progress else steps:
        if cursor + batch > n:
            perm = torch.randperm(n, generator=generator)
            cursor = 0
        idx = perm[cursor : cursor + batch].to(device)
        cursor += batch
        total, parts = autoencoder_loss(model, feats[idx], labs[idx], text, temperature, loss_kind,
                                        None if lw is None else lw[idx])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        if it % log_every == 0 or it == iterations:
            curve.append({"iteration": it, "loss": total.item(), "lr": optimizer.param_groups[0]["lr"], **parts})
    model.eval()
    return model, curve


# ------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def encode_features(model: LatentAutoencoder, features, batch_size: int = 65536, unit: bool = False) -> torch.Tensor:
    """E(F) for [..., D] features (numpy or torch) -> [..., d] float32 latents on the CPU, in batches; `unit`
    divides each by its norm (the stored latent space of `autoencode.unit_latents`)."""
    feats = torch.as_tensor(features).float()
    if feats.shape[-1] != model.feature_dim:
        raise EconsgError(f"features: expected last dimension {model.feature_dim}, got shape {tuple(feats.shape)}")
    flat = feats.reshape(-1, model.feature_dim)
    device = next(model.parameters()).device
    out = [model.encode(flat[i : i + batch_size].to(device)).cpu() for i in range(0, flat.shape[0], batch_size)]
    latents = torch.cat(out) if out else torch.zeros(0, model.latent_dim)
    if unit:
        latents = F.normalize(latents, dim=-1)
    return latents.reshape(*feats.shape[:-1], model.latent_dim)


@torch.no_grad()
def encode_text(model: LatentAutoencoder, text_embeddings) -> torch.Tensor:
    """Open-vocabulary query latents: [Q, D] text embeddings -> [Q, d] normalize(E(t))."""
    return F.normalize(encode_features(model, text_embeddings), dim=-1)


@torch.no_grad()
def latent_class_accuracy(model: LatentAutoencoder, features, labels, text_embeddings) -> float:
    """Fraction of labelled points whose argmax_c cos(E(f), T_z[c]) equals their label (IGNORE skipped)."""
    labs = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).reshape(-1).long().cpu()
    keep = labs != IGNORE
    if not bool(keep.any()):
        raise EconsgError("labels: every label is IGNORE; accuracy is undefined")
    z = F.normalize(encode_features(model, features), dim=-1)
    pred = (z @ encode_text(model, text_embeddings).T).argmax(dim=1)
    return float((pred[keep] == labs[keep]).float().mean())


@torch.no_grad()
def reconstruction_cosine(model: LatentAutoencoder, features) -> float:
    """Mean cosine similarity between features [P, D] and their reconstructions G(E(F)), on the CPU (where
    `encode_features` returns its latents) whatever device the features and the model are on."""
    feats = torch.as_tensor(features).float().cpu()
    device = next(model.parameters()).device
    recon = model.decode(encode_features(model, feats).to(device)).cpu()
    return float(F.cosine_similarity(recon, feats, dim=-1).mean())


# ------------------------------------------------------------------------------------ persistence


def state_to_arrays(model: LatentAutoencoder) -> dict[str, np.ndarray]:
    """Weights as float32 numpy arrays named `encoder.{i}.weight|bias`, `decoder.{i}.weight|bias` (i = Linear index)."""
    arrays: dict[str, np.ndarray] = {}
    for part in ("encoder", "decoder"):
        linears = [m for m in getattr(model, part) if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            arrays[f"{part}.{i}.weight"] = layer.weight.detach().cpu().numpy().astype(np.float32)
            arrays[f"{part}.{i}.bias"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    return arrays


def model_from_arrays(arrays: dict[str, np.ndarray]) -> LatentAutoencoder:
    """Rebuild a LatentAutoencoder from `state_to_arrays` output; dimensions come from the weight shapes."""
    enc = sorted((k for k in arrays if k.startswith("encoder.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    if not enc:
        raise EconsgError(f"arrays: expected 'encoder.<i>.weight' entries, got keys {sorted(arrays)}")
    shapes = [np.shape(arrays[k]) for k in enc]
    feature_dim, latent_dim = shapes[0][1], shapes[-1][0]
    hidden = tuple(s[0] for s in shapes[:-1])
    model = LatentAutoencoder(feature_dim, latent_dim, hidden)
    expected = state_to_arrays(model)
    if set(expected) != set(arrays):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise EconsgError(f"arrays: a {feature_dim} -> {latent_dim} autoencoder" + (f" lacks {missing}" if missing else "")
                          + (f"{' and' if missing else ''} has no place for {extra}" if extra else ""))
    with torch.no_grad():
        for part in ("encoder", "decoder"):
            linears = [m for m in getattr(model, part) if isinstance(m, nn.Linear)]
            for i, layer in enumerate(linears):
                for name in ("weight", "bias"):
                    key = f"{part}.{i}.{name}"
                    value = np.asarray(arrays[key])
                    if value.shape != expected[key].shape:
                        raise EconsgError(f"arrays[{key!r}]: expected shape {expected[key].shape}, got {value.shape}")
                    getattr(layer, name).copy_(torch.from_numpy(value.astype(np.float32)))
    model.eval()
    return model
