"""Model registry: one plain dict, name -> entry (a network builder and the adapter that trains it).

``encoder_weights=None`` (the default) never downloads; ``"imagenet"`` uses the library's own
downloader (smp, or the Hugging Face hub for Mask2Former) when a user asks for it. ``weights`` is a
local ``.pth``/``.safetensors`` file loaded after the build (:mod:`proveseg.models.weights`). Tiny
models exist for CPU tests and the demo. Adding a model is one line in :data:`MODELS` (plus a
module of its own when it needs a new adapter or network code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from proveseg.config import LossConfig
from proveseg.models.adapter import PixelLogitModel
from proveseg.models.mask2former import Mask2FormerModel, mask2former
from proveseg.models.segnext import segnext
from proveseg.models.weights import load_weights

__all__ = ["MODELS", "ModelEntry", "batch_problem", "build_model", "build_network"]

Builder = Callable[[int, str | None], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """How to build a registered model's network, and which adapter trains and runs it."""

    build: Builder
    adapter: type[PixelLogitModel] = PixelLogitModel
    # smallest per-rank training batch the network can train on (BatchNorm after global pooling needs 2)
    min_batch_per_rank: int = 1
    imagenet: bool = True  # whether ``encoder_weights: imagenet`` exists for it


def _smp(arch: str, encoder: str, min_batch_per_rank: int = 1, dilated_stride: int | None = None,
         **kwargs: object) -> ModelEntry:
    def build(num_classes: int, encoder_weights: str | None) -> nn.Module:
        import segmentation_models_pytorch as smp  # seconds of timm/torchvision imports: paid by building a model

        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights, classes=num_classes,
                                 **kwargs)
        if dilated_stride is not None:  # the papers' "-D8" backbones: dilated last stages, output stride 8
            model.encoder.make_dilated(dilated_stride)
        depth = getattr(model.encoder, "_depth", 5)  # an architecture's default depth too (PSPNet: 3)
        if isinstance(depth, int) and encoder.startswith("resnet"):
            # smp keeps the ResNet stages past encoder_depth although forward never runs them; drop them so
            # the optimizer, EMA and DDP (which rejects unused parameters) see only what is trained.
            for stage in range(depth, 5):
                setattr(model.encoder, f"layer{stage}", nn.Identity())
        return model
    return ModelEntry(build, min_batch_per_rank=min_batch_per_rank)


def _segnext(size: str) -> ModelEntry:
    def build(num_classes: int, encoder_weights: str | None) -> nn.Module:
        return segnext(size, num_classes)
    return ModelEntry(build, imagenet=False)  # MSCAN ImageNet weights: a local file through ``weights``


def _mask2former(backbone: str) -> ModelEntry:
    def build(num_classes: int, encoder_weights: str | None) -> nn.Module:
        return mask2former(backbone, num_classes, encoder_weights)
    return ModelEntry(build, Mask2FormerModel)


MODELS: dict[str, ModelEntry] = {
    # PSPNet as published (and as MMSegmentation's pspnet_r50-d8): all four ResNet-50 stages, dilated to output
    # stride 8 (smp's default keeps two stages and 1/8 of the parameters)
    "pspnet_r50": _smp("pspnet", "resnet50", encoder_depth=5, upsampling=8, dilated_stride=8),
    "deeplabv3plus_r50": _smp("deeplabv3plus", "resnet50", min_batch_per_rank=2),
    "segformer_mit-b3": _smp("segformer", "mit_b3"),
    "segnext_mscan-t": _segnext("t"),
    "segnext_mscan-s": _segnext("s"),
    "segnext_mscan-b": _segnext("b"),
    "mask2former_swin-b": _mask2former("swin-b"),
    "mask2former_r50": _mask2former("r50"),
    "upernet_r50": _smp("upernet", "resnet50", min_batch_per_rank=2),
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


def batch_problem(name: str, batch_per_rank: int) -> str | None:
    """Why ``name`` cannot train on ``batch_per_rank`` images per rank (None when it can, or is unknown)."""
    entry = MODELS.get(name)
    if entry is None or batch_per_rank >= entry.min_batch_per_rank:
        return None
    return (f"model {name!r} cannot train on a per-rank batch of {batch_per_rank} (BatchNorm after global pooling "
            f"needs {entry.min_batch_per_rank} images per rank): set data.batch_size to "
            f"{entry.min_batch_per_rank} or more, or choose a model without it (e.g. pspnet_r50, segformer_mit-b3)")


def build_network(name: str, num_classes: int, encoder_weights: str | None = None,
                  weights: str | Path | None = None) -> nn.Module:
    """The bare network of a registry entry, with ``weights`` (a local file) loaded when given.

    An unknown name lists the valid ones.
    """
    entry = _entry(name)
    if encoder_weights not in (None, "imagenet"):
        raise ValueError(f"encoder_weights must be null or 'imagenet', got {encoder_weights!r}")
    if encoder_weights == "imagenet" and not entry.imagenet:
        raise ValueError(f"model {name!r} has no downloadable ImageNet weights: give the encoder's checkpoint as "
                         "model.weights (a local .pth or .safetensors file)")
    network = entry.build(num_classes, encoder_weights)
    if weights is not None:
        load_weights(network, weights)
    return network


def build_model(name: str, num_classes: int, encoder_weights: str | None = None,
                loss: LossConfig | None = None, weights: str | Path | None = None) -> PixelLogitModel:
    """The adapter of a registry entry around a freshly initialised network (``weights`` loaded when given)."""
    network = build_network(name, num_classes, encoder_weights, weights)
    return _entry(name).adapter(name, network, num_classes, loss)
