"""The real extract backend: open_clip image/text towers and segment-anything automatic masks.

Dense features (MaskCLIP, Zhou et al. 2022), one forward pass per batch of views:
  the image is resized so its short side is `clip_input_size` (long side rounded to whole patches), the
  ViT's positional embeddings are interpolated (bicubic) to that patch grid, and every block but the last
  runs unchanged. In the last block the query-key attention is skipped: each token keeps only its own
  value path, y = x + out_proj(v_proj(ln_1(x))), then the block's MLP residual y = y + mlp(ln_2(y)) (with
  the block's layer-scales when it has them). This is exactly MaskCLIP's ViT variant (their backbone adds
  the residual `v += x` and runs the FFN with identity `v`), chosen because the projection head (ln_post,
  proj) was trained on tokens that carry the residual stream. ln_post and the visual projection are then
  applied to every patch token, giving an [h, w, D] grid, L2-normalised.

Mask crops (LangSplat-style, `feature_mode="mask_crops"`):
  every SAM mask's bounding box is cut out of the image with the pixels outside the mask set to black,
  zero-padded to a square, resized to the tower's native input size and encoded with `encode_image`.
  Each crop's feature is painted over its mask's own pixels (METHOD.md section 1): the view keeps the mask
  table and an id map (the smallest mask covering each pixel, `PaintedMasks`) beside the dense grid, which
  gives the pixels no mask covers their feature.

SAM masks: `SamAutomaticMaskGenerator` with this module's own small-region clean-up (segment-anything's
needs OpenCV): islands and holes smaller than `min_mask_region_area` pixels are removed from each mask
and masks left smaller than that are dropped (no second NMS pass, unlike segment-anything's).

Weights are read only from local files; when one is missing the error says what to download, from
where, and which params key to set. Models can also be passed in already built (tests use tiny random
ones of the same architecture).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from econsg.config.openclip_sam import OpenClipSamParams
from econsg.device import resolve_device
from econsg.errors import EconsgError, first_line
from econsg.features.base import (
    PaintedMasks,
    ViewFeatures,
    normalize_rows,
    pixel_labels,
    smallest_covering_mask,
)
from econsg.features.text import PROMPT_TEMPLATES, encode_vocabulary

PARAMS_KEY = "extract.openclip_sam"

SAM_CHECKPOINT_FILES = MappingProxyType(
    {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}
)
SAM_DOWNLOAD_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

# CLIP's (OpenAI) pixel statistics; open_clip uses them for every ViT-B-16 tag as well.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# open_clip's weight file names inside a Hugging Face hub repository, preferred first.
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TEXT_BATCH = 256
STAND_IN_SEED = 0  # the tiny random CLIP and SAM of `stand_in` runs


# ----------------------------------------------------------------------------------------------------
# Devices and checkpoints


def sam_checkpoint_path(params: OpenClipSamParams) -> Path:
    """The SAM weights file the params point at: `sam_checkpoint`, else checkpoints/<official file name>."""
    if params.sam_checkpoint is not None:
        return Path(params.sam_checkpoint)
    return Path("checkpoints") / SAM_CHECKPOINT_FILES[params.sam_model_type]


def check_sam_checkpoint(params: OpenClipSamParams) -> Path:
    """The SAM checkpoint path; EconsgError naming the file, its download URL and the params key when absent (and
    never with the `stand_in` models, which read no file)."""
    path = sam_checkpoint_path(params)
    if not path.is_file() and not params.stand_in:
        name = SAM_CHECKPOINT_FILES[params.sam_model_type]
        raise EconsgError(
            f"{PARAMS_KEY}.sam_checkpoint: SAM weights file {str(path)!r} not found "
            f"(sam_model_type={params.sam_model_type!r}). Download {SAM_DOWNLOAD_BASE}{name} "
            f"and save it as {str(path)!r}, or set {PARAMS_KEY}.sam_checkpoint to where the file is."
        )
    return path


def missing_sam_checkpoint(params: OpenClipSamParams) -> str | None:
    """check_sam_checkpoint's message when the SAM weights file is missing, else None."""
    try:
        check_sam_checkpoint(params)
    except EconsgError as error:
        return str(error)
    return None


def _clip_cache_candidates(model_name: str, pretrained: str, cache_dir: str | None) -> list[Path]:
    """Local files where open_clip would have stored the tag's weights (nothing is downloaded)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    candidates: list[Path] = []
    if cfg.get("file"):
        candidates.append(Path(cfg["file"]))
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)  # "org/repo/" -> default file names; "org/repo/file" -> that file
        names = [filename] if filename else list(_HF_WEIGHT_FILES)
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo_id=repo_id, filename=name, cache_dir=cache_dir)
            if isinstance(found, str):
                candidates.append(Path(found))
    if cfg.get("url"):
        root = Path(cache_dir) if cache_dir else Path(os.path.expanduser("~/.cache/clip"))
        candidates.append(root / os.path.basename(cfg["url"]))
    return candidates


def resolve_clip_checkpoint(
    model_name: str, pretrained: str, clip_checkpoint: str | None = None, cache_dir: str | None = None
) -> Path:
    """A local CLIP weights file: `clip_checkpoint` if given, else the tag's file in open_clip's caches.

    Never touches the network. Raises EconsgError naming the model/tag, where to download the weights
    and which params key to set when no file is found.
    """
    import open_clip

    if model_name not in open_clip.list_models():
        raise EconsgError(
            f"{PARAMS_KEY}.model_name: got {model_name!r}, expected an open_clip architecture such as 'ViT-B-16'"
        )
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if clip_checkpoint is not None:
        path = Path(clip_checkpoint)
        if not path.is_file():
            where = _clip_sources(cfg, cache_dir)
            raise EconsgError(
                f"{PARAMS_KEY}.clip_checkpoint: CLIP weights file {str(path)!r} not found; expected an open_clip "
                f"state dict for {model_name!r} (e.g. open_clip_model.safetensors of the tag {pretrained!r})"
                + (f": download {' or '.join(where)}" if where else "")
            )
        return path
    if not cfg:
        raise EconsgError(
            f"{PARAMS_KEY}.pretrained: {pretrained!r} is not an open_clip tag of {model_name!r}; expected one of "
            f"{open_clip.list_pretrained_tags_by_model(model_name)}, or set {PARAMS_KEY}.clip_checkpoint to a local file"
        )
    for candidate in _clip_cache_candidates(model_name, pretrained, cache_dir):
        if candidate.is_file():
            return candidate
    raise EconsgError(
        f"{PARAMS_KEY}.clip_checkpoint: no local weights for open_clip model {model_name!r} with pretrained tag "
        f"{pretrained!r}. Download " + " or ".join(_clip_sources(cfg, cache_dir)) + f", or download the file anywhere "
        f"and set {PARAMS_KEY}.clip_checkpoint to its path (or {PARAMS_KEY}.clip_cache_dir to the cache it lies in)."
    )


def missing_weights(params: OpenClipSamParams) -> list[str]:
    """What a run of the backend would still need: the error of each weights file not found here (CLIP's, then
    SAM's); empty when both are in place. The stand-in models need none."""
    if params.stand_in:
        return []
    missing = []
    try:
        resolve_clip_checkpoint(params.model_name, params.pretrained, params.clip_checkpoint, params.clip_cache_dir)
    except EconsgError as error:
        missing.append(str(error))
    if (sam := missing_sam_checkpoint(params)) is not None:
        missing.append(sam)
    return missing


def _clip_sources(cfg: dict, cache_dir: str | None) -> list[str]:
    """Where an open_clip tag's weights come from (its pretrained cfg): the Hugging Face file, the URL, or both."""
    sources = []
    if cfg.get("hf_hub"):
        from huggingface_hub import constants

        repo_id, filename = os.path.split(cfg["hf_hub"])
        sources.append(
            f"{filename or _HF_WEIGHT_FILES[0]} of https://huggingface.co/{repo_id} into the Hugging Face cache "
            f"{cache_dir or constants.HF_HUB_CACHE} (e.g. `hf download {repo_id} {filename or _HF_WEIGHT_FILES[0]}"
            + (f" --cache-dir {cache_dir}" if cache_dir else "") + "`)"
        )
    if cfg.get("url"):
        sources.append(f"{cfg['url']} into {cache_dir or os.path.expanduser('~/.cache/clip')}")
    return sources


def load_clip(params: OpenClipSamParams, device: torch.device) -> tuple[nn.Module, object]:
    """open_clip model (eval mode, on `device`) and its tokenizer, from local weights only (a tiny random stand-in
    when `stand_in`)."""
    import open_clip

    if params.stand_in:
        model, tokenizer = tiny_clip_model(seed=STAND_IN_SEED)
        return model.to(device), tokenizer

    path = resolve_clip_checkpoint(params.model_name, params.pretrained, params.clip_checkpoint, params.clip_cache_dir)
    quick_gelu = bool(open_clip.get_pretrained_cfg(params.model_name, params.pretrained).get("quick_gelu", False))
    try:
        if is_torchscript_archive(path):  # OpenAI's own file, which open_clip's state-dict reader refuses
            model = open_clip.create_model(params.model_name, device=device, force_quick_gelu=quick_gelu)
            model.load_state_dict(openai_state_dict(path))
        else:
            model = open_clip.create_model(
                params.model_name, pretrained=str(path), device=device, force_quick_gelu=quick_gelu
            )
    except Exception as error:  # torch/open_clip raise many types for a bad file; report them all as one
        raise EconsgError(
            f"{PARAMS_KEY}.clip_checkpoint: could not load {str(path)!r} into open_clip {params.model_name!r} "
            f"({first_line(error)})"
        ) from error
    return model.eval(), open_clip.get_tokenizer(params.model_name)


# OpenAI's CLIP archives keep these beside the weights; open_clip's CLIP has no such entries
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (OpenAI's CLIP files, as `pretrained: openai` caches them in
    ~/.cache/clip) rather than a state dict."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of an OpenAI CLIP TorchScript archive, under open_clip's names (which are OpenAI's)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI's files are TorchScript
        archive = torch.jit.load(str(path), map_location="cpu")
    return {key: value for key, value in archive.state_dict().items() if key not in OPENAI_METADATA_KEYS}


def load_openclip_text_encoder(params: OpenClipSamParams, device: str | torch.device | None = None) -> "OpenClipTextEncoder":
    """CLIP's text tower alone (stages that only embed text: no SAM checkpoint needed)."""
    resolved = torch.device(resolve_device(str(device if device is not None else params.device)))
    model, tokenizer = load_clip(params, resolved)
    return OpenClipTextEncoder(model, tokenizer, resolved)


def load_sam(params: OpenClipSamParams, device: torch.device) -> nn.Module:
    """segment-anything model of `sam_model_type` with the local checkpoint's weights (eval, on `device`); a tiny
    random stand-in when `stand_in`."""
    from segment_anything import sam_model_registry

    if params.stand_in:
        return tiny_sam_model(seed=STAND_IN_SEED).to(device)
    path = check_sam_checkpoint(params)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises assorted types
        raise EconsgError(f"{PARAMS_KEY}.sam_checkpoint: {str(path)!r} is not a readable PyTorch weights file "
                          f"({first_line(error)})") from None
    held = sam_model_type_of(state)
    if held is not None and held != params.sam_model_type:
        raise EconsgError(f"{PARAMS_KEY}.sam_checkpoint: {str(path)!r} holds SAM {held} weights, but "
                          f"{PARAMS_KEY}.sam_model_type is {params.sam_model_type}; set it to {held}")
    sam = sam_model_registry[params.sam_model_type](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except Exception as error:  # state-dict mismatches: their messages list every key, so only the first line
        raise EconsgError(f"{PARAMS_KEY}.sam_checkpoint: {str(path)!r} does not hold SAM {params.sam_model_type!r} "
                          f"weights ({first_line(error)})") from None
    return sam.to(device).eval()


SAM_ENCODER_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # image encoder's patch-embedding channels


def sam_model_type_of(state: dict) -> str | None:
    """The SAM model type a state dict holds, by its image encoder's width; None when it is not SAM's."""
    weight = state.get("image_encoder.patch_embed.proj.weight") if isinstance(state, dict) else None
    return SAM_ENCODER_WIDTHS.get(int(weight.shape[0])) if torch.is_tensor(weight) else None


def pixel_statistics(params: OpenClipSamParams, model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of CLIP's input normalisation: the tag's, the model's, else OpenAI's."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(params.model_name, params.pretrained)
    if "mean" in cfg and "std" in cfg:
        return tuple(cfg["mean"]), tuple(cfg["std"])
    model_cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    return tuple(model_cfg.get("mean", CLIP_MEAN)), tuple(model_cfg.get("std", CLIP_STD))


# ----------------------------------------------------------------------------------------------------
# Text


class OpenClipTextEncoder:
    """CLIP's text tower as a TextEncoder: prompts -> [P, dim] float32 unit embeddings."""

    def __init__(self, model: nn.Module, tokenizer, device: torch.device | str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dim = int(_visual_tower(model).output_dim)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, dim] float32 L2-normalised text embeddings (`encode_text`, in chunks of 256 prompts)."""
        if isinstance(prompts, str):
            raise EconsgError(f"prompts: got a single string {prompts!r}, expected a sequence of prompts")
        prompts = list(prompts)
        if not prompts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.no_grad(), _autocast(self.device):
            for start in range(0, len(prompts), _TEXT_BATCH):
                tokens = self.tokenizer(prompts[start : start + _TEXT_BATCH]).to(self.device)
                out.append(self.model.encode_text(tokens).float())
        return normalize_rows(torch.cat(out).cpu().numpy())


# ----------------------------------------------------------------------------------------------------
# Dense CLIP features (MaskCLIP value path)


def _autocast(device: torch.device):
    """fp16 autocast on CUDA, a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")


def _visual_tower(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "output_dim"):
        raise EconsgError(f"clip_model: {type(model).__name__} has no open_clip image tower (`visual`)")
    return visual


def check_vision_transformer(visual: nn.Module) -> None:
    """EconsgError unless `visual` is open_clip's VisionTransformer with a standard last block (value path readable)."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise EconsgError(
            f"clip_model.visual: got {type(visual).__name__}, expected open_clip's VisionTransformer "
            "(dense MaskCLIP features need a ViT image tower, e.g. model_name 'ViT-B-16')"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise EconsgError("clip_model.visual: attentional pooling towers (CoCa) are not supported; expected a CLIP ViT")
    block = visual.transformer.resblocks[-1]
    attn = getattr(block, "attn", None)
    if not isinstance(block, ResidualAttentionBlock) or not isinstance(attn, nn.MultiheadAttention):
        raise EconsgError(
            f"clip_model.visual: last block {type(block).__name__} is not a standard ResidualAttentionBlock with "
            "nn.MultiheadAttention; expected a plain CLIP ViT"
        )
    if attn.in_proj_weight is None:
        raise EconsgError("clip_model.visual: last attention block has separate q/k/v weights; expected in_proj_weight")


def clip_input_shape(height: int, width: int, short_side: int, patch: tuple[int, int]) -> tuple[int, int]:
    """(h_in, w_in): the resized image size, short side `short_side`, both rounded to whole patches (>= 1 patch)."""
    if height < 1 or width < 1:
        raise EconsgError(f"image: got size {height} x {width}, expected positive height and width")
    scale = short_side / min(height, width)
    ph, pw = patch
    h_in = max(1, round(height * scale / ph)) * ph
    w_in = max(1, round(width * scale / pw)) * pw
    return int(h_in), int(w_in)


def preprocess_views(
    images: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """[B, H, W, 3] float in [0, 1] -> [B, 3, h_in, w_in] CLIP input (bicubic, antialiased resize; normalised)."""
    x = images.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def interpolate_positional_embedding(
    positional: torch.Tensor, grid_from: tuple[int, int], grid_to: tuple[int, int]
) -> torch.Tensor:
    """[1 + g0*g1, C] -> [1 + h*w, C]: class slot kept, patch slots resampled bicubically (align_corners=False)."""
    if tuple(grid_from) == tuple(grid_to):
        return positional
    cls, patches = positional[:1], positional[1:]
    g0, g1 = grid_from
    if patches.shape[0] != g0 * g1:
        raise EconsgError(
            f"positional_embedding: {patches.shape[0]} patch slots do not match the {g0} x {g1} grid of the image tower"
        )
    grid = patches.float().reshape(1, g0, g1, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(grid_to), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(grid_to[0] * grid_to[1], -1).to(positional.dtype)
    return torch.cat([cls, patches], dim=0)


def vision_tokens_before_last_block(visual: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens [B, 1 + h*w, C] entering the last block, for CLIP input pixels [B, 3, h*p, w*p]; and (h, w)."""
    x = visual.conv1(pixels)  # [B, C, h, w]
    grid = (int(x.shape[2]), int(x.shape[3]))
    x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_positional_embedding(visual.positional_embedding, tuple(visual.grid_size), grid).to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    return x, grid


def value_path_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP's last block [B, L, C] -> [B, L, C]: y = x + ls_1(out_proj(v_proj(ln_1(x)))); y + ls_2(mlp(ln_2(y)))."""
    attn: nn.MultiheadAttention = block.attn
    width = x.shape[-1]
    w_v = attn.in_proj_weight[2 * width :]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    value = F.linear(block.ln_1(x), w_v, b_v)
    y = x + block.ls_1(attn.out_proj(value))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def dense_clip_features(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """MaskCLIP patch features [B, h, w, D] float32, L2-normalised, for CLIP input pixels [B, 3, h*p, w*p]."""
    check_vision_transformer(visual)
    ph, pw = visual.patch_size
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] % ph or pixels.shape[3] % pw:
        raise EconsgError(
            f"pixels: got shape {tuple(pixels.shape)}, expected [B, 3, H, W] with H, W multiples of the patch {ph}x{pw}"
        )
    x, (h, w) = vision_tokens_before_last_block(visual, pixels)
    x = value_path_block(visual.transformer.resblocks[-1], x)
    tokens = visual.ln_post(x[:, 1:])
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    tokens = F.normalize(tokens.float(), dim=-1)
    return tokens.reshape(tokens.shape[0], h, w, -1)


# ----------------------------------------------------------------------------------------------------
# SAM masks


def remove_small_mask_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """[H, W] bool -> [H, W] bool without 8-connected holes, then islands, smaller than `min_area` pixels, as
    segment-anything's post-processing: the islands are those of the hole-filled mask, and where every island is
    small the largest stays."""
    from scipy import ndimage

    if min_area <= 0:
        return mask
    structure = np.ones((3, 3), bool)
    out = mask.copy()
    for fill_value in (True, False):  # holes first, then islands of the filled mask
        labels, count = ndimage.label(~out if fill_value else out, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        small = np.flatnonzero(sizes < min_area) + 1
        if not fill_value and len(small) == count:
            small = small[small != int(np.argmax(sizes)) + 1]  # every island small: the largest stays
        if small.size:
            out[np.isin(labels, small)] = fill_value
    return out


def masks_from_records(
    records: Sequence[dict], height: int, width: int, min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """segment-anything records -> masks [M, H, W] bool (by area, descending) and scores [M, 3] float32.

    Scores: predicted_iou, stability_score, area in pixels (after the small-region clean-up).
    """
    masks, scores = [], []
    for record in records:
        mask = remove_small_mask_regions(np.asarray(record["segmentation"], dtype=bool), min_area)
        area = int(mask.sum())
        if area == 0 or area < min_area:
            continue
        masks.append(mask)
        scores.append((float(record["predicted_iou"]), float(record["stability_score"]), float(area)))
    if not masks:
        return np.zeros((0, height, width), bool), np.zeros((0, 3), np.float32)
    scores_arr = np.asarray(scores, np.float32)
    order = np.argsort(-scores_arr[:, 2], kind="stable")
    return np.stack(masks)[order], scores_arr[order]


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] -> uint8 (rounded), SAM's input format."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Mask crops (LangSplat-style)


def mask_crop_inputs(
    image: torch.Tensor, masks: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """CLIP inputs [M, 3, size, size]: each mask's bbox crop of image [H, W, 3], background black, padded square."""
    out = torch.empty((masks.shape[0], 3, size, size), dtype=torch.float32, device=image.device)
    mean_t = torch.tensor(mean, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, device=image.device).view(3, 1, 1)
    for m in range(masks.shape[0]):
        rows = torch.nonzero(masks[m].any(dim=1)).flatten()
        cols = torch.nonzero(masks[m].any(dim=0)).flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = image[y0:y1, x0:x1].float() * masks[m, y0:y1, x0:x1, None]  # [h, w, 3], black outside the mask
        side = max(y1 - y0, x1 - x0)
        square = torch.zeros((side, side, 3), dtype=torch.float32, device=image.device)
        top, left = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
        square[top : top + y1 - y0, left : left + x1 - x0] = crop
        x = square.permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        out[m] = (x[0] - mean_t) / std_t
    return out


# ----------------------------------------------------------------------------------------------------
# The backend


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise EconsgError(f"images[{index}]: got shape {image.shape}, expected [H, W, 3]")
    if not np.issubdtype(image.dtype, np.floating):
        raise EconsgError(f"images[{index}]: got dtype {image.dtype}, expected float32 in [0, 1]")
    if not np.all(np.isfinite(image)) or image.min() < -1e-3 or image.max() > 1 + 1e-3:
        raise EconsgError(
            f"images[{index}]: values span [{float(np.nanmin(image)):.3g}, {float(np.nanmax(image)):.3g}], expected [0, 1]"
        )
    return image.astype(np.float32, copy=False)


class OpenClipSamExtractor:
    """open_clip + SAM extract backend: per view, patch-grid features, labels, confidence, SAM masks.

    params: the backend's settings. clip_model / tokenizer / sam: already built models (tests, callers that
    cache them); when absent they are loaded from local weights (SAM lazily, on the first view, but its
    checkpoint is checked here). device: overrides `params.device` ('auto', 'cpu', 'cuda[:N]').
    """

    def __init__(
        self,
        params: OpenClipSamParams,
        clip_model: nn.Module | None = None,
        tokenizer=None,
        sam: nn.Module | None = None,
        device: str | torch.device | None = None,
    ):
        self.params = params
        self.device = torch.device(resolve_device(str(device if device is not None else params.device)))
        if clip_model is None:
            try:
                clip_model, loaded_tokenizer = load_clip(params, self.device)
            except EconsgError as error:  # name a missing SAM file too: one download should not only reveal the next
                sam_missing = missing_sam_checkpoint(params) if sam is None else None
                raise EconsgError(f"{error}\n{sam_missing}" if sam_missing else str(error)) from error
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
        elif tokenizer is None:
            import open_clip

            tokenizer = open_clip.get_tokenizer(params.model_name)
        self.clip_model = clip_model.to(self.device).eval()
        self.visual = _visual_tower(self.clip_model)
        check_vision_transformer(self.visual)
        patch = tuple(self.visual.patch_size)
        if params.clip_input_size < max(patch):
            raise EconsgError(
                f"{PARAMS_KEY}.clip_input_size: got {params.clip_input_size}, expected at least the patch size {max(patch)}"
            )
        self.mean, self.std = pixel_statistics(params, self.clip_model)
        self.text_encoder = OpenClipTextEncoder(self.clip_model, tokenizer, self.device)
        if sam is None:
            check_sam_checkpoint(params)
        self._sam = sam.to(self.device).eval() if sam is not None else None
        self._mask_generator = None

    @property
    def dim(self) -> int:
        """Feature width D."""
        return self.text_encoder.dim

    def text_embeddings(self, vocabulary: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES) -> np.ndarray:
        """[C, D] float32 class embeddings, averaged over the prompt templates and renormalised."""
        return encode_vocabulary(self.text_encoder, vocabulary, templates)

    def mask_generator(self):
        """segment-anything's automatic mask generator over this backend's SAM (built on first use)."""
        if self._mask_generator is None:
            from segment_anything import SamAutomaticMaskGenerator

            if self._sam is None:
                self._sam = load_sam(self.params, self.device)
            p = self.params
            self._mask_generator = SamAutomaticMaskGenerator(
                self._sam,
                points_per_side=p.points_per_side,
                points_per_batch=p.points_per_batch,
                pred_iou_thresh=p.pred_iou_thresh,
                stability_score_thresh=p.stability_score_thresh,
                box_nms_thresh=p.box_nms_thresh,
                min_mask_region_area=0,  # done here without OpenCV (remove_small_mask_regions)
                output_mode="binary_mask",
            )
        return self._mask_generator

    def view_masks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM automatic masks of one [H, W, 3] image: masks [M, H, W] bool (area descending), scores [M, 3]."""
        image = _check_image(image, 0)
        records = self.mask_generator().generate(image_to_uint8(image))
        return masks_from_records(records, image.shape[0], image.shape[1], self.params.min_mask_region_area)

    def dense_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """MaskCLIP features [B, h, w, D] float32 (unit rows) of same-sized images [H, W, 3], one forward pass."""
        if not images:
            raise EconsgError("images: empty batch; expected at least one [H, W, 3] image")
        shapes = {np.asarray(im).shape for im in images}
        if len(shapes) != 1:
            raise EconsgError(f"images: a batch mixes sizes {sorted(shapes)}; expected one size per batch")
        batch = torch.from_numpy(np.stack([_check_image(im, i) for i, im in enumerate(images)])).to(self.device)
        size = clip_input_shape(batch.shape[1], batch.shape[2], self.params.clip_input_size, tuple(self.visual.patch_size))
        with torch.no_grad(), _autocast(self.device):
            pixels = preprocess_views(batch, size, self.mean, self.std)
            features = dense_clip_features(self.visual, pixels)
        return features.cpu().numpy()

    def mask_crop_features(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """[M, D] float32 unit CLIP embeddings of each mask's crop (background blanked), `batch_size` crops a pass."""
        D = self.dim
        if len(masks) == 0:
            return np.zeros((0, D), np.float32)
        size = int(self.visual.image_size[0])
        image_t = torch.from_numpy(_check_image(image, 0)).to(self.device)
        out = []
        with torch.no_grad(), _autocast(self.device):
            for start in range(0, len(masks), self.params.batch_size):
                chunk = torch.from_numpy(np.asarray(masks[start : start + self.params.batch_size], bool)).to(self.device)
                pixels = mask_crop_inputs(image_t, chunk, size, self.mean, self.std)
                out.append(F.normalize(self.clip_model.encode_image(pixels).float(), dim=-1))
        return torch.cat(out).cpu().numpy()

    def view_features(
        self, image: np.ndarray, grid: np.ndarray, vocabulary_embeddings: np.ndarray, temperature: float,
        confidence: str = "softmax",
    ) -> ViewFeatures:
        """One view's ViewFeatures from its dense grid [h, w, D]: SAM masks, optional mask-crop painting, labels."""
        image = _check_image(image, 0)
        H, W = image.shape[:2]
        masks, scores = self.view_masks(image)
        painted = (PaintedMasks(smallest_covering_mask(masks), self.mask_crop_features(image, masks).astype(np.float16))
                   if self.params.feature_mode == "mask_crops" else None)
        features = grid.astype(np.float16)
        labels, k = pixel_labels(features, vocabulary_embeddings, H, W, temperature, painted, confidence)
        return ViewFeatures(features=features, labels=labels, confidence=k, masks=masks, mask_scores=scores,
                            painted=painted)

    def extract_views(
        self, images: Iterable[np.ndarray], vocabulary_embeddings: np.ndarray, temperature: float,
        confidence: str = "softmax",
    ) -> Iterator[ViewFeatures]:
        """ViewFeatures per image [H, W, 3] float32 in [0, 1], in order; CLIP runs on batches of `batch_size`
        consecutive same-sized views. vocabulary_embeddings: [C, D]; temperature: softmax T > 0; confidence:
        'softmax' or 'cosine' (`econsg.features.base.pixel_labels`).

        Labels and confidence come from the float16 features that are stored, so they can be recomputed.
        """
        text = np.asarray(vocabulary_embeddings, np.float32)
        if text.ndim != 2 or text.shape[0] < 1 or text.shape[1] != self.dim:
            raise EconsgError(
                f"vocabulary_embeddings: got shape {text.shape}, expected [C, {self.dim}] from this backend's text encoder"
            )
        if not math.isfinite(temperature) or temperature <= 0:
            raise EconsgError(f"temperature: got {temperature}, expected a positive number")
        pending: list[np.ndarray] = []
        for index, image in enumerate(images):
            image = _check_image(image, index)
            if pending and (image.shape != pending[0].shape or len(pending) == self.params.batch_size):
                yield from self._flush(pending, text, temperature, confidence)
                pending = []
            pending.append(image)
        if pending:
            yield from self._flush(pending, text, temperature, confidence)

    def _flush(self, images: list[np.ndarray], text: np.ndarray, temperature: float, confidence: str
               ) -> Iterator[ViewFeatures]:
        grids = self.dense_features(images)
        for image, grid in zip(images, grids):
            yield self.view_features(image, grid, text, temperature, confidence)


# ----------------------------------------------------------------------------------------------------
# Randomly initialised models of the real architectures (tests, benchmarks; no weights needed)


def _seeded(build, seed: int):
    """Run `build()` with torch's CPU generator seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def random_clip_model(model_name: str = "ViT-B-16", seed: int = 0) -> tuple[nn.Module, object]:
    """open_clip `model_name` with random weights (eval) and its tokenizer."""
    import open_clip

    model = _seeded(lambda: open_clip.create_model(model_name, pretrained=None), seed)
    return model.eval(), open_clip.get_tokenizer(model_name)


def tiny_clip_model(seed: int = 0, image_size: int = 64, patch_size: int = 16) -> tuple[nn.Module, object]:
    """A random open_clip CLIP with the ViT-B layout shrunk: vision width 64, 2 layers; text width 32; D = 32."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    def build():
        return CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=patch_size, image_size=image_size),
            text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
        )

    return _seeded(build, seed).eval(), open_clip.get_tokenizer("ViT-B-16", context_length=16)


def random_sam_model(model_type: str = "vit_h", seed: int = 0) -> nn.Module:
    """segment-anything `model_type` with random weights (eval)."""
    from segment_anything import sam_model_registry

    if model_type not in SAM_CHECKPOINT_FILES:
        raise EconsgError(f"model_type: got {model_type!r}, expected one of {sorted(SAM_CHECKPOINT_FILES)}")
    return _seeded(lambda: sam_model_registry[model_type](checkpoint=None), seed).eval()


def tiny_sam_model(seed: int = 0, image_size: int = 64) -> nn.Module:
    """A random SAM from segment-anything's own classes, shrunk: 1-block ViT encoder width 32, prompt dim 32."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, patch = 32, 16
    grid = image_size // patch

    def build():
        return Sam(
            image_encoder=ImageEncoderViT(
                img_size=image_size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2.0, out_chans=dim
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=8
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=dim,
                transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                num_multimask_outputs=3,
                iou_head_depth=2,
                iou_head_hidden_dim=16,
            ),
        )

    return _seeded(build, seed).eval()
