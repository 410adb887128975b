"""The HTML report renders in headless Chromium (Debian's chromium) and shows the leaderboard."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proveseg.study.report import write_report
from tests.study.test_leaderboard import fake_run

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's chromium is missing: .ci/run installs it")
        pytest.skip("no chromium here (apt-get install chromium)")
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.3)
        fake_run(tmp_path, "stage1", "gen_good", seed, 0.1)
    page = write_report(tmp_path, tmp_path / "report.html", "stage1", audit=False)  # hand-written records
    common = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="leaderboard">' in dom.stdout and "gen_good" in dom.stdout
    shot = tmp_path / "shot.png"
    done = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
