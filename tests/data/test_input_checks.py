"""Inputs that used to be read wrongly or silently: symlinked folders, CSV lists, manifests, label maps, class tables.

Each test builds its tiny input here and asserts the reading or the refusal (naming file, row and field).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.readers import ReaderError, read_dataset


def _img(path: Path, shape: tuple[int, int] = (8, 12), value: int = 0, rgb: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3) if rgb else shape, value, np.uint8)).save(path)


def _pair(root: Path, domain: str, stem: str) -> None:
    _img(root / "images" / domain / f"{stem}.jpg")
    _img(root / "labels" / domain / f"{stem}.png", rgb=False)


def test_a_symlinked_domain_folder_is_read(tmp_path: Path) -> None:
    ds, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    _pair(ds, "clear_day", "a")
    _pair(elsewhere, "fog", "b")
    _pair(elsewhere, "fog", "c")
    os.symlink(elsewhere / "images/fog", ds / "images/fog")
    os.symlink(elsewhere / "labels/fog", ds / "labels/fog")
    result = read_dataset("folder", ds, "s")
    assert result.records.counts("domain") == {"clear_day": 1, "fog": 2} and result.skipped == {}


def test_a_symlink_cycle_or_alias_is_an_error_naming_the_link(tmp_path: Path) -> None:
    _pair(tmp_path, "fog", "a")
    os.symlink(tmp_path / "images", tmp_path / "images/fog/loop")
    with pytest.raises(ReaderError, match=r"images/fog/loop: symlink cycle"):
        read_dataset("folder", tmp_path, "s")
    os.remove(tmp_path / "images/fog/loop")
    os.symlink(tmp_path / "images/fog", tmp_path / "images/zz_alias")
    with pytest.raises(ReaderError, match=r"images/zz_alias: leads to .*already read as .*images/fog"):
        read_dataset("folder", tmp_path, "s")
