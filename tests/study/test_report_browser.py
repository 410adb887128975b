"""The HTML report renders in headless Chromium (Debian's chromium) and shows what a reader needs, in order.

Runs are the hand-written records of ``tests/study/test_leaderboard.py::fake_run`` (nothing to re-derive:
``audit=False``). The DOM checks run on ``--dump-dom`` at a 1400 px wide window; the same content is also
checked on the written file, without a browser.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from proveseg.data.classes import CITYSCAPES19
from proveseg.study.report import _no_negative_zero, _signed, _text_colour, write_report
from tests.study.test_leaderboard import DOMAINS, fake_run

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXTRA_DOMAINS = ["heavy_rain", "snow_overcast", "dusk_glare", "dawn_mist", "night_rain"]
NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0\.0+(?![\d.])")
# Appended to a copy of the report (never to the report itself): after layout, records which leaderboard
# cells wrap over more than one line, and the window's width, in the DOM that --dump-dom prints.
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const wrapped = [];
  for (const td of document.querySelectorAll("#leaderboard td")) {
    const range = document.createRange();
    range.selectNodeContents(td);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    if (tops.size > 1) wrapped.push(td.textContent);
  }
  const out = document.createElement("pre");
  out.id = "layout-probe";
  const nowrap = [...document.querySelectorAll("#leaderboard td")].every(
    td => getComputedStyle(td).whiteSpace === "nowrap");
  out.textContent = JSON.stringify({width: window.innerWidth, wrapped: wrapped, nowrap: nowrap});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip() -> str:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Debian's chromium is missing: .ci/run installs it")
        pytest.skip("no chromium here (apt-get install chromium)")
    return browser


def _digest(name: str) -> str:
    return hashlib.sha256(f"records of {name}".encode()).hexdigest()


def _more_domains(run: Path) -> None:
    """Eight test domains, not three: a leaderboard as wide as a real study's, whose cells could wrap."""
    with np.load(run / "confusion.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    domains = [*DOMAINS, *EXTRA_DOMAINS]
    arrays["domains"] = np.asarray([domains[i % len(domains)] for i in range(len(arrays["domains"]))])
    np.savez_compressed(run / "confusion.npz", **arrays)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["per_domain"] |= {d: metrics["per_domain"]["fog"] for d in EXTRA_DOMAINS}
    (run / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))


def _results(root: Path) -> Path:
    """Four strategies whose directory order (alphabetical) is not their rank order; every source hashed."""
    for seed in (0, 1):
        for strategy, error in (("baseline", 0.30), ("gen_bad", 0.45), ("gen_good", 0.10), ("gen_mid", 0.20)):
            run = fake_run(root, "stage1", strategy, seed, error)
            comp = json.loads((run / "composition.json").read_text())
            comp["consumed"]["sequence_sha256"] = "f" * 64  # the same sequence hash for every run
            comp["source_hashes"] = {name: _digest(name) for name in comp["consumed"]["per_source"]}
            (run / "composition.json").write_text(json.dumps(comp))
            _more_domains(run)
    return root


def _table(page: str, table_id: str) -> list[list[str]]:
    """The cells of one table, header row first (the report's own markup: one <tr> per row)."""
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert match, f"no table {table_id}"
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", match.group(1), re.S)]


def _check_content(page: str) -> None:
    """The fixes a reader sees: order of rows and columns, sources named, no -0.0, the heading."""
    ranked = [row[1] for row in _table(page, "leaderboard")[1:]]
    assert ranked == ["gen_good", "gen_mid", "baseline", "gen_bad"]
    per_class = _table(page, "per-class")
    assert per_class[0] == ["class", *ranked]  # strategy columns in rank order
    assert [row[0] for row in per_class[1:]] == list(CITYSCAPES19.names)  # the class set's order
    composition = _table(page, "composition")
    assert "sources consumed (records sha256)" in composition[0]
    column = composition[0].index("sources consumed (records sha256)")
    sources = {Path(row[0]).parts[-3]: row[column] for row in composition[1:]}
    for strategy in ("gen_bad", "gen_good", "gen_mid"):
        name = strategy.removeprefix("gen_")
        assert f"{name} 400 ({_digest(name)[:12]})" in sources[strategy]
        assert f"synthetic 400 ({_digest('synthetic')[:12]})" in sources[strategy]
    assert sources["baseline"] == f"synthetic 800 ({_digest('synthetic')[:12]})"
    assert len(set(sources.values())) == 4  # one sequence hash for all, yet each run consumed different data
    assert not NEGATIVE_ZERO.search(page), NEGATIVE_ZERO.search(page)
    heading = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert heading and heading.group(1) == "proveseg report: stage1"
    assert "stage stage1" not in page


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser_or_skip()
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


def test_report_at_1400px_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser_or_skip()
    results = _results(tmp_path / "results")
    page = write_report(results, tmp_path / "report.html", "stage1", audit=False)  # hand-written records
    common = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    _check_content(dom.stdout)

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    laid = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert laid.returncode == 0, laid.stderr[-2000:]
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', laid.stdout, re.S)
    assert found, "the layout probe did not run"
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["width"] == 1400
    assert layout["nowrap"] and layout["wrapped"] == []  # no leaderboard cell (the gain interval) wraps at 1400 px

    shot = tmp_path / "shot.png"
    done = subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1400, 1000)


def test_report_content_without_a_browser(tmp_path: Path) -> None:
    results = _results(tmp_path / "results")
    _check_content(write_report(results, tmp_path / "report.html", "stage1", audit=False).read_text())
    every = write_report(results, tmp_path / "all.html", None, audit=False).read_text()
    heading = re.search(r"<h1>(.*?)</h1>", every)
    assert heading and heading.group(1) == "proveseg report: all stages"


def test_no_negative_zero_is_printed() -> None:
    assert _signed(-0.04, 1) == "+0.0" and _signed(-0.004, 2) == "+0.00" and _signed(-0.0, 1) == "+0.0"
    assert _signed(-0.06, 1) == "-0.1" and _signed(0.04, 1) == "+0.0" and _signed(float("nan"), 1) == "-"
    assert _no_negative_zero("+1.20 [-0.00, +2.40]*") == "+1.20 [+0.00, +2.40]*"
    assert _no_negative_zero("-0.05 [-0.10, -0]") == "-0.05 [-0.10, +0]"  # real negatives are kept


def test_heatmap_text_is_white_on_dark_cells() -> None:
    fig, ax = plt.subplots()
    im = ax.imshow(np.array([[-5.0, 0.0, 5.0]]), cmap="RdBu", vmin=-5, vmax=5)
    try:
        assert _text_colour(im, -5.0) == "white" and _text_colour(im, 5.0) == "white"  # darkest red, darkest blue
        assert _text_colour(im, 0.0) == "black" and _text_colour(im, 1.0) == "black"  # light cells
        assert _text_colour(im, float("nan")) == "black"
    finally:
        plt.close(fig)
