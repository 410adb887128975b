"""Paired samples: record pair columns, the csv reader's *2 columns, shared geometry, hashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from proveseg.data.classes import CITYSCAPES19
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.records import RecordTable
from proveseg.data.transforms import TransformSpec
from proveseg.readers import ReaderError, read_dataset

# The hash of this table on main before pair columns existed: a table without pairs must keep it.
_NO_PAIR_COLUMNS = {"image": ["b", "a"], "label": ["lb", "la"], "dataset": "d", "domain": ["x", "y"],
                    "kind": "real", "source": "s", "origin": ""}
_NO_PAIR_SHA256 = "42fdb2c4f730d709bb21f14127c3a34aa3cae394c8c3cb486f4e90c3c66f2426"


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _scene(seed: int, shape: tuple[int, int] = (24, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB image and a label whose every pixel value is known (classes 0..18)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8), rng.integers(0, 19, shape, dtype=np.uint8)


def test_a_table_without_pairs_hashes_as_before_pairs_existed() -> None:
    table = RecordTable.from_columns(_NO_PAIR_COLUMNS)
    assert not table.has_pairs and table.sha256() == _NO_PAIR_SHA256
    assert RecordTable.concat([table, table.take(np.array([0]))]).sha256() != _NO_PAIR_SHA256
    assert not RecordTable.concat([table, table]).has_pairs


def test_pair_columns_enter_the_hash_and_follow_take_sort_and_concat() -> None:
    paired = RecordTable.from_columns({**_NO_PAIR_COLUMNS, "image2": ["b2", ""], "label2": ["lb2", ""],
                                       "pair_geometry": ["shared", ""]})
    assert paired.sha256() != _NO_PAIR_SHA256
    other = RecordTable.from_columns({**_NO_PAIR_COLUMNS, "image2": ["b3", ""], "label2": ["lb2", ""],
                                      "pair_geometry": ["shared", ""]})
    assert other.sha256() != paired.sha256()
    assert paired.sorted().image2 is not None and paired.sorted().row(0)["image2"] == "b2"
    both = RecordTable.concat([RecordTable.from_columns(_NO_PAIR_COLUMNS), paired])
    assert both.has_pairs and both.paired().tolist() == [False, False, True, False]
    assert both.image2 is not None and both.image2.tolist() == ["", "", "b2", ""]


@pytest.mark.parametrize("bad, match", [
    ({"image2": ["b2", ""], "label2": ["", ""]}, "without"),
    ({"image2": ["b2", ""], "label2": ["", ""], "pair_geometry": ["diagonal", ""]}, "geometries"),
    ({"image2": ["", ""], "label2": ["l2", ""], "pair_geometry": ["", ""]}, "label2 or pair_geometry without"),
])
def test_inconsistent_pair_columns_are_refused(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RecordTable.from_columns({**_NO_PAIR_COLUMNS, **bad})


def _pair_list(tmp_path: Path, rows: list[str], header: str = "image,label,domain,image2,label2") -> Path:
    path = tmp_path / "list.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _pair_files(tmp_path: Path, name: str, shape: tuple[int, int] = (24, 40), shape2: tuple[int, int] | None = None,
                seed: int = 0) -> None:
    image, label = _scene(seed, shape)
    _png(tmp_path / "img" / f"{name}.png", image)
    _png(tmp_path / "lab" / f"{name}.png", label)
    image2, label2 = _scene(seed + 100, shape2 or shape)
    _png(tmp_path / "img2" / f"{name}.png", image2)
    _png(tmp_path / "lab2" / f"{name}.png", label2)


def test_csv_reader_reads_pairs_and_rows_without_one(tmp_path: Path) -> None:
    _pair_files(tmp_path, "a")
    _pair_files(tmp_path, "b")
    path = _pair_list(tmp_path, ["img/b.png,lab/b.png,fog,img2/b.png,lab2/b.png", "img/a.png,lab/a.png,fog,,"])
    table = read_dataset("csv", path, "lst").records
    assert table.image2 is not None and table.label2 is not None and table.pair_geometry is not None
    assert [Path(p).name for p in table.image.tolist()] == ["a.png", "b.png"]  # sorted; pairs follow their rows
    assert table.image2.tolist() == ["", str(tmp_path / "img2" / "b.png")]
    assert table.label2.tolist() == ["", str(tmp_path / "lab2" / "b.png")]
    assert table.pair_geometry.tolist() == ["", "shared"]
    independent = read_dataset("csv", path, "lst", pair_geometry="independent").records
    assert independent.pair_geometry is not None and independent.pair_geometry.tolist() == ["", "independent"]
    assert independent.sha256() != table.sha256()


def test_csv_list_without_pair_columns_hashes_as_before(tmp_path: Path) -> None:
    _pair_files(tmp_path, "a")
    path = _pair_list(tmp_path, ["img/a.png,lab/a.png,fog"], header="image,label,domain")
    table = read_dataset("csv", path, "lst").records
    assert not table.has_pairs
    expected = RecordTable.from_columns({"image": [str(tmp_path / "img/a.png")], "label": [str(tmp_path / "lab/a.png")],
                                         "dataset": "lst", "domain": "fog", "kind": "real", "source": "lst"})
    assert table.sha256() == expected.sha256()


@pytest.mark.parametrize("row, reason, field", [
    ("img/a.png,lab/a.png,fog,img2/none.png,lab2/a.png", "missing_image2", "image2"),
    ("img/a.png,lab/a.png,fog,img2/a.png,lab2/none.png", "missing_label2", "label2"),
    ("img/a.png,lab/a.png,fog,img2/c.png,lab2/c.png", "pair_size_mismatch", "image2"),
    ("img/a.png,lab/a.png,fog,img2/a.png,lab2/c.png", "pair_size_mismatch", "label2"),
    ("img/a.png,lab/a.png,fog,img2/bad.png,", "unreadable_image2", "image2"),
])
def test_bad_pairs_name_the_row_and_field_or_are_counted_skips(tmp_path: Path, row: str, reason: str,
                                                                field: str) -> None:
    _pair_files(tmp_path, "a")
    _pair_files(tmp_path, "c", shape2=(20, 40))
    (tmp_path / "img2" / "bad.png").write_bytes(b"not a png")
    path = _pair_list(tmp_path, ["img/c.png,lab/c.png,fog,,", row])
    with pytest.raises(ReaderError, match=rf"list\.csv: 1 row\(s\) with an invalid pair: row 3: field '{field}': "
                                          rf"{reason} "):
        read_dataset("csv", path, "lst")
    result = read_dataset("csv", path, "lst", on_invalid="skip")
    assert result.skipped == {reason: 1} and len(result.records) == 1
    assert result.records.image2 is not None and result.records.image2.tolist() == [""]


def test_independent_geometry_allows_a_second_image_of_another_size(tmp_path: Path) -> None:
    _pair_files(tmp_path, "c", shape2=(20, 40))
    path = _pair_list(tmp_path, ["img/c.png,lab/c.png,fog,img2/c.png,lab2/c.png"])
    with pytest.raises(ReaderError, match="pair_size_mismatch"):
        read_dataset("csv", path, "lst")
    assert len(read_dataset("csv", path, "lst", pair_geometry="independent").records) == 1


@pytest.mark.parametrize("header, match", [
    ("image,lable,domain", r"list\.csv: unknown column\(s\) 'lable'; the csv reader reads image, label, domain, "
                           "image2, label2"),
    ("image,label,domain,mask2", "unknown column"),
    ("image,label,label", "'label' more than once"),
    ("image,label,domain,label2", "'label2' without column 'image2'"),
])
def test_unknown_or_inconsistent_columns_are_errors(tmp_path: Path, header: str, match: str) -> None:
    _pair_files(tmp_path, "a")
    path = _pair_list(tmp_path, [",".join(["img/a.png", "lab/a.png", "fog", "x"][:len(header.split(","))])],
                      header=header)
    with pytest.raises(ReaderError, match=match):
        read_dataset("csv", path, "lst")


def test_declared_ignore_columns_are_read_past(tmp_path: Path) -> None:
    _pair_files(tmp_path, "a")
    path = _pair_list(tmp_path, ["img/a.png,lab/a.png,fog,berlin"], header="image,label,domain,city")
    assert len(read_dataset("csv", path, "lst", ignore_columns=["city"]).records) == 1


def test_a_row_longer_than_the_header_is_an_error(tmp_path: Path) -> None:
    _pair_files(tmp_path, "a")
    path = _pair_list(tmp_path, ["img/a.png,lab/a.png,fog,extra"], header="image,label,domain")
    with pytest.raises(ReaderError, match="row 2: 4 fields, header has 3"):
        read_dataset("csv", path, "lst")


def _paired_dataset(tmp_path: Path, second: str, spec: TransformSpec, geometry: str = "shared") -> SegmentationDataset:
    """Two rows: row 0 paired with a second view derived from its image (``second``), row 1 without a pair."""
    image, label = _scene(1, (48, 64))
    other, other_label = _scene(2, (48, 64))
    view = {"same": image, "inverted": 255 - image}[second]
    table = RecordTable.from_columns({
        "image": [_png(tmp_path / "a.png", image), _png(tmp_path / "b.png", other)],
        "label": [_png(tmp_path / "a_l.png", label), _png(tmp_path / "b_l.png", other_label)],
        "dataset": "d", "domain": "fog", "kind": "real", "source": "s",
        "image2": [_png(tmp_path / "a2.png", view), ""], "label2": [_png(tmp_path / "a2_l.png", label), ""],
        "pair_geometry": [geometry, ""]})
    return SegmentationDataset(table, CITYSCAPES19, spec, seed=3)


_GEOMETRY = TransformSpec(scale=(0.6, 1.4), crop=(24, 32), hflip=True, normalize=False)


def test_shared_geometry_crops_and_flips_the_pair_alike(tmp_path: Path) -> None:
    ds = _paired_dataset(tmp_path, "inverted", _GEOMETRY)
    crops = set()
    for draw in range(12):  # several draws: different scales, crops and flips, each applied to both views
        s = ds[0, draw]
        image, image2 = s["image"], s["image2"]
        assert isinstance(image, torch.Tensor) and isinstance(image2, torch.Tensor)
        assert bool(s["paired"]) and image.shape == image2.shape == (3, 24, 32)
        assert torch.equal(s["mask"], s["mask2"])
        # image2 is still 255 - image pixel for pixel (up to the resize's uint8 rounding); a crop or flip
        # that differed by one pixel would leave differences of the order of the random pixels' spread (~0.3)
        assert (image + image2 - 1).abs().max() <= 3 / 255
        alone = SegmentationDataset(ds.records.take(np.array([0, 1])), CITYSCAPES19, _GEOMETRY, seed=3)
        assert torch.equal(alone[0, draw]["image"], image)  # the first view is what it would be without a pair
        crops.add(float(image.sum()))
    assert len(crops) > 6  # the draws really differed


def test_shared_geometry_jitters_each_view_on_its_own(tmp_path: Path) -> None:
    ds = _paired_dataset(tmp_path, "same", TransformSpec(crop=(24, 32), hflip=True, jitter=0.4, normalize=False))
    s = ds[0, 0]
    assert torch.equal(s["mask"], s["mask2"]) and not torch.equal(s["image"], s["image2"])
    plain = _paired_dataset(tmp_path / "p", "same", TransformSpec(crop=(24, 32), hflip=True, normalize=False))[0, 0]
    assert torch.equal(plain["image"], plain["image2"])


def test_independent_geometry_draws_its_own_crop(tmp_path: Path) -> None:
    ds = _paired_dataset(tmp_path, "same", _GEOMETRY, geometry="independent")
    differ = [not torch.equal(ds[0, d]["mask"], ds[0, d]["mask2"]) for d in range(6)]
    assert any(differ)


def test_a_batch_mixing_paired_and_unpaired_samples_collates(tmp_path: Path) -> None:
    from torch.utils.data import default_collate

    ds = _paired_dataset(tmp_path, "same", TransformSpec(crop=(24, 32), normalize=False))
    batch = default_collate([ds[0], ds[1]])
    assert batch["paired"].tolist() == [True, False]
    assert batch["image2"].shape == batch["image"].shape and batch["mask2"].shape == batch["mask"].shape
    assert not batch["image2"][1].any() and bool((batch["mask2"][1] == 255).all())
    assert torch.equal(batch["mask2"][0], batch["mask"][0])


def test_a_table_without_pairs_gives_the_samples_it_always_gave(tmp_path: Path) -> None:
    ds = _paired_dataset(tmp_path, "same", _GEOMETRY)
    r = ds.records
    plain = RecordTable.from_columns({c: getattr(r, c) for c in ("image", "label", "dataset", "domain", "kind",
                                                                 "source", "origin")})
    sample = SegmentationDataset(plain, CITYSCAPES19, _GEOMETRY, seed=3)[1, 2]
    assert set(sample) == {"image", "mask", "domain", "kind", "source", "index"}
    assert torch.equal(sample["image"], ds[1, 2]["image"]) and torch.equal(sample["mask"], ds[1, 2]["mask"])


def test_a_shared_pair_of_different_sizes_fails_at_load_naming_both(tmp_path: Path) -> None:
    ds = _paired_dataset(tmp_path, "same", _GEOMETRY)
    _png(tmp_path / "a2.png", _scene(5, (40, 64))[0])
    _png(tmp_path / "a2_l.png", _scene(5, (40, 64))[1])
    with pytest.raises(ValueError, match=r"a\.png is 64x48 but its image2 .*a2\.png is 64x40"):
        ds[0]
