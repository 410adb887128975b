"""Mask2Former adapter: set-prediction loss from semantic masks that leaves ignored pixels out; semantic scores."""

from __future__ import annotations

import torch

from proveseg.models import build_model
from proveseg.models.mask2former import IgnoreAwareMask2FormerLoss, Mask2FormerModel, SetPrediction, _targets


def test_targets_are_one_binary_mask_per_present_class() -> None:
    mask = torch.tensor([[[0, 0, 3], [255, 3, 3]]])
    masks, classes = _targets(mask, 5)
    assert classes[0].tolist() == [0, 3]
    assert masks[0].tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]


def _criterion() -> IgnoreAwareMask2FormerLoss:
    model = build_model("mask2former_r50", 3)
    return model.network.criterion  # type: ignore[no-any-return]


def test_ignored_pixels_do_not_change_the_mask_losses() -> None:
    criterion = _criterion()
    criterion.num_points = 256
    pred = torch.randn(1, 2, 16, 16)
    target = [torch.zeros(2, 64, 64)]
    target[0][0, :, 40:] = 1.0
    target[0][1, 20:, :] = 1.0
    valid = torch.ones(1, 64, 64)
    valid[:, :, :32] = 0.0  # the left half of the image is ignored (255)
    indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    changed = pred.clone()
    changed[..., :6] = 50.0 * torch.randn(1, 2, 16, 6)  # predictions well inside the ignored half
    results = []
    criterion.valid = valid
    for p in (pred, changed):
        torch.manual_seed(0)
        results.append(criterion.loss_masks(p, target, indices, 2))
    criterion.valid = None
    for p in (pred, changed):  # without the validity map the same change moves the loss
        torch.manual_seed(0)
        results.append(criterion.loss_masks(p, target, indices, 2))
    assert all(torch.equal(results[0][k], results[1][k]) for k in ("loss_mask", "loss_dice"))
    assert not torch.equal(results[2]["loss_mask"], results[3]["loss_mask"])


def test_semantic_scores_are_class_times_mask_probabilities() -> None:
    model = build_model("mask2former_r50", 2)
    assert isinstance(model, Mask2FormerModel)
    cls = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])  # query 0 -> class 0, query 1 -> class 1
    masks = torch.full((1, 2, 2, 2), -6.0)
    masks[0, 0, :, 0] = 6.0  # query 0 covers the left column, query 1 the right
    masks[0, 1, :, 1] = 6.0
    scores = model.pixel_logits(SetPrediction(cls, masks, [], (4, 4)))
    assert scores.shape == (1, 2, 4, 4)
    assert scores.argmax(1)[0].tolist() == [[0, 0, 1, 1]] * 4
    probs = cls.softmax(-1)[..., :2]
    expected = torch.einsum("nqc,nqhw->nchw", probs, masks.sigmoid())[0, :, 0, 0].log()
    assert torch.allclose(scores[0, :, 0, 0], expected, atol=1e-5)


def test_all_ignored_is_a_zero_loss_with_a_graph_and_pseudo_labels_train() -> None:
    torch.manual_seed(0)
    model = build_model("mask2former_r50", 3)
    outputs = model.forward(model.network, torch.randn(2, 3, 32, 32))
    labeled, rest = model.split(outputs, 1)
    assert labeled.class_logits.shape[0] == 1 and rest.mask_logits.shape[0] == 1 and len(rest.aux) == len(outputs.aux)
    zero, _ = model.loss(labeled, torch.full((1, 32, 32), 255))
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    pseudo = torch.full((1, 32, 32), 255)
    pseudo[0, 8:24, 8:24] = 2
    unsup = model.unsupervised_loss(rest, pseudo)
    assert float(unsup.detach()) > 0.0
    unsup.backward()
    assert model.network.class_predictor.weight.grad is not None
