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
    assert [viz.gif_delay_ms(fps) for fps in (8, 15, 40, 50)] == [130, 70, 30, 20]  # whole hundredths, nearest


def test_a_gif_keeps_every_legend_colour_exact_in_every_frame(tmp_path):
    """A palette per frame (Pillow's default) moved 30 of these 48 swatches off their colour: a class then showed in
    another colour than its legend's, or in the same as another class."""
    swatches = viz.class_palette(12)
    yy, xx = np.mgrid[0:96, 0:128]
    frames = []
    for i in range(4):
        frame = np.stack([(2 * xx + 20 * i) % 256, (2 * yy) % 256, ((xx + yy) * (i + 1)) % 256], -1).astype(np.uint8)
        for c, colour in enumerate(swatches):
            frame[88:94, 6 * c : 6 * c + 6] = colour  # the legend, the same in every frame
        frame[: 10 * (i + 1), :10] = swatches[i]  # a class region that grows frame by frame
        frames.append(viz.save_png(frame, tmp_path / f"frame_{i}.png"))
    gif = viz.save_gif(frames, tmp_path / "path.gif", fps=8, keep=[tuple(c) for c in swatches])
    with Image.open(gif) as read:
        for i in range(4):
            read.seek(i)
            rgb = np.asarray(read.convert("RGB"))
            for c, colour in enumerate(swatches):
                assert (rgb[88:94, 6 * c : 6 * c + 6] == colour).all(), (i, c)
            assert (rgb[: 10 * (i + 1), :10] == swatches[i]).all()


def test_a_name_keeps_its_colour_in_every_picture_of_a_run():
    """evaluate colours by the scene's class list, audit by the training vocabulary (no open-set class), query by the
    texts typed: each picks its colours by name from the run's class list, so the tv is one colour in all three."""
    scene = ["wall", "plant", "tv", "bed"]
    colours = viz.class_palette(len(scene))
    np.testing.assert_array_equal(viz.named_palette(scene, scene), colours)  # evaluate
    np.testing.assert_array_equal(viz.named_palette(["wall", "tv", "bed"], scene), colours[[0, 2, 3]])  # audit
    typed = viz.named_palette(["bed", "a striped armchair", "tv", "a lamp"], scene)  # query: two texts not in the list
    np.testing.assert_array_equal(typed[[0, 2]], colours[[3, 2]])
    np.testing.assert_array_equal(typed[[1, 3]], viz.class_palette(6)[[4, 5]])


def test_a_held_out_views_panel_wraps_after_three_tiles():
    """Six tiles in one row are too small to read at a page's width: evaluate's view picture wraps after three."""
    from stages.evaluate import view_panel

    image, labels = np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20), np.int64)
    palette = viz.class_palette(1)
    picture = view_panel(image, image, labels, labels, labels, ["wall"], palette)
    key = viz.legend(["wall"], palette, present=np.array([0]))
    assert picture.height >= 2 * (2 * 10 + 14)  # two rows of 2x up-scaled tiles under their titles
    assert picture.width <= 3 * (2 * 20 + 4) + key.width + 20
