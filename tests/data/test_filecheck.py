"""The header pass over reader sources: every record's files are checked before training, not a sample.

Each bad file is one a reviewer found only mid-training or at load time (a zero-byte or truncated
JPEG, a label of another size, an EXIF-rotated image beside an unrotated label).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.config import DataConfig
from proveseg.data.filecheck import RecordFileError, check_record_files, refuse_unusable_files
from proveseg.data.overlap import shared_images, split_overlap
from proveseg.data.pipeline import build_training_data
from proveseg.data.records import RecordTable
from proveseg.readers import FolderSource, read_source

H, W = 16, 24


def _folder(root: Path, n: int = 8) -> Path:
    """A folder source of ``n`` good JPEG images with their PNG labels (domain clear_day)."""
    rng = np.random.default_rng(0)
    (root / "images/clear_day").mkdir(parents=True)
    (root / "labels/clear_day").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"images/clear_day/{i}.jpg")
        Image.fromarray(rng.integers(0, 19, (H, W), dtype=np.uint8)).save(root / f"labels/clear_day/{i}.png")
    return root


def _break(root: Path) -> dict[str, str]:
    """Four bad records, one per problem; name -> the reason the pass must give."""
    (root / "images/clear_day/1.jpg").write_bytes(b"")
    jpg = (root / "images/clear_day/3.jpg").read_bytes()
    (root / "images/clear_day/3.jpg").write_bytes(jpg[: len(jpg) // 2])
    Image.fromarray(np.zeros((H, 2 * W), np.uint8)).save(root / "labels/clear_day/5.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees on display: the loader would turn the image, not its label
    Image.fromarray(np.zeros((W, W, 3), np.uint8)).save(root / "images/clear_day/6.jpg", exif=exif.tobytes())
    Image.fromarray(np.zeros((W, W), np.uint8)).save(root / "labels/clear_day/6.png")
    return {"1.jpg": "unreadable_image", "3.jpg": "truncated_image", "5.png": "size_mismatch",
            "6.jpg": "exif_rotation"}


def _data(root: Path, **source: object) -> DataConfig:
    return DataConfig.model_validate({"real": [{"name": "s", "root": str(root), **source}], "batch_size": 2})


def test_every_record_is_checked_and_each_problem_names_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    expected = _break(root)
    records = read_source(FolderSource(name="s", root=root)).records
    check = check_record_files(records)
    found = {}
    for i, reason, detail in check.problems:
        name = next(n for n in expected if n[0] == os.path.basename(records.image[i])[0])
        assert str(root / ("labels" if name.endswith(".png") else "images") / "clear_day" / name) in detail
        found[name] = reason
    assert found == expected
    assert len(check.records) == 4 and check.by_reason() == {r: 1 for r in expected.values()}
    message = check.message("source 's'")
    assert message.startswith("source 's': 4 record(s) with unusable files [1 exif_rotation, 1 size_mismatch, ")
    assert "(and 1 more)" in message and str(root / "images/clear_day/1.jpg") in message


def test_a_bad_file_fails_the_build_naming_it_or_is_skipped_and_counted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    expected = _break(root)
    with pytest.raises(RecordFileError, match=r"source 's': 4 record\(s\) with unusable files .*on_invalid: skip"):
        build_training_data(_data(root))
    data = build_training_data(_data(root, on_invalid="skip"))
    assert data.skipped == {"s": {reason: 1 for reason in expected.values()}}
    assert data.requested()["skipped"] == data.skipped  # what composition.json records
    assert len(data.records) == 4 and data.members[0].samples == 4
    assert not {os.path.basename(p) for p in data.records.image.tolist()} & set(expected)


def test_the_header_pass_adds_to_the_readers_own_skip_counts(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "labels/clear_day/0.png").unlink()  # the reader skips it (missing_label)
    (root / "images/clear_day/2.jpg").write_bytes(b"")  # the header pass skips it
    data = build_training_data(_data(root, on_invalid="skip"))
    assert data.skipped == {"s": {"missing_label": 1, "unreadable_image": 1}} and len(data.records) == 6


def test_an_unlabeled_source_is_checked_on_its_images_only(tmp_path: Path) -> None:
    real, unlabeled = _folder(tmp_path / "r"), _folder(tmp_path / "u")
    Image.fromarray(np.zeros((H, 2 * W), np.uint8)).save(unlabeled / "labels/clear_day/0.png")  # never read
    cfg = {"real": [{"name": "r", "root": str(real)}], "batch_size": 2, "unlabeled_share": 0.5}
    data = build_training_data(DataConfig.model_validate({**cfg, "unlabeled": [{"name": "u", "root": str(unlabeled)}]}))
    assert data.members[1].samples == 8 and data.skipped == {}
    (unlabeled / "images/clear_day/4.jpg").write_bytes(b"")
    with pytest.raises(RecordFileError, match=r"source 'u': 1 record\(s\) .*unreadable_image: .*4\.jpg: empty file"):
        build_training_data(DataConfig.model_validate({**cfg, "unlabeled": [{"name": "u", "root": str(unlabeled)}]}))


def test_a_missing_file_is_missing_and_an_evaluation_split_is_never_thinned(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=2)
    records = read_source(FolderSource(name="t", root=root)).records
    gone = RecordTable.from_columns({**{c: getattr(records, c) for c in records.columns},
                                     "label": [str(root / "labels/clear_day/0.png"), str(root / "nowhere.png")]})
    assert [reason for _, reason, _ in check_record_files(gone).problems] == ["missing_label"]
    with pytest.raises(RecordFileError, match=r"evaluation.test \(source 't'\): 1 record.*nowhere\.png.*never thinned"):
        refuse_unusable_files(gone, "evaluation.test")
    refuse_unusable_files(records, "evaluation.test")  # a good split passes


def test_overlap_is_found_through_a_symlinked_folder_and_a_symlinked_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=3)
    (tmp_path / "link").symlink_to(root)
    other = _folder(tmp_path / "o", n=1)
    os.symlink(root / "images/clear_day/2.jpg", other / "images/clear_day/9.jpg")
    os.symlink(root / "labels/clear_day/2.png", other / "labels/clear_day/9.png")
    a = read_source(FolderSource(name="a", root=root)).records
    b = read_source(FolderSource(name="b", root=tmp_path / "link")).records
    c = read_source(FolderSource(name="c", root=other)).records
    assert shared_images(a, b) == [(0, 0), (1, 1), (2, 2)]
    message = split_overlap(a, "training data", c, "evaluation.test")
    assert message is not None and message.startswith("1 image(s) are in both training data and evaluation.test "
                                                      "(source 'a' of training data, source 'c' of evaluation.test)")
    assert f"e.g. {root / 'images/clear_day/2.jpg'} = {other / 'images/clear_day/9.jpg'}" in message
    assert split_overlap(a.take(np.array([0, 1])), "train", c, "test") is None
