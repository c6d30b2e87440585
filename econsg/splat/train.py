"""3DGS training on posed images: Adam per parameter, SH schedule, gsplat's DefaultStrategy, checkpoints.

One camera per step, in a fresh random order every epoch (drawn from the caller's generator). The
loop follows gsplat's `examples/simple_trainer.py`: render, colour loss (+ the optional `extra_loss`
hook that the semantic terms use), backward, optimizer steps, then densification and pruning with
`gsplat.strategy.DefaultStrategy` (its ops are plain torch and run on CPU tensors).

Two deviations from gsplat 1.5.3, both small:
- The opacity reset is done here: `DefaultStrategy.step_post_backward` tests
  `step % reset_every == 0 & step > 0`, which Python parses as a chained comparison that is always
  false, so gsplat never resets opacities. We call its `reset_opa` op on the intended steps.
- `split` draws its offsets from torch's global generator. To keep training a function of the
  caller's generator without touching global state, densification runs inside
  `torch.random.fork_rng` seeded from that generator; the global state is restored afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa
from torch import Tensor

from econsg.artifacts import left_by_dead_process, write_file_atomic
from econsg.config.splat import SplatParams
from econsg.errors import EconsgError
from econsg.splat.gaussians import check_gaussians, render_gaussians, sh_degree_of
from econsg.splat.losses import color_loss, psnr

CHECKPOINT_SCHEMA_VERSION = 1
CHECKPOINT_KIND = "econsg.splat.checkpoint"
CHECKPOINTS_KEPT = 2  # of one run
OTHER_RUNS_KEPT = 2  # runs (fingerprints) besides the finished one whose checkpoints stay, the most recent first
_CHECKPOINT_NAME = re.compile(r"^splat-([0-9a-f]{16})-(\d{8})\.pt$")

ExtraLoss = Callable[[Any, int, torch.nn.ParameterDict], tuple[Tensor, dict[str, float]]]


@dataclass
class TrainViews:
    """Posed training images: the cameras on the device the Gaussians train on, the per-view data there or on the
    CPU (pinned, for a GPU run: one view moves per step, so a long sequence need not fit in GPU memory).

    images [V, H, W, 3] uint8 as stored (a quarter of float32's memory on a long sequence; `image` converts one view
    at a time) or float32 in [0, 1]; viewmats [V, 4, 4] world-to-camera (OpenCV); Ks [V, 3, 3] pixels; width W,
    height H; extras: per-view tensors [V, ...] for `extra_loss` (e.g. latent maps, kept in their stored dtypes;
    the loss moves the view it reads to the render's device).
    """

    images: Tensor
    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int
    extras: dict[str, Tensor] = field(default_factory=dict)

    def image(self, view: int) -> Tensor:
        """[1, H, W, 3] float32 in [0, 1] on the cameras' device: the training target of `view`."""
        image = self.images[view : view + 1].to(self.viewmats.device, non_blocking=True)
        return image.float() / 255.0 if image.dtype == torch.uint8 else image


@dataclass
class TrainResult:
    """Trained parameters (raw, gaussians.py naming), the training curve and the wall time.

    curve: one row per `log_every` steps: step (steps done), loss and psnr (means over those steps),
    num_gaussians, seconds (training time so far), plus the means of whatever `extra_loss` logged.
    train_seconds includes the time of runs this one resumed from. resumed_step: 0 or the checkpoint step.
    """

    params: torch.nn.ParameterDict
    curve: list[dict[str, float]]
    train_seconds: float
    resumed_step: int = 0


# --------------------------------------------------------------------------- schedule and optimizers


def scene_scale_of(viewmats: Tensor, means: Tensor) -> float:
    """1.1 x the largest distance of a camera centre from their mean, as simple_trainer (scene units). Where the
    centres coincide (one view, a camera turning on the spot), 1.1 x the median distance of the Gaussians' means
    from them instead: a fixed 1.0 would be 0.1 mm in a scene in millimetres, and prune every Gaussian."""
    centres = torch.linalg.inv(viewmats.detach().double().cpu())[:, :3, 3]
    spread = float((centres - centres.mean(dim=0)).norm(dim=-1).max()) * 1.1
    if spread > 1e-6:
        return spread
    depth = float((means.detach().double().cpu() - centres.mean(dim=0)).norm(dim=-1).median()) * 1.1 if len(means) else 0.0
    return depth if depth > 1e-6 else 1.0


def active_sh_degree(step: int, cfg: SplatParams) -> int:
    """SH degree rendered at `step`: one more every sh_degree_interval steps, up to cfg.sh_degree."""
    return min(step // cfg.sh_degree_interval, cfg.sh_degree)


def exponential_decay(lr: float, final_factor: float, step: int, iterations: int) -> float:
    """lr x final_factor^(step / iterations): lr at step 0, lr x final_factor at the last step."""
    return lr * final_factor ** (step / iterations)


def means_lr_at(step: int, cfg: SplatParams, scene_scale: float) -> float:
    """Centres' learning rate: means_lr x scene_scale, decayed exponentially to means_lr_final_factor at the end."""
    return exponential_decay(cfg.means_lr * scene_scale, cfg.means_lr_final_factor, step, cfg.iterations)


def feature_lr_at(step: int, cfg: SplatParams) -> float:
    """Semantic features' learning rate: feature_lr decayed exponentially to feature_lr_final_factor at the end."""
    return exponential_decay(cfg.feature_lr, cfg.feature_lr_final_factor, step, cfg.iterations)


def make_optimizers(params: torch.nn.ParameterDict, cfg: SplatParams, scene_scale: float) -> dict[str, torch.optim.Adam]:
    """One Adam (eps 1e-15, as simple_trainer) per parameter tensor, with that tensor's learning rate."""
    lrs = {
        "means": cfg.means_lr * scene_scale,
        "scales": cfg.scales_lr,
        "quats": cfg.quats_lr,
        "opacities": cfg.opacities_lr,
        "sh0": cfg.sh0_lr,
        "shN": cfg.shN_lr,
        "features": cfg.feature_lr,
    }
    return {
        name: torch.optim.Adam([{"params": [param], "lr": lrs[name], "name": name}], eps=1e-15, betas=(0.9, 0.999))
        for name, param in params.items()
    }


def make_strategy(cfg: SplatParams) -> DefaultStrategy:
    """gsplat's DefaultStrategy with the thresholds and (CPU-scaled) schedule of cfg."""
    return DefaultStrategy(
        prune_opa=cfg.prune_opa,
        grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d,
        prune_scale3d=cfg.prune_scale3d,
        refine_start_iter=cfg.refine_start_iter,
        refine_stop_iter=cfg.refine_stop_iter,
        refine_every=cfg.refine_every,
        reset_every=cfg.reset_every,
        absgrad=False,
        verbose=False,
    )


def is_opacity_reset_step(step: int, cfg: SplatParams) -> bool:
    """Steps where 3DGS resets opacities (gsplat's own test never fires; see the module docstring)."""
    return 0 < step < cfg.refine_stop_iter and step % cfg.reset_every == 0


@contextmanager
def _scoped_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global generator of `device` seeded, restoring its previous state after."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index]), torch.cuda.device(index):
            torch.default_generator.manual_seed(seed)
            torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


# --------------------------------------------------------------------------- checks


def check_views(views: TrainViews, device: torch.device) -> int:
    """Raise EconsgError naming the first inconsistent field of views; returns V."""
    images = views.images
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        raise EconsgError(f"views.images: got {_shape(images)}, expected [V, H, W, 3] with V >= 1")
    v, h, w = images.shape[:3]
    if (h, w) != (views.height, views.width):
        raise EconsgError(f"views.images: got {h}x{w} (HxW) images, expected {views.height}x{views.width} "
                          "from views.height/width")  # fmt: skip
    if not isinstance(views.viewmats, Tensor) or tuple(views.viewmats.shape) != (v, 4, 4):
        raise EconsgError(f"views.viewmats: got {_shape(views.viewmats)}, expected [{v}, 4, 4]")
    if not isinstance(views.Ks, Tensor) or tuple(views.Ks.shape) != (v, 3, 3):
        raise EconsgError(f"views.Ks: got {_shape(views.Ks)}, expected [{v}, 3, 3]")
    if images.dtype not in (torch.uint8, torch.float32):
        raise EconsgError(f"views.images: dtype {images.dtype}, expected torch.uint8 or torch.float32 in [0, 1]")
    for name, value in (("viewmats", views.viewmats), ("Ks", views.Ks)):
        if value.dtype != torch.float32:
            raise EconsgError(f"views.{name}: dtype {value.dtype}, expected torch.float32")
        if value.device != device:
            raise EconsgError(f"views.{name}: on {value.device}, expected the Gaussians' device {device}")
    stored = {"images": images} | {f"extras[{key!r}]": value for key, value in views.extras.items()}
    for name, value in stored.items():
        if not isinstance(value, Tensor) or value.ndim < 1 or value.shape[0] != v:
            raise EconsgError(f"views.{name}: got {_shape(value)}, expected a tensor indexed by view [{v}, ...]")
        if value.device not in (device, torch.device("cpu")):
            raise EconsgError(f"views.{name}: on {value.device}, expected the Gaussians' device {device} or the CPU")
    if images.dtype == torch.float32 and not bool(((images >= 0) & (images <= 1)).all()):
        raise EconsgError(f"views.images: float32 values in [{float(images.min()):g}, {float(images.max()):g}], expected "
                          "[0, 1] (uint8 images take 0..255)")
    return v


def _shape(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


# --------------------------------------------------------------------------- checkpoints


NOT_TRAINING = frozenset({"temperature", "checkpoint_every"})  # SplatParams fields training does not read


def training_fingerprint(params: Mapping[str, Tensor], views: TrainViews, cfg: SplatParams, generator: torch.Generator,
                         run_key: str = "") -> str:
    """sha256 over the config (short of NOT_TRAINING), the initial Gaussians, the views, the generator's state before
    training draws from it (the seed) and `run_key` (whatever else decides the result: the code's version, the device,
    the loss's own inputs): checkpoints resume only a run with all of them equal."""
    config = json.dumps(cfg.model_dump(mode="json", exclude=set(NOT_TRAINING)), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{config};{run_key};".encode())
    tensors = {"generator": generator.get_state()} | {f"param.{k}": v for k, v in sorted(params.items())}
    tensors.update({"images": views.images, "viewmats": views.viewmats, "Ks": views.Ks})
    tensors.update({f"extra.{k}": v for k, v in sorted(views.extras.items())})
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def checkpoint_path(checkpoint_dir: Path, fingerprint: str, step: int) -> Path:
    """<dir>/splat-<fingerprint[:16]>-<step:08d>.pt"""
    return Path(checkpoint_dir) / f"splat-{fingerprint[:16]}-{step:08d}.pt"


def list_checkpoints(checkpoint_dir: Path, fingerprint: str) -> list[tuple[int, Path]]:
    """(step, path) of this run's checkpoints, oldest first."""
    found = []
    if Path(checkpoint_dir).is_dir():
        for path in Path(checkpoint_dir).iterdir():
            match = _CHECKPOINT_NAME.match(path.name)
            if match and match.group(1) == fingerprint[:16]:
                found.append((int(match.group(2)), path))
    return sorted(found)


def remove_other_runs(checkpoint_dir: Path, fingerprint: str, keep: int = OTHER_RUNS_KEPT) -> list[Path]:
    """Delete the checkpoints of every other run (fingerprint) but the `keep` most recently written; returns them.

    Every change of code or config starts a new fingerprint, and nothing else would remove the old ones' files (GBs
    each on a GPU-sized scene); the `keep` most recent stay, so that a run of another setting stopped midway resumes.
    """
    runs: dict[str, dict[Path, float]] = {}
    for path in Path(checkpoint_dir).iterdir() if Path(checkpoint_dir).is_dir() else ():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and match.group(1) != fingerprint[:16]:
            try:
                runs.setdefault(match.group(1), {})[path] = path.stat().st_mtime
            except OSError:  # removed meanwhile by a run of its own (best effort: never fail a finished run)
                continue
    by_age = sorted(runs.values(), key=lambda files: max(files.values()), reverse=True)
    removed = []
    for files in by_age[keep:]:
        for path in files:
            try:
                path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:  # in use or not ours to remove: left for the next run
                pass
    return removed


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """torch.save to a temporary sibling `.<name>.tmp-<pid>`, then rename: a killed run never leaves a half-written
    checkpoint (and what a SIGKILL leaves, `remove_killed_saves` removes)."""
    return write_file_atomic(path, lambda tmp: torch.save(payload, tmp))


def remove_killed_saves(checkpoint_dir: Path) -> list[Path]:
    """Delete the temporary checkpoints of runs killed while saving (SIGKILL gives no chance to clean up; each is as
    large as a checkpoint), leaving those of runs still alive; returns them."""
    removed = []
    for path in sorted(Path(checkpoint_dir).glob(".splat-*.pt.tmp-*")) if Path(checkpoint_dir).is_dir() else ():
        if left_by_dead_process(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    """Read and validate a checkpoint written by this module's schema version for this fingerprint."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise EconsgError(f"{path}: unreadable splat checkpoint ({error}); delete it to start afresh") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise EconsgError(f"{path}: not an econsg splat checkpoint; delete it to start afresh")
    version = payload.get("schema_version")
    if version != CHECKPOINT_SCHEMA_VERSION:
        raise EconsgError(
            f"{path}: checkpoint schema version {version}, expected {CHECKPOINT_SCHEMA_VERSION} (written by another "
            "econsg version); delete it to start afresh"
        )
    if payload.get("fingerprint") != fingerprint:
        raise EconsgError(f"{path}: checkpoint of another configuration or input (fingerprint differs)")
    return payload


# --------------------------------------------------------------------------- the training loop


@dataclass
class _RunState:
    """Everything a checkpoint must restore for a resumed run to equal an uninterrupted one."""

    step: int = 0
    order: Tensor | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def train_gaussians(
    views: TrainViews,
    params: torch.nn.ParameterDict,
    cfg: SplatParams,
    *,
    generator: torch.Generator,
    extra_loss: ExtraLoss | None = None,
    checkpoint_dir: Path | None = None,
    run_key: str = "",
    progress: bool = True,
) -> TrainResult:
    """Optimise `params` (in place; also returned) for cfg.iterations steps on `views`.

    Loss per step = (1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM) of one rendered view, plus
    extra_loss(out, view_index, params) -> (loss, {name: float}) when given (out: RenderOutput with
    out.features rendered from params["features"] when present). Densification and pruning use gsplat's
    DefaultStrategy with cfg's thresholds. With `checkpoint_dir`, a checkpoint is written every
    cfg.checkpoint_every steps and at the end, and a run with the same config, initial Gaussians, views and
    `run_key` resumes from its latest one (restoring the generator's state too). `run_key` names what else decides
    the result and the fingerprint cannot see: the code's version, the device, extra_loss's own inputs. A finished
    run removes the checkpoints of other runs but the OTHER_RUNS_KEPT most recent. NaN/Inf in the loss or
    parameters raises EconsgError naming the step; checkpoints already written are kept.
    """
    _check_config(cfg, params)
    device = params["means"].device
    n_views = check_views(views, device)
    fingerprint = training_fingerprint(params, views, cfg, generator, run_key) if checkpoint_dir is not None else ""
    scene_scale = scene_scale_of(views.viewmats, params["means"])
    run = _RunState()
    strategy = make_strategy(cfg)
    state = strategy.initialize_state(scene_scale=scene_scale)
    optimizers = make_optimizers(params, cfg, scene_scale)
    last_saved: Path | None = None

    if checkpoint_dir is not None:
        remove_killed_saves(checkpoint_dir)
        saved = list_checkpoints(checkpoint_dir, fingerprint)
        if saved:
            last_saved = saved[-1][1]
            payload = load_checkpoint(last_saved, fingerprint)
            optimizers = _restore(payload, params, state, generator, run, cfg, scene_scale, device)
    resumed_step = run.step
    seen_any = resumed_step > 0  # whether a training camera has seen a Gaussian (checked over the first epoch)
    strategy.check_sanity(params, optimizers)

    def checkpoint() -> Path:
        payload = _checkpoint_payload(fingerprint, run, params, optimizers, state, generator)
        path = save_checkpoint(checkpoint_path(checkpoint_dir, fingerprint, run.step), payload)
        for _, old in list_checkpoints(checkpoint_dir, fingerprint)[:-CHECKPOINTS_KEPT]:
            old.unlink(missing_ok=True)
        return path

    bar = _progress_bar(progress)
    with bar as live:
        task = live.add_task("splat", total=cfg.iterations, completed=run.step, loss=float("nan"), psnr=float("nan"),
                             gaussians=len(params["means"])) if live is not None else None  # fmt: skip
        while run.step < cfg.iterations:
            step = run.step
            started = time.perf_counter()
            if step % n_views == 0 or run.order is None:
                run.order = torch.randperm(n_views, generator=generator)
            view = int(run.order[step % n_views])
            optimizers["means"].param_groups[0]["lr"] = means_lr_at(step, cfg, scene_scale)
            if "features" in optimizers:
                optimizers["features"].param_groups[0]["lr"] = feature_lr_at(step, cfg)

            out = render_gaussians(params, views.viewmats[view : view + 1], views.Ks[view : view + 1], views.width,
                                   views.height, active_sh_degree(step, cfg), cfg.backend,
                                   feature_geometry_grad=cfg.feature_geometry_grad, near_plane=cfg.near_plane)  # fmt: skip
            strategy.step_pre_backward(params, optimizers, state, step, out.meta)
            gt = views.image(view)
            loss = color_loss(out.colors, gt, cfg.ssim_lambda)
            logged: dict[str, float] = {}
            if extra_loss is not None:
                extra, logged = extra_loss(out, view, params)
                loss = loss + extra
            if not torch.isfinite(loss):
                raise _diverged(step, f"the loss is {float(loss.detach())}", last_saved)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            if out.meta["means2d"].grad is None:  # nothing visible: no image-plane gradient to accumulate
                out.meta["means2d"].grad = torch.zeros_like(out.meta["means2d"])
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with _scoped_global_rng(seed, device) if step < cfg.refine_stop_iter else nullcontext():
                strategy.step_post_backward(params, optimizers, state, step, out.meta, packed=False)
            if is_opacity_reset_step(step, cfg):
                reset_opa(params=params, optimizers=optimizers, state=state, value=cfg.prune_opa * 2.0)
            _check_gaussians_after(step, params, cfg, scene_scale, last_saved)
            if not seen_any and step < n_views:  # the first epoch only: on CUDA the check waits for the kernels
                seen_any = bool((out.meta["radii"] > 0).any())
            if step == n_views - 1 and not seen_any:
                raise _unseen(n_views, cfg)

            run.step = step + 1
            run.seconds += time.perf_counter() - started
            _accumulate(run.window, {"loss": float(loss.detach()), "psnr": float(psnr(out.colors.detach().clamp(0, 1), gt)),
                                     **logged})  # fmt: skip
            if run.step % cfg.log_every == 0 or run.step == cfg.iterations:
                row = _close_window(run.window, step=run.step, num_gaussians=len(params["means"]), seconds=run.seconds)
                run.curve.append(row)
                if live is not None:
                    live.update(task, loss=row["loss"], psnr=row["psnr"], gaussians=row["num_gaussians"])
            if live is not None:
                live.update(task, completed=run.step)
            if checkpoint_dir is not None and (
                (cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0) or run.step == cfg.iterations
            ):
                last_saved = checkpoint()
    if checkpoint_dir is not None:
        remove_other_runs(checkpoint_dir, fingerprint)
    return TrainResult(params=params, curve=run.curve, train_seconds=run.seconds, resumed_step=resumed_step)


def _check_config(cfg: SplatParams, params: torch.nn.ParameterDict) -> None:
    """Refuse, before any work, a config that is not SplatParams, an unresolved near plane, Gaussians that
    `check_gaussians` refuses, or an SH degree the Gaussians do not store."""
    if not isinstance(cfg, SplatParams):
        raise EconsgError(f"cfg: got {type(cfg).__name__}, expected econsg.config.splat.SplatParams")
    if cfg.near_plane == "auto":
        raise EconsgError("cfg.near_plane: got 'auto', expected a length: resolve it against the scene's median depth "
                          "first (`econsg.scene.scale.resolve_scene_length`, as the splat stage does)")
    check_gaussians(params)
    stored = sh_degree_of(params)
    if cfg.sh_degree > stored:
        raise EconsgError(f"cfg.sh_degree: got {cfg.sh_degree}, but params store SH coefficients only up to degree "
                          f"{stored} (shN {tuple(params['shN'].shape)}); initialise with sh_degree={cfg.sh_degree}")  # fmt: skip


def _checkpoint_payload(fingerprint: str, run: _RunState, params, optimizers, state, generator) -> dict:
    """Everything `_restore` needs for a resumed run to equal an uninterrupted one, on the CPU."""
    return {
        "kind": CHECKPOINT_KIND,
        "schema_version": CHECKPOINT_SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "step": run.step,
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
        "strategy_state": {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in state.items()},
        "generator_state": generator.get_state(),
        "order": run.order,
        "curve": run.curve,
        "window": run.window,
        "seconds": run.seconds,
    }


def _check_gaussians_after(step: int, params, cfg: SplatParams, scene_scale: float, last_saved: Path | None) -> None:
    """After a step's update and densification: no parameter holds NaN/Inf and some Gaussian is left."""
    bad = [name for name, p in params.items() if not torch.isfinite(p).all()]
    if bad:
        raise _diverged(step, f"parameters {', '.join(bad)} hold NaN/Inf", last_saved)
    if len(params["means"]) == 0:
        raise EconsgError(f"splat: every Gaussian was pruned at step {step} (scene scale {scene_scale:.4g} scene "
                          f"units; splat.prune_opa {cfg.prune_opa}, splat.prune_scale3d {cfg.prune_scale3d})")


def _unseen(n_views: int, cfg: SplatParams) -> EconsgError:
    return EconsgError(
        f"splat: no Gaussian was in view of any of the {n_views} training cameras in the first epoch: the "
        f"points and the cameras do not meet (another unit or frame, or every point within the near plane, "
        f"splat.near_plane {cfg.near_plane:g} scene units: `auto` follows the scene's scale); check the "
        f"poses and the point cloud (`econsg audit`)"
    )


def _restore(payload, params, state, generator, run: _RunState, cfg, scene_scale, device) -> dict[str, torch.optim.Adam]:
    """Load a checkpoint's Gaussians, optimizer and strategy state, generator and loop state; returns the optimizers."""
    for name, value in payload["params"].items():
        params[name] = torch.nn.Parameter(value.to(device))
    optimizers = make_optimizers(params, cfg, scene_scale)
    for name, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][name])
    for key, value in payload["strategy_state"].items():
        state[key] = value.to(device) if isinstance(value, Tensor) else value
    generator.set_state(payload["generator_state"])
    run.step = int(payload["step"])
    run.order = payload["order"]
    run.curve = list(payload["curve"])
    run.window = dict(payload["window"])
    run.seconds = float(payload["seconds"])
    return optimizers


def _diverged(step: int, what: str, last_saved: Path | None) -> EconsgError:
    kept = f"the last good checkpoint {last_saved} is kept" if last_saved else "no checkpoint had been written yet"
    return EconsgError(f"splat training diverged at step {step}: {what}; {kept}. Lower the learning rates or the loss "
                       "weights (splat.*_lr, splat.lambda_sem) and rerun")  # fmt: skip


def _accumulate(window: dict[str, float], values: Mapping[str, float]) -> None:
    window["_count"] = window.get("_count", 0.0) + 1.0
    for key, value in values.items():
        window[key] = window.get(key, 0.0) + float(value)


def _close_window(window: dict[str, float], **fixed: float) -> dict[str, float]:
    count = window.pop("_count", 1.0)
    row = {key: float(value) for key, value in fixed.items()}
    row.update({key: value / count for key, value in window.items()})
    window.clear()
    return row


def _progress_bar(enabled: bool):
    """A rich bar with loss, PSNR and #Gaussians columns, or a no-op context yielding None."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import TextColumn

    from econsg.progress import make_progress

    return make_progress(
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("PSNR {task.fields[psnr]:.2f} dB"),
        TextColumn("{task.fields[gaussians]} Gaussians"),
    )
