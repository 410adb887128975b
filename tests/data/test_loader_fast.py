"""The uint8 loader path gives the model the numbers the float path gave; the GPU-decode path draws the same."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from proveseg.config import ConfigError, DataConfig, RunConfig
from proveseg.data.collate import collate_samples
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.gpudecode import EncodedDataset, collate_encoded, decode_on_device
from proveseg.data.pipeline import build_training_data
from proveseg.data.transforms import TransformSpec, to_model_input


def _listing(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
        low.resize((80, 48), Image.Resampling.BICUBIC).save(root / f"{i}.jpg", quality=90)
        Image.fromarray(rng.integers(0, 19, (48, 80), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append((f"{i}.jpg", f"{i}.png", "clear_day"))
    with (root / "list.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "domain"), *rows])
    return root / "list.csv"


def _config(listing: Path, **transforms: object) -> DataConfig:
    return DataConfig.model_validate({"real": [{"name": "s", "reader": "csv", "root": str(listing)}],
                                      "batch_size": 3, "transforms": transforms})


def test_uint8_batches_normalised_on_the_device_equal_the_float_path(tmp_path: Path) -> None:
    data = build_training_data(_config(_listing(tmp_path), crop=[32, 48], scale=[0.75, 1.5], jitter=0.2))
    as_float = SegmentationDataset(data.records, data.class_set, TransformSpec(
        scale=(0.75, 1.5), crop=(32, 48), hflip=True, jitter=0.2), data.config.seed)
    for keys in data.loader(0, 2).batch_sampler:  # type: ignore[attr-defined]
        fast = collate_samples([data.dataset[k] for k in keys])
        slow = torch.utils.data.default_collate([as_float[k] for k in keys])
        assert fast["image"].dtype == torch.uint8 and fast["mask"].dtype == torch.uint8
        assert fast["image"].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(to_model_input(fast["image"]), slow["image"])
        assert torch.equal(fast["mask"].long(), slow["mask"])


def test_decoding_on_the_device_draws_the_same_samples_and_transforms(tmp_path: Path) -> None:
    data = build_training_data(_config(_listing(tmp_path), crop=[32, 48], hflip=True))
    encoded = EncodedDataset(data.dataset)
    for keys in data.loader(0, 2).batch_sampler:  # type: ignore[attr-defined]
        raw = collate_encoded([encoded[k] for k in keys])
        assert all(image.dim() == 1 for image in raw["image"])  # JPEG bytes, not pixels
        # torchvision's CPU decoder stands in for nvJPEG here; both go through libjpeg-compatible IDCTs
        on_device = decode_on_device(raw, data.dataset.transform, data.dataset.seed, torch.device("cpu"))
        reference = collate_samples([data.dataset[k] for k in keys])
        assert torch.equal(on_device["image"], reference["image"])
        assert torch.equal(on_device["mask"], reference["mask"])
        assert torch.equal(on_device["index"], reference["index"])


def test_gpu_options_are_refused_where_they_cannot_run(tmp_path: Path) -> None:
    from proveseg.train.loop import _check_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: these options are valid here")
    base = {"output_dir": str(tmp_path / "run"), "model": {"name": "unet_micro"},
            "data": {"real": [{"name": "s", "reader": "csv", "root": str(tmp_path / "list.csv")}]},
            "train": {"device": "cpu"}}
    gpu_decode = RunConfig.model_validate({**base, "data": {**base["data"], "decode_device": "cuda"}})
    with pytest.raises(ConfigError, match="decode_device"):
        _check_device(gpu_decode)
    fp16 = RunConfig.model_validate({**base, "train": {"device": "cpu", "amp": "fp16"}})
    with pytest.raises(ConfigError, match="fp16"):
        _check_device(fp16)
    _check_device(RunConfig.model_validate({**base, "train": {"device": "cpu", "amp": "bf16", "channels_last": True}}))


def test_decoding_on_the_device_maps_labels_through_the_sources_label_map(tmp_path: Path) -> None:
    listing = _listing(tmp_path)
    (tmp_path / "map.csv").write_text("source,target\n" + "".join(f"{i},{18 - i}\n" for i in range(19)))
    cfg = DataConfig.model_validate({"real": [{"name": "s", "reader": "csv", "root": str(listing),
                                               "label_map": str(tmp_path / "map.csv")}], "batch_size": 3})
    data = build_training_data(cfg)
    encoded = EncodedDataset(data.dataset)
    raw_label = np.asarray(Image.open(tmp_path / f"{Path(str(data.records.label[0])).stem}.png"))
    mapped = encoded[(0, 0)]["mask"]
    assert torch.equal(mapped, torch.from_numpy(18 - raw_label))  # the map, not the raw ids
    assert torch.equal(mapped, torch.from_numpy(data.dataset.load(0)[1]))  # as the CPU path decodes it
