"""Pictures people audit: label maps in consistent colours with a legend, panels, contact sheets, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from econsg.metrics import segmentation_scores

IGNORE_COLOUR = (0, 0, 0)

# System fonts for text past ASCII, which Pillow's built-in font draws as boxes; Pillow finds them in the system's font
# folders (Linux, macOS, Windows). CJK text tries the CJK fonts first.
UNICODE_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf", "Arial Unicode.ttf", "arial.ttf")
CJK_FONTS = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-microhei.ttc", "wqy-zenhei.ttc", "msyh.ttc",
             "PingFang.ttc", "Hiragino Sans GB.ttc")  # fmt: skip
UNICODE_FONT_SIZE = 9  # DejaVu Sans at 9 px is as tall and as wide as the built-in font


def font_for(text: str) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font to draw `text` in: Pillow's built-in one for ASCII, so that pictures are the same on every machine;
    past ASCII (accents, Cyrillic, CJK), the first installed system font of CJK_FONTS/UNICODE_FONTS, and the built-in
    one (boxes) where none is installed."""
    if text.isascii():
        return _builtin_font()
    return _system_font(any(ord(ch) >= 0x2E80 for ch in text))


@cache
def _builtin_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


@cache
def _system_font(cjk: bool) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in (CJK_FONTS + UNICODE_FONTS) if cjk else UNICODE_FONTS:
        try:
            return ImageFont.truetype(name, UNICODE_FONT_SIZE)
        except OSError:
            continue
    return _builtin_font()


# Kelly's 20 colours of maximum contrast (white and black left out); beyond them, `_farther_colours`.
DISTINCT_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def class_palette(num_classes: int) -> np.ndarray:
    """[C,3] uint8 distinct colours; the same class id always gets the same colour (a class's colour does not depend
    on how many classes there are)."""
    colours = list(DISTINCT_COLOURS[:num_classes]) + _farther_colours(max(0, num_classes - len(DISTINCT_COLOURS)))
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def named_palette(names: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """[len(names),3] uint8 colours by name, the same in every picture of a run: a name of `reference` (the run's
    class list, in its order) takes that class's colour, any other name (a query text) the next colours in turn."""
    reference = list(reference)
    others = [name for name in dict.fromkeys(names) if name not in reference]
    index = {name: i for i, name in enumerate(reference + others)}
    palette = class_palette(len(index))
    return palette[[index[name] for name in names]].reshape(-1, 3)


@cache
def _farther_colours(count: int) -> list[tuple[int, int, int]]:
    """`count` colours after Kelly's, each the one of a 7-level RGB grid farthest in CIELAB from those taken (Kelly's,
    the black of IGNORE, the white background): a ScanNet scene's 40 classes stay apart where golden-ratio hues fell
    on Kelly's own colours."""
    levels = np.linspace(0, 255, 7)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_lab(grid)
    taken = _srgb_to_lab(np.array([*DISTINCT_COLOURS, IGNORE_COLOUR, (255, 255, 255)], np.float64))
    nearest = np.linalg.norm(lab[:, None] - taken[None], axis=-1).min(axis=1)
    chosen = []
    for _ in range(count):
        pick = int(np.argmax(nearest))
        chosen.append(tuple(int(v) for v in np.round(grid[pick])))
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=-1))
    return chosen


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] sRGB in 0..255 -> CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """[H,W] class ids (IGNORE = black) -> [H,W,3] uint8."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    out[valid] = palette[labels[valid]]
    out[~valid] = IGNORE_COLOUR
    return out


def colour_scalar(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """[H,W] scalars -> [H,W,3] uint8 on a dark-to-yellow ramp."""
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    ramp = np.stack([t ** 0.8, t ** 1.5, 0.3 * (1 - t)], axis=-1)
    return (ramp * 255).astype(np.uint8)


def colour_masks(masks: np.ndarray) -> np.ndarray:
    """[M,H,W] bool -> [H,W,3]: each mask a colour, smaller masks drawn on top, uncovered black."""
    out = np.zeros((*masks.shape[1:], 3), np.uint8)
    palette = class_palette(max(len(masks), 1))
    for m in np.argsort([-mask.sum() for mask in masks]):
        out[masks[m]] = palette[m]
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (to_uint8(image) * (1 - alpha) + colours * alpha).astype(np.uint8)


def panel(tiles: Sequence[tuple[str, np.ndarray]], scale: int = 2, columns: int | None = None) -> Image.Image:
    """Titled tiles side by side (wrapped after `columns`), each up-scaled `scale`x with nearest sampling, in cells
    as large as the largest tile; a title longer than its tile is shortened with '...'."""
    arrays = [to_uint8(t[..., 0] if t.ndim == 3 and t.shape[-1] == 1 else t) for _, t in tiles]
    images = [Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST) for a in arrays]
    w, h = max(i.width for i in images), max(i.height for i in images)
    columns = columns or len(images)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (w + 4), rows * (h + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ((title, _), image) in enumerate(zip(tiles, images)):
        x, y = (i % columns) * (w + 4), (i // columns) * (h + 16)
        font = font_for(title)
        draw.text((x + 2, y + 2), fit_text(draw, title, w - 2, font), fill=(0, 0, 0), font=font)
        sheet.paste(image, (x, y + 14))
    return sheet


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: float, font) -> str:
    """`text`, shortened with '...' until it is at most `width` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def key(entries: Sequence[tuple[str, tuple[int, int, int]]], title: str | None = None, width: int = 160) -> Image.Image:
    """A colour key: a swatch and a name per entry, under an optional title; at least `width` wide, wider when a
    name needs it (up to KEY_MAX_WIDTH, past which names are shortened)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    longest = max([measure.textlength(name, font=font_for(name)) + 24 for name, _ in entries]
                  + [measure.textlength(title or "", font=font_for(title or "")) + 8])
    width = int(min(max(width, longest), KEY_MAX_WIDTH))
    top = 14 if title else 0
    image = Image.new("RGB", (width, top + 14 * len(entries) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font_for(title))
    for i, (name, colour) in enumerate(entries):
        y = top + 14 * i
        draw.rectangle([4, 4 + y, 14, 14 + y], fill=tuple(int(x) for x in colour), outline=(0, 0, 0))
        font = font_for(name)
        draw.text((20, 3 + y), fit_text(draw, name, width - 24, font), fill=(0, 0, 0), font=font)
    return image


KEY_MAX_WIDTH = 400  # pixels


def ramp_key(title: str, low: str, high: str, width: int = 160) -> Image.Image:
    """The key of `colour_scalar`'s dark-to-yellow ramp: a bar from `low` (0) to `high` (1) under a title."""
    image = Image.new("RGB", (width, 44), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font_for(title))
    bar = colour_scalar(np.tile(np.linspace(0.0, 1.0, width - 8, dtype=np.float32), (10, 1)))
    image.paste(Image.fromarray(bar), (4, 17))
    draw.text((4, 29), low, fill=(0, 0, 0), font=font_for(low))
    draw.text((width - 4 - int(draw.textlength(high, font=font_for(high))), 29), high, fill=(0, 0, 0), font=font_for(high))
    return image


def stack(images: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """Images one under the other, left-aligned, on white."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    (255, 255, 255))
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height + gap
    return out


def legend(class_names: Sequence[str], palette: np.ndarray, present: Sequence[int] | None = None,
           with_ignore: bool = True) -> Image.Image:
    """A colour key for the given classes (all when `present` is None), IGNORE too unless `with_ignore` is False."""
    ids = list(range(len(class_names))) if present is None else [int(c) for c in present]
    return key([(class_names[c], tuple(palette[c])) for c in ids] + ([("ignore", IGNORE_COLOUR)] if with_ignore else []))


def with_legend(figure: Image.Image, key: Image.Image) -> Image.Image:
    out = Image.new("RGB", (figure.width + key.width, max(figure.height, key.height)), (255, 255, 255))
    out.paste(figure, (0, 0))
    out.paste(key, (figure.width, 0))
    return out


def save_png(image: Image.Image | np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))).save(path)
    return path


GIF_MAX_FPS = 50  # GIF delays are hundredths of a second, and players slow 0-1 of them to 10 fps
GIF_PALETTE_SAMPLES = 8  # frames the shared palette is drawn from


def gif_delay_ms(fps: float) -> int:
    """A frame's delay for `fps`, in whole hundredths of a second as GIF stores it (Pillow would round 1000 / fps down:
    8 fps played at 8.33)."""
    return 10 * max(1, int(100 / fps + 0.5))


def shared_palette(frames: Sequence[Path], keep: Sequence[tuple[int, int, int]] = ()) -> Image.Image:
    """One 256-colour palette for every frame of a GIF: the colours `keep` (distinct, at most 255) exactly as its first
    entries (a legend's, text's, background's), then an adaptive palette of a few frames spread over the path for the
    rest (renders, overlays)."""
    keep = list(keep)
    picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(len(frames), GIF_PALETTE_SAMPLES)).round().astype(int)]
    tiles = []
    for frame in picks:
        with Image.open(frame) as image:
            tiles.append(np.asarray(image.convert("RGB")))
    height = max(t.shape[0] for t in tiles)
    mosaic = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), mode="edge") for t in tiles], axis=1)
    adaptive = Image.fromarray(mosaic).quantize(256 - len(keep), method=Image.Quantize.MEDIANCUT).getpalette()
    entries = [v for colour in keep for v in colour] + list(adaptive[: 3 * (256 - len(keep))])
    palette = Image.new("P", (1, 1))
    palette.putpalette(entries + [0] * (768 - len(entries)))
    return palette


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 colours -> [...] int64 keys, one per colour."""
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def save_gif(frames: Sequence[Path], path: Path, fps: float, keep: Sequence[tuple[int, int, int]] = ()) -> Path:
    """An animated GIF of the PNG files `frames` that loops forever, `fps` (<= GIF_MAX_FPS, to whole hundredths of a
    second a frame) frames a second, every frame on one palette without dithering, which holds the colours `keep`
    exactly (`shared_palette`: a class keeps its legend colour in every frame, where a palette per frame let it drift
    or merge with another); the files are read one at a time, so that a long path does not hold every frame in memory."""
    if not frames:
        raise ValueError("save_gif: no frames")
    if not 0 < fps <= GIF_MAX_FPS:
        raise ValueError(f"save_gif: fps {fps}, expected (0, {GIF_MAX_FPS}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    exact = list(dict.fromkeys(tuple(int(v) for v in colour) for colour in [(255, 255, 255), (0, 0, 0), *keep]))[:128]
    palette = shared_palette(frames, exact)
    exact_keys = _rgb_keys(np.array(exact))  # palette entry i is exact[i]
    order = np.argsort(exact_keys)

    def indexed(frame: Path) -> Image.Image:
        with Image.open(frame) as image:
            rgb = image.convert("RGB")
        out = rgb.quantize(palette=palette, dither=Image.Dither.NONE)  # Pillow's nearest colour is approximate,
        index, keys = np.array(out), _rgb_keys(np.asarray(rgb))  # so the kept colours are set exactly
        slot = np.minimum(np.searchsorted(exact_keys[order], keys), len(order) - 1)
        kept = exact_keys[order][slot] == keys
        index[kept] = order[slot[kept]]
        out.frombytes(index.tobytes())
        return out

    rest = (indexed(frame) for frame in frames[1:])
    indexed(frames[0]).save(path, save_all=True, append_images=rest, duration=gif_delay_ms(fps), loop=0)
    return path


def contact_sheet(paths: Sequence[Path], out: Path, columns: int = 4, thumb_width: int = 480) -> Path:
    """Thumbnails of several PNGs in a grid, each under its file's name, with a gap between them."""
    thumbs = []
    for p in paths:
        image = Image.open(p).convert("RGB")
        ratio = thumb_width / image.width
        thumbs.append(image.resize((thumb_width, max(1, int(image.height * ratio)))))
    if not thumbs:
        raise ValueError("contact_sheet: no pictures")
    columns = min(columns, len(thumbs))
    gap, caption = 8, 14
    h = max(t.height for t in thumbs) + caption
    rows = (len(thumbs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (thumb_width + gap) - gap, rows * (h + gap) - gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (p, t) in enumerate(zip(paths, thumbs)):
        x, y = (i % columns) * (thumb_width + gap), (i // columns) * (h + gap)
        draw.text((x + 2, y + 1), Path(p).stem, fill=(0, 0, 0), font=font_for(Path(p).stem))
        sheet.paste(t, (x, y + caption))
    return save_png(sheet, out)


CONFUSION_ORIGIN = (84, 98)  # the top-left corner of the confusion picture's first cell: room for the class names


def confusion_picture(confusion: np.ndarray, class_names: Sequence[str], cell: int = 26) -> Image.Image:
    """Row-normalised confusion matrix (rows = ground truth, columns = prediction) as a heat map: class names on
    both axes, each cell's share of its row in per cent (blank under 0.5 %), each row's pixel count and IoU.

    An extra last column (IGNORE predictions: pixels no Gaussian reached) counts in the row sums; where any row has
    such pixels, each row's share of them is printed after its IoU ("none"), so that a row's cells and that share
    add up to 100 %.
    """
    font = font_for("")
    C = len(class_names)
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    unreached = rows[:, C:].sum(axis=1)
    show_unreached = bool((unreached > 0).any())
    rows = rows[:, :C]
    iou = segmentation_scores(counts)["iou"]  # NaN for classes absent from the ground truth
    names = [name if len(name) <= 12 else name[:10] + ".." for name in class_names]
    left, top = CONFUSION_ORIGIN
    image = Image.new("RGB", (left + C * cell + (170 if show_unreached else 120), top + C * cell + 22), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((left, 2), "predicted ->", fill=(0, 0, 0), font=font)
    draw.text((2, top - 14), "ground truth", fill=(0, 0, 0), font=font)
    draw.text((left + C * cell + 8, top - 14), "pixels    IoU" + ("   none" if show_unreached else ""), fill=(0, 0, 0),
              font=font)
    heat = colour_scalar(rows)
    for j, name in enumerate(names):
        label = Image.new("RGB", (80, 12), (255, 255, 255))
        ImageDraw.Draw(label).text((0, 0), name, fill=(0, 0, 0), font=font_for(name))
        image.paste(label.rotate(90, expand=True), (left + j * cell + (cell - 12) // 2, top - 82))
    for i, name in enumerate(names):
        y = top + i * cell
        draw.text((2, y + cell // 2 - 6), name, fill=(0, 0, 0), font=font_for(name))
        for j in range(C):
            x = left + j * cell
            colour = tuple(int(v) for v in heat[i, j])
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
            share = 100.0 * rows[i, j]
            if share >= 0.5:
                ink = (0, 0, 0) if rows[i, j] > 0.5 else (255, 255, 255)
                text = f"{share:.0f}"
                draw.text((x + (cell - draw.textlength(text, font=font)) / 2, y + cell // 2 - 6), text, fill=ink, font=font)
        total = int(counts[i].sum())
        score = "-" if np.isnan(iou[i]) else f"{iou[i]:.2f}"
        none = f"  {100.0 * unreached[i]:4.0f} %" if show_unreached else ""
        draw.text((left + C * cell + 8, y + cell // 2 - 6), f"{total:>6}    {score}{none}", fill=(0, 0, 0), font=font)
    caption = "cells: % of the row's pixels" + ("; none: % no Gaussian reached" if show_unreached else "")
    draw.text((2, top + C * cell + 6), caption, fill=(0, 0, 0), font=font)
    return image
