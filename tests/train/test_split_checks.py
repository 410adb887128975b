"""Before any training step: evaluation splits pass the header pass, and no split shares an image with another."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from proveseg.config import ConfigError, RunConfig
from proveseg.data.filecheck import RecordFileError
from proveseg.rundir import RunDir
from proveseg.train.loop import train
from tests.train.conftest import make_config


def _with(cfg: RunConfig, **evaluation: Any) -> RunConfig:
    sources = {k: [cfg.evaluation.test[0].model_copy(update=v)] for k, v in evaluation.items()}
    return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update=sources)})


def _untouched(cfg: RunConfig) -> None:
    run = RunDir(cfg.output_dir)
    assert run.status()[0] == "todo" and not run.log_path.exists() and not run.best.exists()


@pytest.mark.parametrize("split", ["test", "val"])
def test_training_images_in_an_evaluation_split_are_refused_before_training(tiny_benchmark: Path, tmp_path: Path,
                                                                            split: str) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run")
    (tmp_path / "same").symlink_to(tiny_benchmark / "train")  # another spelling of the training folder
    overlapping = _with(cfg, **{split: {"root": tmp_path / "same", "domains": ["clear_day"]}})
    n = len(list((tiny_benchmark / "train/images/clear_day").glob("*.jpg")))
    pattern = (rf"t: {n} image\(s\) are in both training data and evaluation.{split} \(source 'synthetic' of "
               rf"training data, source 'synthetic' of evaluation.{split}\), e.g. .*train/images/clear_day/.*\.jpg")
    with pytest.raises(ConfigError, match=pattern):
        train(overlapping)
    _untouched(cfg)


@pytest.mark.parametrize("on_invalid", ["error", "skip"])
def test_a_bad_test_file_fails_before_training_whatever_on_invalid(tiny_benchmark: Path, tmp_path: Path,
                                                                  on_invalid: str) -> None:
    root = tmp_path / "test"
    shutil.copytree(tiny_benchmark / "test", root)
    images = sorted((root / "images/fog").glob("*.jpg"))
    images[0].write_bytes(b"")
    label = root / "labels/fog" / images[1].with_suffix(".png").name
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(label)
    cfg = _with(make_config(tiny_benchmark, tmp_path / "run"), test={"root": root, "on_invalid": on_invalid})
    with pytest.raises(RecordFileError, match=(r"evaluation.test \(source 'synthetic'\): 2 record\(s\) with unusable "
                                               r"files \[1 size_mismatch, 1 unreadable_image\]")) as caught:
        train(cfg)
    assert str(images[0]) in str(caught.value) and str(label) in str(caught.value)
    _untouched(cfg)
