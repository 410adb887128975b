"""Shared fixtures: a tiny synthetic benchmark generated once per test session, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from proveseg.synth.build import SynthSpec, build_benchmark

TINY = SynthSpec(seed=7, height=64, width=128, n_train=4, n_test=2)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x128 benchmark with 4 train and 2 test scenes and every generator."""
    root = tmp_path_factory.mktemp("synthetic")
    build_benchmark(root, TINY)
    return root
