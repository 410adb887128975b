"""Atomic writes: content replaced whole, permissions as for any file the user creates."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from proveseg.atomic import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_content_and_honours_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"b": 1, "a": 2})
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and not list(path.parent.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
