"""SegNeXt: the paper's parameter counts per size, and inference that is a pure function of weights and input."""

from __future__ import annotations

import pytest
import torch

from proveseg.models.segnext import segnext

# SegNeXt paper (Guo et al. 2022), Table of ADE20K results: parameters in millions, 150 classes
PAPER_PARAMS_M = {"t": 4.3, "s": 13.9, "b": 27.6}


@pytest.mark.parametrize("size", list(PAPER_PARAMS_M))
def test_parameter_count_within_3_percent_of_the_paper(size: str) -> None:
    count = sum(p.numel() for p in segnext(size, 150).parameters()) / 1e6
    assert abs(count - PAPER_PARAMS_M[size]) / PAPER_PARAMS_M[size] < 0.03, (size, count)


def test_inference_is_deterministic_across_passes_instances_and_rng_state() -> None:
    torch.manual_seed(0)
    first = segnext("t", 19).eval()
    image = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        torch.manual_seed(1)
        a = first(image)
        torch.manual_seed(2)  # the reference draws NMF bases from the global RNG at test time: ours must not
        b = first(image)
        fresh = segnext("t", 19)  # a new process's view: weights from the checkpoint, bases from the constant seed
        fresh.load_state_dict(first.state_dict())
        c = fresh.eval()(image)
    assert a.shape == (1, 19, 72, 100)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert "decode_head.hamburger.ham.init_bases" not in first.state_dict()  # not a checkpoint entry


def test_training_draws_fresh_bases_from_the_seeded_rng() -> None:
    torch.manual_seed(0)
    net = segnext("t", 19).train()
    ham = net.decode_head.hamburger.ham
    x = torch.rand(2, 256, 8, 8)
    torch.manual_seed(5)
    a = ham(x)
    torch.manual_seed(5)
    b = ham(x)
    c = ham(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(torch.isfinite(a).all())
