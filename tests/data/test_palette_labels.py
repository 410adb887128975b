"""Palette ('P') PNG labels: indices are class ids (VOC style), or colours when an image tool re-palettised a
colour mask, or indices under a decorative palette of another scheme; an ambiguous mix is refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.data.classes import CITYSCAPES19
from proveseg.data.decode import LabelDecodeError, decode_label


def _ids() -> np.ndarray:
    y, x = np.mgrid[:24, :40]
    ids = np.array([0, 2, 8, 10, 13], np.uint8)[(x // 8 + y // 12) % 5]
    ids[:3] = 255  # ignore
    return ids


def _palette_image(indices: np.ndarray, palette: list[int]) -> Image.Image:
    im = Image.fromarray(indices, "P")
    im.putpalette(palette)
    return im


def test_a_colour_mask_saved_with_an_adaptive_palette_decodes_through_its_colours(tmp_path: Path) -> None:
    ids = _ids()
    Image.fromarray(CITYSCAPES19.colorize(ids)).convert("P", palette=Image.ADAPTIVE, colors=32).save(
        tmp_path / "adaptive.png")
    with Image.open(tmp_path / "adaptive.png") as im:
        assert im.mode == "P" and (np.array(im) != ids).any()  # indices are not the ids
    assert np.array_equal(decode_label(str(tmp_path / "adaptive.png"), CITYSCAPES19), ids)


def test_voc_style_and_colourless_palettes_keep_indices_as_ids(tmp_path: Path) -> None:
    ids = _ids()
    _palette_image(ids, CITYSCAPES19.palette_bytes()).save(tmp_path / "voc.png")
    voc_boundary = [*CITYSCAPES19.palette_bytes()[: 3 * 255], 224, 224, 192]  # VOC colours its 255 boundary
    _palette_image(ids, voc_boundary).save(tmp_path / "boundary.png")
    _palette_image(ids, [v for i in range(256) for v in (i, i, i)]).save(tmp_path / "grey.png")
    _palette_image(ids, [0, 0, 0] * 256).save(tmp_path / "black.png")
    for name in ("voc.png", "boundary.png", "grey.png", "black.png"):
        assert np.array_equal(decode_label(str(tmp_path / name), CITYSCAPES19), ids), name
    odd = [v for i in range(256) for v in (i, 255 - i, 7)]
    _palette_image(ids, odd).save(tmp_path / "odd.png")
    assert np.array_equal(decode_label(str(tmp_path / "odd.png"), None), ids)  # no class set: indices


def test_a_decorative_palette_keeps_indices_and_an_ambiguous_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    ids = _ids()
    odd = [v for i in range(256) for v in (i, 255 - i, 7)]  # colours of another scheme: indices are the ids
    _palette_image(ids, odd).save(tmp_path / "odd.png")
    assert np.array_equal(decode_label(str(tmp_path / "odd.png"), CITYSCAPES19), ids)
    mixed = list(odd)
    mixed[0:3] = CITYSCAPES19.palette[2]  # index 0 has class 2's colour, the other used colours are no class's
    _palette_image(ids, mixed).save(tmp_path / "mixed.png")
    with pytest.raises(LabelDecodeError, match=r"mixed\.png: palette label whose used colours are partly "
                                               r"cityscapes19 class colours of other ids.*index 2 = \(2, 253, 7\)"):
        decode_label(str(tmp_path / "mixed.png"), CITYSCAPES19)
