"""Bad data gets a clear error naming the file, row and field: never silently wrong data, never a traceback.

Each test feeds one kind of bad input (generated here, tiny) to manifest validation and/or the
decoders the training loop uses.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.cli import main
from proveseg.data.classes import CITYSCAPES19, IGNORE_INDEX
from proveseg.data.decode import LabelDecodeError, decode_image, decode_label, image_size, load_image
from proveseg.data.imageheader import HeaderError
from proveseg.data.manifest import MANIFEST_COLUMNS, ROOT_MARKER, ManifestError, validate_manifest
from proveseg.data.pipeline import preflight_labels
from proveseg.data.records import RecordTable

H, W = 32, 48


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root (``data/``) with one good generated image, original and label (32x48), and a folder
    ``outside/`` beside it that is not under the root."""
    data = tmp_path / "data"
    for sub in ("orig", "labels", "gen", "manifests"):
        (data / sub).mkdir(parents=True)
    (data / ROOT_MARKER).write_text("")
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(data / "orig/a.jpg")
    Image.fromarray(rgb).save(data / "gen/a.jpg")
    Image.fromarray(np.full((H, W), 3, np.uint8)).save(data / "labels/a.png")
    (tmp_path / "outside").mkdir()
    Image.fromarray(rgb).save(tmp_path / "outside/secret.jpg")
    return data


def _row(**over: str) -> dict[str, str]:
    row = {"generated_path": "../gen/a.jpg", "original_path": "../orig/a.jpg", "label_path": "../labels/a.png",
           "dataset": "d", "source_domain": "clear_day", "target_domain": "fog"}
    return {**row, **over}


def _write(root: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    path = root / "manifests" / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns or list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rejected(path: Path, **kw: object) -> list[tuple[int, str, str]]:
    return validate_manifest(path, **kw).rejected_rows  # type: ignore[arg-type]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with a tiny IDAT: nothing big is allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def _bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming ``width`` x ``height`` 24-bit pixels and no pixel data (read by Pillow's fallback)."""
    return (b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0))


def _colour_mask(ids: np.ndarray, shift: int = 0) -> np.ndarray:
    """RGB colour coding of ``ids`` through the cityscapes palette, each channel moved by ``shift`` (255 = black)."""
    lut = np.zeros((256, 3), np.int64)
    lut[:19] = np.asarray(CITYSCAPES19.palette) + shift
    return np.clip(lut[ids], 0, 255).astype(np.uint8)


# 1. RGB colour-coded labels whose colours are off the palette


def test_rgb_label_with_colours_off_the_palette_names_the_file_and_colours(tmp_path: Path) -> None:
    ids = np.zeros((H, W), np.uint8)
    ids[:, 16:] = 13  # car
    ids[:4] = 255  # black: the ignore colour of palette_bytes, which stays allowed
    good, off = tmp_path / "good.png", tmp_path / "off.png"
    Image.fromarray(_colour_mask(ids)).save(good)
    assert np.array_equal(decode_label(str(good), CITYSCAPES19), ids)
    Image.fromarray(_colour_mask(ids, shift=1)).save(off)  # every class colour off by one (black stays black)
    with pytest.raises(LabelDecodeError) as info:
        decode_label(str(off), CITYSCAPES19)
    message = str(info.value)
    assert message.startswith(f"{off}: 2 colour(s) in {(H - 4) * W} pixels are not in the palette of cityscapes19")
    assert "(1, 1, 143): 896 px" in message and "(129, 65, 129): 448 px" in message  # most pixels first
    with Image.open(off) as im:
        lenient = CITYSCAPES19.decode_rgb(np.asarray(im.convert("RGB")), strict=False)
    assert (lenient == IGNORE_INDEX).all()  # what every decode silently did before


def test_grey_rgb_label_hints_at_ids_stored_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.repeat(np.full((H, W, 1), 7, np.uint8), 3, axis=2)).save(path)
    with pytest.raises(LabelDecodeError, match=r"\(7, 7, 7\): 1536 px; all are grey: class ids stored as RGB"):
        decode_label(str(path), CITYSCAPES19)


def test_off_palette_rgb_label_is_rejected_by_deep_validation_and_preflight(root: Path,
                                                                            capsys: pytest.CaptureFixture[str],
                                                                            ) -> None:
    Image.fromarray(_colour_mask(np.full((H, W), 2, np.uint8), shift=1)).save(root / "labels/off.png")
    path = _write(root, [_row(label_path="../labels/off.png")])
    assert _rejected(path) == []  # headers cannot see colours
    assert main(["manifest", "validate", str(path), "--deep", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["datasets"]["d"]["rejected"] == {"label_out_of_range": 1}
    assert "off.png: 1 colour(s) in 1536 pixels" in out["datasets"]["d"]["examples"][0]["detail"]
    records = RecordTable.from_columns({"image": [str(root / "gen/a.jpg")], "label": [str(root / "labels/off.png")],
                                       "dataset": "d", "domain": "fog", "kind": "real", "source": "d"}, n=1)
    with pytest.raises(LabelDecodeError, match=r"labels/off\.png: 1 colour\(s\)"):
        preflight_labels(records, CITYSCAPES19)


# 2. Cityscapes label ids the table does not define


def test_label_ids_outside_the_cityscapes_table_name_the_file(tmp_path: Path) -> None:
    ids = np.full((H, W), 26, np.uint8)  # car
    ids[0, :4] = [0, 3, 33, 255]  # void ids map to ignore; 33 is bicycle
    good = tmp_path / "a_gtFine_labelIds.png"
    Image.fromarray(ids).save(good)
    mask = decode_label(str(good), CITYSCAPES19)
    assert mask[0, :4].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 18, IGNORE_INDEX] and mask[5, 5] == 13
    ids[1, :3] = [34, 40, 254]
    bad = tmp_path / "b_gtFine_labelIds.png"
    Image.fromarray(ids).save(bad)
    with pytest.raises(LabelDecodeError, match=rf"{bad}: Cityscapes label ids must be 0\.\.33 or 255; "
                                               r"found 34: 1 px, 40: 1 px, 254: 1 px"):
        decode_label(str(bad), CITYSCAPES19)


# 3. Manifest structure: repeated rows, repeated columns, extra columns


def test_a_repeated_row_is_rejected_naming_the_earlier_row(root: Path) -> None:
    rows = [_row(), _row(target_domain="night"), _row(source_domain="dawn"), _row(generated_path="../gen/./a.jpg"),
            _row(target_domain="night")]
    report = validate_manifest(_write(root, rows))
    # the key is the generated image itself: under another target or source domain it would still count twice
    assert [(n, why) for n, why, _ in report.rejected_rows] == [(3, "duplicate_row"), (4, "duplicate_row"),
                                                               (5, "duplicate_row"), (6, "duplicate_row")]
    details = [d for _, _, d in report.rejected_rows]
    assert details == ["same generated image as row 2, with another target_domain",
                       "same generated image as row 2, with another source_domain", "same generated image as row 2",
                       "same generated image as row 2, with another target_domain"]
    assert len(report.records) == 1 and report.datasets["d"].valid == 1


def test_rows_repeated_after_filtering_and_rejection_only_count_live_rows(root: Path) -> None:
    rows = [_row(source_domain=""), _row(), _row(dataset="other"), _row()]
    report = validate_manifest(_write(root, rows), datasets=["d"])
    assert [(n, why) for n, why, _ in report.rejected_rows] == [(2, "empty_field"), (5, "duplicate_row")]
    assert report.rejected_rows[1][2].endswith("as row 3")


@pytest.mark.parametrize("header", [
    "generated_path,original_path,label_path,dataset,source_domain,target_domain,label_path",
    '"generated_path","original_path","label_path","dataset","source_domain","target_domain"," label_path"',
])
def test_a_repeated_column_name_is_an_error_naming_it(root: Path, header: str) -> None:
    path = root / "manifests/m.csv"
    path.write_text(header + "\n../gen/a.jpg,../orig/a.jpg,../labels/a.png,d,clear_day,fog,../labels/b.png\n")
    with pytest.raises(ManifestError, match=rf"{path}: header names column 'label_path' 2 times \(columns 3, 7\)"):
        validate_manifest(path)


def test_extra_columns_are_reported_in_json_and_text(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    columns = ["prompt", *MANIFEST_COLUMNS, "seed"]
    path = _write(root, [{**_row(), "prompt": "fog", "seed": "1"}], columns)
    report = validate_manifest(path)
    assert report.extra_columns == ["prompt", "seed"] and report.n_invalid == 0
    assert main(["manifest", "validate", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["extra_columns"] == ["prompt", "seed"]
    assert out["datasets"] == {"d": {"rows": 1, "found": 1, "valid": 1, "rejected": {}, "examples": []}}
    assert main(["manifest", "validate", str(path)]) == 0
    assert "extra columns (kept, ignored): prompt, seed" in capsys.readouterr().out
    assert validate_manifest(_write(root, [_row()])).as_dict()["extra_columns"] == []


def test_a_header_with_no_rows_is_an_error(root: Path) -> None:
    path = _write(root, [])
    with pytest.raises(ManifestError, match=rf"{path}: a header but no rows"):
        validate_manifest(path)


def test_a_manifest_path_that_is_a_folder_is_an_error(root: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifests: cannot read \(Is a directory\)"):
        validate_manifest(root / "manifests")


def test_a_byte_order_mark_and_spaces_in_the_header_are_tolerated(root: Path) -> None:
    path = root / "manifests/excel.csv"
    text = ", ".join(MANIFEST_COLUMNS) + "\n" + ",".join(_row().values()) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = validate_manifest(path)
    assert report.n_invalid == 0 and len(report.records) == 1 and report.extra_columns == []


# 4. Symlinks that leave the data root


def test_a_symlinked_folder_leaving_the_root_is_rejected(root: Path) -> None:
    (root / "gen_link").symlink_to(root.parent / "outside", target_is_directory=True)
    path = _write(root, [_row(generated_path="../gen_link/secret.jpg")])
    for check_files in (False, True):
        [(row, why, detail)] = _rejected(path, check_files=check_files)
        assert (row, why) == (2, "path_escapes_root")
        assert detail == (f"generated_path='../gen_link/secret.jpg' leads through a symlink to "
                          f"{root.parent / 'outside/secret.jpg'}, outside the root {root}")


def test_a_symlinked_file_leaving_the_root_is_rejected_and_one_inside_is_accepted(root: Path) -> None:
    (root / "gen/secret.jpg").symlink_to(root.parent / "outside/secret.jpg")
    (root / "gen/alias.jpg").symlink_to(root / "orig/a.jpg")
    (root / "labels/alias.png").symlink_to("a.png")  # relative, inside
    path = _write(root, [_row(generated_path="../gen/secret.jpg"),
                         _row(generated_path="../gen/alias.jpg", label_path="../labels/alias.png")])
    for check_files in (False, True):
        [(row, why, detail)] = _rejected(path, check_files=check_files)
        assert (row, why) == (2, "path_escapes_root") and "outside/secret.jpg, outside the root" in detail


def test_a_symlink_in_an_absolute_allowed_path_is_not_judged_by_the_root(root: Path) -> None:
    (root / "gen/secret.jpg").symlink_to(root.parent / "outside/secret.jpg")
    path = _write(root, [_row(generated_path=str(root / "gen/secret.jpg"))])
    assert _rejected(path, allow_absolute=True) == []


# 5. The original (the noise control's shape) must match the label


def test_an_original_whose_size_differs_from_the_label_is_rejected(root: Path) -> None:
    Image.fromarray(np.zeros((H, W - 8, 3), np.uint8)).save(root / "orig/narrow.jpg")
    path = _write(root, [_row(original_path="../orig/narrow.jpg")])
    [(row, why, detail)] = _rejected(path)
    assert (row, why) == (2, "size_mismatch")
    assert detail == (f"original 40x32 ({root / 'orig/narrow.jpg'}), label 48x32 ({root / 'labels/a.png'}): "
                      "the noise control draws noise of the original's size")
    assert _rejected(path, check_files=False) == []  # existence only reads no header


def test_an_exif_rotated_original_matches_by_its_displayed_size(root: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored W x H rotated: displayed H x W
    Image.fromarray(np.zeros((W, H, 3), np.uint8)).save(root / "orig/rot.jpg", exif=exif)
    assert image_size(str(root / "orig/rot.jpg")) == (H, W)
    assert _rejected(_write(root, [_row(original_path="../orig/rot.jpg")])) == []


def test_an_unreadable_original_is_rejected_naming_it(root: Path) -> None:
    (root / "orig/empty.jpg").write_bytes(b"")
    [(_, why, detail)] = _rejected(_write(root, [_row(original_path="../orig/empty.jpg")]))
    assert (why, detail) == ("unreadable_image", f"original {root / 'orig/empty.jpg'}: empty file")
    with pytest.raises(HeaderError, match=rf"{root / 'orig/empty.jpg'}: empty file"):
        image_size(str(root / "orig/empty.jpg"))  # what the noise control reads


# 6. Decompression bombs


def test_a_decompression_bomb_is_unreadable_in_validation_and_names_the_file_when_loaded(root: Path) -> None:
    (root / "gen/bomb.png").write_bytes(_png_claiming(20_000, 20_000))
    (root / "labels/bomb.png").write_bytes(_png_claiming(20_000, 20_000))
    path = _write(root, [_row(generated_path="../gen/bomb.png"), _row(label_path="../labels/bomb.png")])
    for deep in (False, True):
        rejected = _rejected(path, deep=deep, class_set=CITYSCAPES19)
        assert [why for _, why, _ in rejected] == ["unreadable_image", "unreadable_label"]
        assert rejected[0][2].startswith(f"{root / 'gen/bomb.png'}: PNG header claims 20000x20000 = 400,000,000 "
                                         "pixels, over Pillow's decompression-bomb limit")
    with pytest.raises(OSError, match=rf"{root / 'gen/bomb.png'}: cannot decode image: .*decompression bomb"):
        load_image(str(root / "gen/bomb.png"))
    with pytest.raises(OSError, match=rf"{root / 'labels/bomb.png'}: cannot decode image"):
        decode_label(str(root / "labels/bomb.png"), CITYSCAPES19)


def test_a_bomb_in_a_format_read_by_pillow_is_unreadable_not_a_traceback(root: Path) -> None:
    (root / "gen/bomb.bmp").write_bytes(_bmp_claiming(20_000, 20_000))
    [(_, why, detail)] = _rejected(_write(root, [_row(generated_path="../gen/bomb.bmp")]))
    assert why == "unreadable_image" and "decompression bomb" in detail
    with pytest.raises(OSError, match=r"bomb\.bmp: cannot decode image"):
        decode_image(str(root / "gen/bomb.bmp"))


def test_an_image_of_size_zero_is_unreadable(root: Path) -> None:
    (root / "gen/zero.png").write_bytes(_png_claiming(0, 0))
    (root / "labels/zero.png").write_bytes(_png_claiming(0, 0))
    [(_, why, detail)] = _rejected(_write(root, [_row(generated_path="../gen/zero.png",
                                                      label_path="../labels/zero.png")]))
    assert (why, detail) == ("unreadable_image", f"{root / 'gen/zero.png'}: PNG header gives an empty size 0x0")


# 7. More of the family: bit depths, modes, formats, special files


def test_a_16_bit_label_above_255_and_a_32_bit_label_below_0_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.array([[300, 2]], np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(LabelDecodeError, match=r"wide\.png: label value 300 does not fit 0\.\.255"):
        decode_label(str(tmp_path / "wide.png"), CITYSCAPES19)
    Image.fromarray(np.array([[-1, 2]], np.int32)).save(tmp_path / "neg.tif")  # -1 would wrap to 255
    with pytest.raises(LabelDecodeError, match=r"neg\.tif: label value -1 does not fit 0\.\.255"):
        decode_label(str(tmp_path / "neg.tif"), None)


def test_a_16_bit_image_is_an_error_not_clipped_to_white(root: Path) -> None:
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(root / "gen/wide.png")
    with pytest.raises(OSError, match=r"wide\.png: image mode 'I;16' has more than 8 bits per pixel"):
        load_image(str(root / "gen/wide.png"))
    [(_, why, _)] = _rejected(_write(root, [_row(generated_path="../gen/wide.png")]), deep=True,
                              class_set=CITYSCAPES19)
    assert why == "unreadable_image"


def test_label_modes_that_are_no_class_id_mask_name_the_file_and_cmyk_images_decode(root: Path) -> None:
    Image.new("LA", (W, H)).save(root / "labels/la.png")
    with pytest.raises(LabelDecodeError, match=r"la\.png: label image mode 'LA' is not a class-id mask"):
        decode_label(str(root / "labels/la.png"), CITYSCAPES19)
    [(_, why, _)] = _rejected(_write(root, [_row(label_path="../labels/la.png")]), deep=True, class_set=CITYSCAPES19)
    assert why == "label_out_of_range"
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(root / "gen/cmyk.jpg")
    assert decode_image(str(root / "gen/cmyk.jpg")).shape == (H, W, 3)
    assert _rejected(_write(root, [_row(generated_path="../gen/cmyk.jpg")]), deep=True, class_set=CITYSCAPES19) == []


def test_a_jpeg_label_is_refused(root: Path) -> None:
    Image.fromarray(np.full((H, W), 3, np.uint8)).save(root / "labels/lossy.jpg")
    [(_, why, detail)] = _rejected(_write(root, [_row(label_path="../labels/lossy.jpg")]))
    assert why == "unreadable_label" and detail.startswith(f"{root / 'labels/lossy.jpg'}: a JPEG label")
    with pytest.raises(LabelDecodeError, match=r"lossy\.jpg: a JPEG label"):
        decode_label(str(root / "labels/lossy.jpg"), CITYSCAPES19)


def test_a_fifo_named_like_an_image_is_unreadable_without_blocking(root: Path) -> None:
    fifo = root / "gen/pipe.jpg"
    os.mkfifo(fifo)
    path = _write(root, [_row(generated_path="../gen/pipe.jpg")])
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(_rejected(path)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("reading the header of a FIFO blocked")
    assert result == [[(2, "unreadable_image", f"{fifo}: not a regular file")]]


def test_the_tiny_benchmark_stays_valid_and_a_copy_with_a_repeated_row_does_not(tiny_benchmark: Path,
                                                                               tmp_path: Path) -> None:
    manifest = tiny_benchmark / "generated/faithful/manifest.csv"
    report = validate_manifest(manifest, deep=True, class_set=CITYSCAPES19)
    assert report.n_invalid == 0 and report.extra_columns == []
    shutil.copytree(tiny_benchmark, tmp_path / "bench")
    copy = tmp_path / "bench/generated/faithful/manifest.csv"
    lines = copy.read_text().splitlines()
    copy.write_text("\n".join([*lines, lines[3]]) + "\n")
    [(row, why, detail)] = validate_manifest(copy).rejected_rows
    assert (row, why) == (len(lines) + 1, "duplicate_row") and detail.endswith("as row 4")


def test_a_nul_byte_in_a_path_is_a_missing_file_not_a_traceback(root: Path) -> None:
    path = _write(root, [_row(generated_path="../gen\x00x/a.jpg"), _row(label_path="../labels/a\x00.png")])
    assert [why for _, why, _ in _rejected(path)] == ["missing_generated", "missing_label"]


def test_a_utf16_manifest_says_so(root: Path) -> None:
    path = root / "manifests/utf16.csv"
    path.write_text(",".join(MANIFEST_COLUMNS) + "\n" + ",".join(_row().values()) + "\n", encoding="utf-16")
    with pytest.raises(ManifestError, match=rf"{path}: not valid UTF-8 .*; it starts like UTF-16: save it as UTF-8"):
        validate_manifest(path)
