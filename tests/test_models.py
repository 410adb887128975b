"""Every registry entry builds and returns full-resolution logits; unknown names list the valid ones."""

from __future__ import annotations

import pytest
import torch

from proveseg.models import MODELS, build_model


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 7, 64, 96)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="valid: pspnet_r50, deeplabv3plus_r50"):
        build_model("resnet9000", 19)
    with pytest.raises(ValueError, match="encoder_weights"):
        build_model("unet_tiny", 19, "instagram")


def test_tiny_models_train_every_parameter() -> None:
    for name in ("unet_tiny", "unet_micro"):
        model = build_model(name, 19)
        model(torch.randn(2, 3, 64, 64)).sum().backward()
        assert all(p.grad is not None for p in model.parameters()), name
