"""Pretrained weights from a local file (``model.weights``): ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors only, never pickled code),
``.safetensors`` with the safetensors library. A file may hold a bare state dict or wrap it as
``state_dict`` (proveseg's and MMSegmentation's checkpoints) or ``model``; a DDP ``module.`` prefix
is dropped. The file's keys are placed where they match most of the network's: at its root (a
whole-model checkpoint) or under one submodule (an encoder-only checkpoint, e.g. an ImageNet
backbone for ``backbone.`` or ``encoder.``). Missing and unexpected keys are reported (a
``logging`` warning and the returned :class:`WeightsReport`); a shape mismatch, an unreadable file
or a file of which no key fits is an error naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["WeightsError", "WeightsReport", "load_weights", "read_state_dict"]

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class WeightsError(ValueError):
    """A weights file that cannot be loaded into the network; the message names the file."""


@dataclass
class WeightsReport:
    """What loading a weights file did: where its keys went, and what did not match."""

    path: Path
    prefix: str  # the submodule the file's keys were placed under ("" = the whole network)
    loaded: int
    missing: list[str] = field(default_factory=list)  # network keys the file does not provide (kept as built)
    unexpected: list[str] = field(default_factory=list)  # file keys the network does not have (ignored)

    def summary(self) -> str:
        where = f"under {self.prefix!r}" if self.prefix else "at the network's root"
        text = f"{self.path}: loaded {self.loaded} tensors {where}"
        for label, keys in (("missing (kept as initialised)", self.missing), ("unexpected (ignored)", self.unexpected)):
            if keys:
                text += f"; {len(keys)} {label}, e.g. {', '.join(keys[:5])}"
        return text


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a checkpoint dict; WeightsError names the file."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise WeightsError(f"{path}: weights must be one of {', '.join(SUFFIXES)} files")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable file is the user's to fix: name it, whatever the library raised
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict) and any(
                isinstance(v, torch.Tensor) for v in data[key].values()):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


def _best_prefix(own: set[str], keys: list[str], modules: list[str]) -> tuple[str, int]:
    """The submodule prefix under which most of ``keys`` name the network's keys."""
    best, hits = "", sum(k in own for k in keys)
    for name in modules:
        prefix = name + "."
        n = sum(prefix + k in own for k in keys)
        if n > hits:
            best, hits = prefix, n
    return best, hits


def load_weights(network: nn.Module, path: str | Path) -> WeightsReport:
    """Load a local weights file into ``network`` (non-strict, shapes checked) and report what matched."""
    path = Path(path)
    state = read_state_dict(path)
    own = network.state_dict()
    modules = [name for name, _ in network.named_modules() if name]
    prefix, hits = _best_prefix(set(own), list(state), modules)
    if hits == 0:
        raise WeightsError(f"{path}: none of its {len(state)} keys (e.g. {', '.join(list(state)[:3])}) names a "
                           f"weight of this network (e.g. {', '.join(list(own)[:3])})")
    placed = {prefix + k: v for k, v in state.items()}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in placed.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} tensor(s) have another shape than the network's "
                           f"(file vs network): {'; '.join(wrong[:5])}")
    result = network.load_state_dict(placed, strict=False)
    scope = [k for k in own if k.startswith(prefix)]
    report = WeightsReport(path, prefix, hits, [k for k in result.missing_keys if k in scope],
                           list(result.unexpected_keys))
    if report.missing or report.unexpected:
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    return report
