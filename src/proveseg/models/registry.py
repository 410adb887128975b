"""Model registry: one plain dict, name -> entry (a network builder and the adapter that trains it).

``encoder_weights=None`` (the default) never downloads; ``"imagenet"`` uses smp's own downloader
when a user asks for it. Tiny models exist for CPU tests and the demo. Adding a model is one line
in :data:`MODELS` (plus a module of its own when it needs a new adapter or network code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from proveseg.config import LossConfig
from proveseg.models.adapter import PixelLogitModel

__all__ = ["MODELS", "ModelEntry", "build_model", "build_network"]

Builder = Callable[[int, str | None], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """How to build a registered model's network, and which adapter trains and runs it."""

    build: Builder
    adapter: type[PixelLogitModel] = PixelLogitModel


def _smp(arch: str, encoder: str, **kwargs: object) -> ModelEntry:
    def build(num_classes: int, encoder_weights: str | None) -> nn.Module:
        import segmentation_models_pytorch as smp  # seconds of timm/torchvision imports: paid by building a model

        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights, classes=num_classes,
                                 **kwargs)
        depth = kwargs.get("encoder_depth")
        if isinstance(depth, int) and encoder.startswith("resnet"):
            # smp keeps the ResNet stages past encoder_depth although forward never runs them; drop them so
            # the optimizer, EMA and DDP (which rejects unused parameters) see only what is trained.
            for stage in range(depth, 5):
                setattr(model.encoder, f"layer{stage}", nn.Identity())
        return model
    return ModelEntry(build)


MODELS: dict[str, ModelEntry] = {
    "pspnet_r50": _smp("pspnet", "resnet50"),
    "deeplabv3plus_r50": _smp("deeplabv3plus", "resnet50"),
    "segformer_mit-b3": _smp("segformer", "mit_b3"),
    "upernet_r50": _smp("upernet", "resnet50"),
    "unet_r18": _smp("unet", "resnet18"),
    "fpn_r18": _smp("fpn", "resnet18"),
    # CPU-sized: three encoder stages and a narrow decoder (output stride 8 inside, full-size logits).
    "unet_tiny": _smp("unet", "resnet18", encoder_depth=3, decoder_channels=(64, 32, 16)),
    "unet_micro": _smp("unet", "resnet18", encoder_depth=3, decoder_channels=(16, 16, 8)),
}


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return MODELS[name]


def build_network(name: str, num_classes: int, encoder_weights: str | None = None) -> nn.Module:
    """The bare network of a registry entry; an unknown name lists the valid ones."""
    entry = _entry(name)
    if encoder_weights not in (None, "imagenet"):
        raise ValueError(f"encoder_weights must be null or 'imagenet', got {encoder_weights!r}")
    return entry.build(num_classes, encoder_weights)


def build_model(name: str, num_classes: int, encoder_weights: str | None = None,
                loss: LossConfig | None = None) -> PixelLogitModel:
    """The adapter of a registry entry around a freshly initialised network."""
    network = build_network(name, num_classes, encoder_weights)
    return _entry(name).adapter(name, network, num_classes, loss)
