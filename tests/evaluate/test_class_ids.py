"""class_ids is argmax over the class dimension: same ids, ties to the first maximum."""

from __future__ import annotations

import torch

from proveseg.evaluate.inference import class_ids


def test_class_ids_equal_argmax_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (2, 7, 9, 11), generator=gen).float()  # many ties among 7 classes
    assert torch.equal(class_ids(scores), scores.argmax(1))
    scores = torch.randn(3, 19, 16, 24, generator=gen)
    assert torch.equal(class_ids(scores), scores.argmax(1))
    assert torch.equal(class_ids(scores.contiguous(memory_format=torch.channels_last)), scores.argmax(1))
