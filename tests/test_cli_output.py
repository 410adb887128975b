"""Human output fits the terminal without cutting numbers; every CLI option has a help text."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from proveseg import render
from proveseg.cli import build_parser, main
from proveseg.study.formatting import leaderboard_csv, leaderboard_markdown, pct
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.matrix import expand, totals
from proveseg.study.spec import load_study
from tests.study.test_leaderboard import fake_run
from tests.study.test_spec import _study


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix or "proveseg", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _subparsers(sub, f"{prefix} {name}".strip())
    return found


def test_every_option_of_every_command_has_a_help() -> None:
    missing = [f"{name}: {'/'.join(action.option_strings) or action.dest}"
               for name, parser in _subparsers(build_parser())
               for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()]
    assert missing == []


def test_demo_help_gives_the_measured_durations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "about 2 minutes" in out and "about 10 minutes" in out and "3 minutes" not in out


@pytest.fixture()
def board(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    for seed in (0, 1):
        fake_run(tmp_path, "stage1", "baseline", seed, 0.30)
        fake_run(tmp_path, "stage1", "gen_good", seed, 0.10)
        fake_run(tmp_path, "stage1", "gen_bad", seed, 0.45)
        fake_run(tmp_path, "stage1", "gen_random_noise", seed, 0.30, kind="noise")
    return tmp_path, build_leaderboard(tmp_path, "stage1", n_boot=50, audit=False)


def _check(out: str, width: int, values: list[str]) -> None:
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    for value in values:
        assert value in out


def _render(width: int, draw: Any) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    draw(console)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_leaderboard_fits_the_console_without_cutting_numbers(board: tuple[Path, dict[str, Any]], width: int) -> None:
    _, doc = board
    out = _render(width, lambda c: render.print_leaderboard(c, doc, "results (stage1)"))
    values = [pct(r["mIoU"]) for r in doc["rows"]] + [pct(v) for r in doc["rows"] for v in r["per_domain"].values()]
    _check(out, width, values + [r["strategy"] for r in doc["rows"]])
    assert "per domain" in out if width < 150 else "per domain" not in out  # the full table is ~170 wide


def test_machine_formats_do_not_depend_on_the_width(board: tuple[Path, dict[str, Any]]) -> None:
    _, doc = board
    md, csv = leaderboard_markdown(doc), leaderboard_csv(doc)
    assert md.splitlines()[0].startswith("| rank | strategy | type | mIoU | gain vs baseline [95% CI] |")
    assert csv.splitlines()[0].startswith("rank,strategy,type,mIoU,gain,gain_lo,gain_hi,adverse_mIoU,")


@pytest.mark.parametrize("width", [80, 120])
def test_piped_leaderboard_honours_columns(board: tuple[Path, dict[str, Any]], width: int,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root, doc = board
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["leaderboard", str(root), "--stage", "stage1", "--no-audit", "--n-boot", "50"]) == 0
    _check(capsys.readouterr().out, width, [pct(r["mIoU"]) for r in doc["rows"]])


def test_piped_output_without_columns_is_200_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    from proveseg.cli import _console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = _console()
    assert console.is_terminal or console.width == 200


def _plan(tmp_path: Path, **over: object) -> dict[str, Any]:
    runs = expand(load_study(_study(tmp_path, **over)))
    return {"runs": [r.as_dict() for r in runs], "totals": totals(runs)}


@pytest.mark.parametrize("width", [80, 100, 120, 250])
def test_plan_fits_the_console_and_keeps_its_columns(tmp_path: Path, width: int) -> None:
    doc = _plan(tmp_path)
    out = _render(width, lambda c: render.print_plan(c, doc, "study.yaml: plan"))
    values = sorted({str(r[k]) for r in doc["runs"] for k in ("stage", "strategy", "ratio", "status")})
    _check(out, width, [*values, f"{len(doc['runs'])} jobs"])
    lines = out.splitlines()
    for r in doc["runs"]:  # every row shows its stage, strategy, model and seed side by side
        assert any(r["stage"] in line and r["strategy"] in line and r["model"] in line and f" {r['seed']} " in line
                   for line in lines)
    if width >= 250:
        assert doc["runs"][0]["run_dir"] in out
    else:  # relative to the results root, or only the layout under it in the caption
        assert "run dir:" in out and "under" in out and doc["runs"][0]["run_dir"] not in out


def test_curves_and_report_default_beside_the_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.study.test_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)  # the current folder must stay empty
    run = fake_run(tmp_path / "results", "stage1", "baseline", 0, 0.3)
    (run / "log.jsonl").write_text('{"iteration": 1, "loss": 1.0, "lr": 0.1}\n'
                                   '{"iteration": 2, "eval": {"mIoU": 0.1}}\n')
    assert main(["curves", str(run)]) == 0 and (run / "curves.png").exists()
    assert main(["report", str(tmp_path / "results"), "--stage", "stage1", "--no-audit"]) == 0
    assert (tmp_path / "results/report.html").exists()
    assert not (tmp_path / "curves.png").exists() and not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("width", [80, 120])
def test_the_quality_table_fits_without_cutting_a_number(width: int) -> None:
    gens = [{"generator": name, "gain": g, "gain_ci95": [g - 0.01, g + 0.01], "layout_score": 0.69,
             "colour_shift": 19.5, "semantic_mIoU": 0.0713, "layout_8x8_mIoU": 0.0733}
            for name, g in (("faithful", 0.0571), ("washed_out", 0.0047))]
    doc = {"generators": gens, "correlations": {k: {"rho": -0.6, "ci95": [-1.0, 1.0]} for k in
                                                ("layout_score", "colour_shift", "semantic_mIoU", "layout_8x8_mIoU")}}
    console = Console(width=width, file=io.StringIO())
    console.print(render.quality_table(doc, "q"))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= width
    assert all(v in out for v in ("+5.71", "+0.47", "washed_out", "19.5", "7.13", "-0.60"))


def test_the_other_tables_fold_numbers_at_80_columns() -> None:
    stats = {"faithful": {d: {"images": 120, "generated_mean": 101.5, "original_mean": 99.25, "generated_std": 55.5,
                              "original_std": 60.25, "mean_abs_diff": 20.5, "mean_abs_diff_pct": 8.04,
                              "edge_alignment_generated": 0.512, "edge_alignment_original": 0.734,
                              "layout_score": 0.69} for d in ("fog", "dawn_dusk")}}
    console = Console(width=80, file=io.StringIO())
    console.print(render.stats_table(stats, "generated vs original"))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert "dawn_dusk" in out.replace("\n", "") or "dawn_" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "examples/synthetic-study.yaml", "--detach"], "--detach submits to Slurm and returns"),
    (["manifest", "validate", "m.csv", "--unmapped", "ignore"], "--unmapped applies to a --label-map"),
])
def test_flags_that_would_change_nothing_are_refused(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
