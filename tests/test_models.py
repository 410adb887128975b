"""Every registry entry builds, trains a step and infers at full resolution; unknown names list the valid ones."""

from __future__ import annotations

import pytest
import torch

from proveseg.evaluate.inference import InferenceSpec
from proveseg.models import MODELS, build_model, build_network
from tests.models.conftest import _one_thread  # noqa: F401  (autouse: one torch thread on a shared CPU)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_a_step_and_infers_whole_and_slide(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 5)
    params = [p for p in model.network.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params[:4]] + [params[-1].detach().clone()]
    optimizer = torch.optim.SGD(params, lr=1e-3)
    images, masks = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    masks[1, :16] = 255
    model.network.train()
    outputs = model.forward(model.network, images)
    loss, parts = model.loss(outputs, masks)
    assert torch.isfinite(loss) and parts and all(v == v for v in parts.values())
    loss.backward()
    unused = [n for n, p in model.network.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without a gradient (DDP refuses them): {unused[:3]}"
    optimizer.step()
    after = [*params[:4], params[-1]]
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True)), "no weight moved"
    assert model.pixel_logits(outputs).shape == (2, 5, 64, 64)
    model.eval()
    odd = torch.randn(1, 3, 72, 100)  # not a multiple of 32: padded inside, cropped back
    for spec in (InferenceSpec(), InferenceSpec("slide", (72, 64), (72, 36))):  # two overlapping windows
        scores = model.predict(odd, spec)
        assert scores.shape == (1, 5, 72, 100) and bool(torch.isfinite(scores).all()), spec


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="valid: pspnet_r50, deeplabv3plus_r50"):
        build_model("resnet9000", 19)
    with pytest.raises(ValueError, match="encoder_weights"):
        build_model("unet_tiny", 19, "instagram")
    with pytest.raises(ValueError, match=r"no downloadable ImageNet weights: give .* model\.weights"):
        build_model("segnext_mscan-t", 19, "imagenet")  # refused before any download is tried


def test_tiny_models_train_every_parameter() -> None:
    for name in ("unet_tiny", "unet_micro"):
        model = build_network(name, 19)
        model(torch.randn(2, 3, 64, 64)).sum().backward()
        assert all(p.grad is not None for p in model.parameters()), name


def test_the_adapter_owns_loss_and_inference() -> None:
    torch.manual_seed(0)
    model = build_model("unet_micro", 5)
    images, masks = torch.randn(3, 3, 32, 32), torch.randint(0, 5, (3, 32, 32))
    masks[0, :4] = 255
    outputs = model.forward(model.network, images)
    labeled, rest = model.split(outputs, 2)
    loss, parts = model.loss(labeled, masks[:2])
    expected = torch.nn.functional.cross_entropy(outputs[:2], masks[:2], ignore_index=255)
    assert torch.allclose(loss, expected) and set(parts) == {"ce"} and rest.shape[0] == 1
    none_confident = torch.full((1, 32, 32), 255)
    assert float(model.unsupervised_loss(rest, none_confident).detach()) == 0.0
    model.eval()
    odd = torch.randn(1, 3, 45, 70)  # not a multiple of the stride: padded inside, cropped back
    assert model.predict(odd, InferenceSpec()).shape == (1, 5, 45, 70)
    assert model.predict(odd, InferenceSpec("slide", (32, 32), (16, 16), flip=True)).shape == (1, 5, 45, 70)
