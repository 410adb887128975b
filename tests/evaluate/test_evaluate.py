"""``proveseg evaluate`` on checkpoints of a tiny model saved by the test, and checkpoint safety."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from proveseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from proveseg.cli import main
from proveseg.config import EvalConfig
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.decode import decode_label
from proveseg.evaluate.inference import InferenceSpec
from proveseg.evaluate.metrics import mean_iou
from proveseg.evaluate.runner import evaluate_model, load_split, read_confusion
from proveseg.models import PixelLogitModel, build_model, build_network
from proveseg.readers import FolderSource


def _config(root: Path) -> dict:
    test = [{"name": "synthetic", "root": str(root / "test")}]
    return {"name": "t", "data": {"real": [{"name": "synthetic", "root": str(root / "train")}]},
            "evaluation": {"test": test, "val": test, "n_boot": 100, "batch_size": 3}}


@pytest.fixture()
def run_dir(tiny_benchmark: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_network("unet_micro", 19)
    save_checkpoint(tmp_path / "run/checkpoints/best.pt", {
        "model": {"name": "unet_micro", "num_classes": 19, "class_set": "cityscapes19"},
        "state_dict": model.state_dict(), "config": yaml.safe_dump(_config(tiny_benchmark)), "iteration": 7})
    return tmp_path / "run"


def test_evaluate_writes_the_contract_files(run_dir: Path, tiny_benchmark: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    assert "per domain" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("mIoU", "aAcc", "per_class", "per_domain", "n_images", "ci95", "iteration"):
        assert key in metrics
    assert metrics["n_images"] == 2 * 7 and metrics["iteration"] == 7
    assert set(metrics["per_domain"]) == {"clear_day", "cloudy", "dawn_dusk", "fog", "night", "rainy", "snowy"}
    result = read_confusion(run_dir / "confusion.npz")
    assert result.per_image.shape == (14, 19, 19)
    assert metrics["mIoU"] == pytest.approx(mean_iou(result.per_image.sum(0)))
    labeled = sum(int((decode_label(str(p), CITYSCAPES19) != 255).sum())
                  for p in sorted(tiny_benchmark.glob("test/labels/*/*.png")))
    assert result.per_image.sum() == labeled  # every labeled test pixel counted exactly once


def test_evaluate_json_and_checkpoint_target(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_dir / "elsewhere"
    assert main(["evaluate", str(run_dir / "checkpoints/best.pt"), "--out", str(out), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["model"] == "unet_micro" and (out / "confusion.npz").exists()


def test_sliding_window_covering_the_image_equals_whole_and_flip_is_symmetric(tiny_benchmark: Path) -> None:
    torch.manual_seed(0)
    model = build_model("unet_micro", 19).eval()
    x = torch.randn(1, 3, 64, 128)
    whole = model.predict(x, InferenceSpec())
    slide = model.predict(x, InferenceSpec("slide", (64, 128), (32, 64)))
    assert torch.allclose(whole, slide, atol=1e-5)
    tiled = model.predict(x, InferenceSpec("slide", (64, 64), (64, 64)))
    assert tiled.shape == whole.shape
    flipped = model.predict(x.flip(-1), InferenceSpec(flip=True))
    assert torch.allclose(flipped.flip(-1), model.predict(x, InferenceSpec(flip=True)), atol=1e-5)


def test_perfect_predictions_score_one(tiny_benchmark: Path) -> None:
    """An oracle model that returns the label as logits: every metric at its maximum."""
    records = load_split([FolderSource(name="s", root=tiny_benchmark / "test", domains=["fog"])])
    labels = {i: torch.from_numpy(decode_label(p, CITYSCAPES19).astype(np.int64)) for i, p in enumerate(records.label)}

    class Oracle(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = []
            for _ in range(len(x)):
                lab = labels[Oracle.calls].clone()
                Oracle.calls += 1
                lab[lab == 255] = 0
                out.append(torch.nn.functional.one_hot(lab, 19).permute(2, 0, 1).float())
            return torch.stack(out)

    result = evaluate_model(PixelLogitModel("oracle", Oracle(), 19), records, CITYSCAPES19, EvalConfig(batch_size=1))
    conf = result.per_image.sum(0)
    assert mean_iou(conf) == 1.0 and np.trace(conf) == conf.sum()


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path("/tmp/proveseg-pwned").write_text, ("pwned",))


def test_a_pickle_payload_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pt"
    with bad.open("wb") as fh:
        pickle.dump({"format": 1, "model": _Payload()}, fh, protocol=2)
    Path("/tmp/proveseg-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        load_checkpoint(bad)
    assert not Path("/tmp/proveseg-pwned").exists()
