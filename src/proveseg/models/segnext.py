"""SegNeXt (Guo et al., NeurIPS 2022): the MSCAN encoder and the LightHamHead decoder, written here.

Why our own code: no maintained library we depend on ships SegNeXt (not timm, not transformers,
not segmentation_models_pytorch); only MMSegmentation does, and proveseg does not depend on it.
The module follows the paper and its reference design (MMSegmentation's ``MSCAN`` and
``LightHamHead``) layer for layer, with the same parameter names, so the official ImageNet MSCAN
checkpoints (``mscan_{t,s,b}.pth``, keys ``patch_embed1.*``, ``block1.*`` ...) load into
``network.backbone`` through ``model.weights`` (see :mod:`proveseg.models.weights`).

One deliberate difference: the Hamburger's non-negative matrix factorisation starts from random
bases. The reference draws fresh random bases at every forward pass, in training *and* at test time,
so the same checkpoint gives slightly different predictions from run to run. Here training still
draws fresh bases (from torch's RNG, which proveseg seeds and checkpoints), but inference starts
from one fixed set of bases: a non-persistent buffer drawn once from a CPU generator seeded with a
constant, so it is bit-identical in every process on every machine and needs no checkpoint entry.
Predictions of a checkpoint are therefore a pure function of weights and input. (The model is
trained to work from arbitrary random bases, so a fixed draw is just one of those.)

Sizes (``segnext_mscan-t/-s/-b``) use the paper's encoder depths/widths and decoder channels;
:func:`segnext` builds them for any number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

__all__ = ["MSCAN", "SEGNEXT_SIZES", "LightHamHead", "SegNeXt", "SegNeXtSize", "segnext"]

_BASES_SEED = 20220918  # any constant: the fixed NMF initialisation used at inference


@dataclass(frozen=True)
class SegNeXtSize:
    """One published SegNeXt size: encoder widths/depths/MLP ratios and the decoder's channels."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    mlp_ratios: tuple[int, int, int, int]
    drop_path_rate: float
    ham_channels: int


SEGNEXT_SIZES: dict[str, SegNeXtSize] = {
    "t": SegNeXtSize((32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4), 0.1, 256),
    "s": SegNeXtSize((64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4), 0.1, 256),
    "b": SegNeXtSize((64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4), 0.1, 512),
}


class _Mlp(nn.Module):
    """1x1 conv, 3x3 depth-wise conv, GELU, 1x1 conv."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class _StemConv(nn.Module):
    """Two stride-2 3x3 convolutions with BatchNorm: the first stage's patch embedding (stride 4)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(3, out_channels // 2, 3, stride=2, padding=1), nn.BatchNorm2d(out_channels // 2), nn.GELU(),
            nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _OverlapPatchEmbed(nn.Module):
    """A stride-2 3x3 convolution with BatchNorm between stages."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class _MSCAAttention(nn.Module):
    """Multi-scale convolutional attention: a 5x5 depth-wise conv, three strip-conv branches (7, 11, 21), 1x1 mix."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        for i, k in enumerate((7, 11, 21)):
            self.add_module(f"conv{i}_1", nn.Conv2d(channels, channels, (1, k), padding=(0, k // 2), groups=channels))
            self.add_module(f"conv{i}_2", nn.Conv2d(channels, channels, (k, 1), padding=(k // 2, 0), groups=channels))
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0(x)
        branches = [getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn)) for i in range(3)]
        attn = self.conv3(attn + branches[0] + branches[1] + branches[2])
        return attn * x


class _MSCASpatialAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = _MSCAAttention(channels)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class _MSCABlock(nn.Module):
    """BN -> attention and BN -> MLP, each with a layer scale (init 0.01) and stochastic depth."""

    def __init__(self, channels: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.attn = _MSCASpatialAttention(channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(channels)
        self.mlp = _Mlp(channels, channels * mlp_ratio)
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    """The multi-scale convolutional attention network: four stages at strides 4, 8, 16, 32."""

    def __init__(self, size: SegNeXtSize) -> None:
        super().__init__()
        rates = torch.linspace(0, size.drop_path_rate, sum(size.depths)).tolist()
        start = 0
        for i, (dim, depth, ratio) in enumerate(zip(size.embed_dims, size.depths, size.mlp_ratios, strict=True)):
            embed = _StemConv(dim) if i == 0 else _OverlapPatchEmbed(size.embed_dims[i - 1], dim)
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", nn.ModuleList(
                _MSCABlock(dim, ratio, rates[start + j]) for j in range(depth)))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim))
            start += depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class _ConvGN(nn.Sequential):
    """1x1 conv (no bias), GroupNorm(32), optional ReLU: MMSegmentation's ConvModule with GN."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.gn = nn.GroupNorm(32, out_channels)
        if relu:
            self.activate = nn.ReLU(inplace=True)


class NMF2D(nn.Module):
    """Non-negative matrix factorisation by multiplicative updates (rank ``rank``, ``S`` = 1).

    Training starts from fresh random bases; inference from the fixed ``init_bases`` buffer (see the
    module docstring), so predictions are deterministic.
    """

    init_bases: torch.Tensor

    def __init__(self, channels: int, rank: int = 16, train_steps: int = 6, eval_steps: int = 7) -> None:
        super().__init__()
        self.rank, self.train_steps, self.eval_steps = rank, train_steps, eval_steps
        generator = torch.Generator().manual_seed(_BASES_SEED)
        self.register_buffer("init_bases", F.normalize(torch.rand(channels, rank, generator=generator), dim=0),
                             persistent=False)

    @staticmethod
    def _update_coef(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w).float()  # the multiplicative updates need fp32 (1e-6 guards)
        if self.training:
            bases = F.normalize(torch.rand(b, c, self.rank, device=x.device), dim=1)
        else:
            bases = self.init_bases.to(x.device).expand(b, c, self.rank).contiguous()
        coef = F.softmax(torch.bmm(flat.transpose(1, 2), bases), dim=-1)  # inv_t = 1 for NMF
        with torch.no_grad():  # the reference back-propagates through the last coefficient update only
            for _ in range(self.train_steps if self.training else self.eval_steps):
                coef = self._update_coef(flat, bases, coef)
                bases = bases * torch.bmm(flat, coef) / (bases.bmm(coef.transpose(1, 2).bmm(coef)) + 1e-6)
        coef = self._update_coef(flat, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w).to(x.dtype)


class _Hamburger(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ham_in = nn.Sequential()
        self.ham_in.add_module("conv", nn.Conv2d(channels, channels, 1))
        self.ham = NMF2D(channels)
        self.ham_out = _ConvGN(channels, channels, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enjoy = self.ham_out(self.ham(F.relu(self.ham_in(x))))
        return F.relu(x + enjoy)


class LightHamHead(nn.Module):
    """Concatenate stages 2-4 at stride 8, squeeze, Hamburger (NMF), align, classify (dropout 0.1)."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, num_classes: int) -> None:
        super().__init__()
        self.squeeze = _ConvGN(sum(in_channels), channels, relu=True)
        self.hamburger = _Hamburger(channels)
        self.align = _ConvGN(channels, channels, relu=True)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in features[1:]], dim=1)
        return self.conv_seg(self.dropout(self.align(self.hamburger(self.squeeze(x)))))


class SegNeXt(nn.Module):
    """MSCAN + LightHamHead; returns (N, C, H, W) logits at the input's size (bilinear from stride 8)."""

    def __init__(self, size: SegNeXtSize, num_classes: int) -> None:
        super().__init__()
        self.backbone = MSCAN(size)
        self.decode_head = LightHamHead(size.embed_dims[1:], size.ham_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.backbone(x)[1:])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def segnext(size: str, num_classes: int) -> SegNeXt:
    """A randomly initialised SegNeXt of a published size (``t``, ``s`` or ``b``)."""
    if size not in SEGNEXT_SIZES:
        raise KeyError(f"unknown SegNeXt size {size!r}; valid: {', '.join(SEGNEXT_SIZES)}")
    return SegNeXt(SEGNEXT_SIZES[size], num_classes)
