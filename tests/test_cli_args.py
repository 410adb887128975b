"""Command-line numbers and paths that cannot be right are refused naming the option (review of bad inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proveseg.cli import main


@pytest.mark.parametrize("argv, option", [
    (["verify-batches", "x.yaml", "--batches", "-1"], "--batches: -1 must be at least 1"),
    (["leaderboard", "r", "--n-boot", "0"], "--n-boot: 0 must be at least 1"),
    (["synth", "out", "--seed", "-3"], "--seed: -3 is outside [0, 2**32)"),
    (["synth", "out", "--n-train", "two"], "--n-train: 'two' is not a whole number"),
])
def test_counts_and_seeds_are_checked_by_the_parser(argv: list[str], option: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and option in capsys.readouterr().err


def test_a_missing_results_root_is_an_error_not_an_empty_leaderboard(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["leaderboard", str(tmp_path / "nope")], ["report", str(tmp_path / "nope")]):
        assert main(command) == 2
        assert "not a results root (no such directory)" in capsys.readouterr().err
