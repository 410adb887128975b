"""Local weights files (.pth and .safetensors): loaded, placed, reported; bad files named; batch-1 refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from proveseg.config import ConfigError, parse_run_config
from proveseg.models import build_model, build_network
from proveseg.models.registry import MODELS, batch_problem
from proveseg.models.weights import WeightsError, load_weights


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_whole_model_file_loads(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = build_network("unet_micro", 5)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": source.state_dict(), "iteration": 3}, path)  # a checkpoint wrapping it
    else:
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    assert not _same(source, build_network("unet_micro", 5))
    model = build_model("unet_micro", 5, weights=path)
    assert _same(source, model.network)


def test_an_encoder_only_file_loads_under_the_encoder_and_reports_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    source = build_network("unet_micro", 5)
    state = {k: v for k, v in source.encoder.state_dict().items() if not k.startswith("layer2")}
    state["projection.weight"] = torch.zeros(2, 2)  # not in the network
    path = tmp_path / "encoder.pth"
    torch.save(state, path)
    target = build_network("unet_micro", 5)
    with caplog.at_level(logging.WARNING):
        report = load_weights(target, path)
    assert report.prefix == "encoder." and report.loaded == len(state) - 1
    assert report.unexpected == ["encoder.projection.weight"]
    assert report.missing and all(k.startswith("encoder.layer2.") for k in report.missing)
    assert torch.equal(target.encoder.conv1.weight, source.encoder.conv1.weight)
    assert str(path) in caplog.text and "missing" in caplog.text and "unexpected" in caplog.text


def test_bad_weights_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    seven = tmp_path / "seven_classes.pth"
    torch.save(build_network("unet_micro", 7).state_dict(), seven)
    with pytest.raises(WeightsError, match=r"seven_classes.pth: 2 tensor\(s\) have another shape.*\(7, 8, 3, 3\)"):
        build_model("unet_micro", 5, weights=seven)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(WeightsError, match=r"garbage\.safetensors: cannot read weights"):
        build_model("unet_micro", 5, weights=garbage)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match=r"other\.pth: none of its 1 keys"):
        build_model("unet_micro", 5, weights=other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": build_network("unet_micro", 5).state_dict(), "hook": Path("x")}, pickled)
    with pytest.raises(WeightsError, match=r"pickled\.pth: cannot read weights"):  # weights_only=True refuses it
        build_model("unet_micro", 5, weights=pickled)


def _run_yaml(model: str, batch: int, extra: str = "") -> str:
    return (f"data:\n  real: [{{name: r, root: /nonexistent, domains: [clear_day]}}]\n  batch_size: {batch}\n"
            f"model:\n  name: {model}\n{extra}")


def test_config_refuses_a_missing_weights_file_or_an_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=f"weights file {missing} does not exist"):
        parse_run_config(_run_yaml("unet_micro", 2, f"  weights: {missing}\n"), "run.yaml")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"must end in one of \.pth"):
        parse_run_config(_run_yaml("unet_micro", 2, f"  weights: {onnx}\n"), "run.yaml")
    ok = tmp_path / "ok.safetensors"
    ok.write_bytes(b"")
    assert parse_run_config(_run_yaml("unet_micro", 2, f"  weights: {ok}\n")).model.weights == ok


def test_a_batch_of_one_is_refused_for_models_that_cannot_train_on_it() -> None:
    refused = sorted(name for name, entry in MODELS.items() if entry.min_batch_per_rank > 1)
    assert refused == ["deeplabv3plus_r50", "upernet_r50"]
    with pytest.raises(ConfigError, match=r"model 'upernet_r50' cannot train on a per-rank batch of 1 .* "
                                          r"set data.batch_size to 2 or more"):
        parse_run_config(_run_yaml("upernet_r50", 1), "run.yaml")
    assert parse_run_config(_run_yaml("pspnet_r50", 1)).data.batch_size == 1
    assert parse_run_config(_run_yaml("upernet_r50", 2)).data.batch_size == 2
    assert batch_problem("deeplabv3plus_r50", 2) is None and batch_problem("segnext_mscan-b", 1) is None


@pytest.mark.parametrize("name", ["deeplabv3plus_r50", "upernet_r50", "pspnet_r50"])
def test_the_flag_matches_what_torch_does_at_batch_one(name: str) -> None:
    model = build_model(name, 3)
    model.network.train()
    if MODELS[name].min_batch_per_rank > 1:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model.forward(model.network, torch.randn(1, 3, 64, 64))
    else:
        assert model.forward(model.network, torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_the_trainer_builds_its_model_with_the_configured_weights(tmp_path: Path) -> None:
    from proveseg.data.classes import CITYSCAPES19
    from proveseg.train.state import TrainState
    from tests.train.conftest import make_config

    torch.manual_seed(0)
    source = build_network("unet_micro", CITYSCAPES19.num_classes)
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = make_config(tmp_path / "bench", tmp_path / "run")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": path})})
    state = TrainState(cfg, CITYSCAPES19, 4, torch.device("cpu"), {})
    assert _same(source, state.model.network)
