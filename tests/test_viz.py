"""The pictures people audit: colours that stay apart, keys that fit their names, panels that fit their tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from econsg import viz


def test_forty_class_colours_stay_apart_and_keep_their_colour_whatever_the_count():
    palette = viz.class_palette(40)
    lab = viz._srgb_to_lab(palette.astype(np.float64))
    apart = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(40) * 1e9
    assert apart.min() > 15, "no two of 40 classes look alike (golden-ratio hues gave door/television 4.4)"
    ignore = viz._srgb_to_lab(np.array(viz.IGNORE_COLOUR, np.float64))
    assert np.linalg.norm(lab - ignore, axis=-1).min() > 15
    assert (viz.class_palette(9) == palette[:9]).all() and (viz.class_palette(25) == palette[:25]).all()


def test_a_key_widens_for_a_long_name_up_to_its_limit():
    short = viz.key([("wall", (1, 2, 3))])
    longer = viz.key([("a kitchen cabinet door with a brass handle", (1, 2, 3))])
    endless = viz.key([("x" * 400, (1, 2, 3))])
    assert short.width == 160 and longer.width > 160 and endless.width == viz.KEY_MAX_WIDTH


def test_a_panel_fits_its_largest_tile_and_takes_a_single_channel():
    small, tall = np.zeros((4, 6, 3), np.uint8), np.full((10, 6, 3), 255, np.uint8)
    tall[-1] = (255, 0, 0)  # its bottom row
    sheet = np.asarray(viz.panel([("small", small), ("tall", tall), ("grey", np.full((4, 6, 1), 0.5))], scale=1))
    x = 6 + 4  # the second cell's left edge
    assert (sheet[14 + 9, x] == (255, 0, 0)).all(), "the taller tile's bottom row is drawn, not cut off"
    assert sheet.shape[0] == 10 + 16


def test_a_contact_sheet_of_three_pictures_has_three_columns(tmp_path):
    paths = [viz.save_png(np.zeros((20, 40, 3), np.uint8), tmp_path / f"view_{i}.png") for i in range(3)]
    sheet = Image.open(viz.contact_sheet(paths, tmp_path / "sheet.png", columns=4, thumb_width=40))
    assert sheet.width == 3 * 40 + 2 * 8


def _drawn(text: str, font) -> np.ndarray:
    image = Image.new("L", (40, 16), 0)
    ImageDraw.Draw(image).text((2, 2), text, fill=255, font=font)
    return np.asarray(image)


def test_text_past_ascii_is_drawn_in_a_font_that_has_its_glyphs():
    """The built-in font draws 'é' as the same box as any missing glyph; a system font draws the letter."""
    builtin = viz.font_for("e")
    if not isinstance(builtin, ImageFont.FreeTypeFont):
        pytest.skip("Pillow older than 10.1: its built-in font is a bitmap font")
    assert _drawn("é", builtin).tobytes() == _drawn("\ufffe", builtin).tobytes()  # why a system font is needed
    font = viz.font_for("café")
    if font is builtin:
        pytest.skip(f"none of {viz.UNICODE_FONTS} is installed")
    accented, missing, plain = (_drawn(ch, font) for ch in ("é", "\ufffe", "e"))
    assert accented.tobytes() != missing.tobytes() and accented.tobytes() != plain.tobytes()
    assert viz.font_for("chair") is builtin  # ASCII keeps the built-in font: the same pictures on every machine


def test_a_gif_is_written_from_frame_files_at_the_asked_rate_and_refuses_rates_players_slow(tmp_path):
    frames = [viz.save_png(np.full((4, 6, 3), 40 * i, np.uint8), tmp_path / f"frame_{i:03d}.png") for i in range(3)]
    gif = viz.save_gif(frames, tmp_path / "path.gif", fps=20)
    with Image.open(gif) as read:
        assert read.n_frames == 3 and read.info["duration"] == 50
    with pytest.raises(ValueError, match="fps 60"):
        viz.save_gif(frames, tmp_path / "fast.gif", fps=60)
