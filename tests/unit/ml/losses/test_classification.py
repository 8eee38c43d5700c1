"""Cross-entropy losses (domain, class, segmentation, structure) on tiny hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from stainless.ml.losses import (
    classification_loss,
    domain_classification_loss,
    paired_targets,
    segmentation_loss,
    soft_classification_loss,
    structure_loss,
)

# Logits that are log-probabilities: CE of label y is -log p_y.
LOGITS = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]))


def test_domain_classification_loss_known_value() -> None:
    labels = torch.tensor([1, 0, 1])
    loss, logs = domain_classification_loss(LOGITS, labels)
    expected = (-math.log(0.75) - math.log(0.5) - math.log(0.1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # argmax: 1, 0 (tie -> first), 0 -> two of three right
    assert logs == {"domain": pytest.approx(expected, rel=1e-6), "domain_accuracy": 2 / 3}
    # one int for the whole batch
    all_zero, _ = domain_classification_loss(LOGITS, 0)
    expected0 = (-math.log(0.25) - math.log(0.5) - math.log(0.9)) / 3
    assert all_zero.item() == pytest.approx(expected0, rel=1e-6)


def test_classification_loss_known_value_and_class_weights() -> None:
    labels = torch.tensor([1, 0, 1])
    loss, logs = classification_loss(LOGITS, labels)
    ce = [-math.log(0.75), -math.log(0.5), -math.log(0.1)]
    assert loss.item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert logs["accuracy"] == pytest.approx(2 / 3)
    weights = torch.tensor([1.0, 3.0])
    weighted, _ = classification_loss(LOGITS, labels, class_weights=weights)
    # weighted mean: sum w_y ce / sum w_y
    expected = (3 * ce[0] + 1 * ce[1] + 3 * ce[2]) / (3 + 1 + 3)
    assert weighted.item() == pytest.approx(expected, rel=1e-6)
    assert logs["classification"] == pytest.approx(sum(ce) / 3, rel=1e-6)


def test_classification_loss_ignores_unlabelled_samples() -> None:
    loss, logs = classification_loss(LOGITS, torch.tensor([1, -1, 0]), ignore_index=-1)
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.9)) / 2, rel=1e-6)
    assert logs["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        classification_loss(LOGITS, torch.tensor([1, -1, 0]))  # no ignore index: -1 is wrong
    logits = LOGITS.clone().requires_grad_(True)
    none, logs = classification_loss(logits, torch.full((3,), -1), ignore_index=-1)
    assert none.item() == 0.0 and math.isnan(logs["accuracy"])
    torch.autograd.backward(none)
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_classification_losses_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"labels must be \[B\] = \[3\]"):
        classification_loss(LOGITS, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits must be \[B, classes\]"):
        classification_loss(LOGITS[0], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        classification_loss(LOGITS, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="labels must hold integer"):
        classification_loss(LOGITS, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="labels must hold integer"):
        classification_loss(LOGITS, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="mask must hold integer"):
        segmentation_loss(_seg_logits(), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="class_weights"):
        classification_loss(LOGITS, torch.tensor([0, 1, 1]), class_weights=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        classification_loss(LOGITS, torch.tensor([0, 1, 1]), class_weights=-torch.ones(2))
    with pytest.raises(ValueError, match="domain_index must lie"):
        domain_classification_loss(LOGITS, 5)
    with pytest.raises(ValueError, match="floating-point"):
        domain_classification_loss(torch.zeros(3, 2, dtype=torch.long), 0)


def _seg_logits() -> torch.Tensor:
    """[1, 4, 1, 3]: three pixels with known class probabilities."""
    probs = torch.tensor(
        [[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]
    )  # [pixel, class]
    return torch.log(probs).T.reshape(1, 4, 1, 3)


def test_segmentation_loss_known_value_with_ignored_pixels() -> None:
    logits = _seg_logits()
    loss, logs = segmentation_loss(logits, torch.tensor([[[3, 1, 0]]]))
    expected = (-math.log(0.4) - math.log(0.25) - math.log(0.7)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["pixel_accuracy"] == pytest.approx(2 / 3)  # pixel 2 is a tie -> class 0
    ignored, logs = segmentation_loss(logits, torch.tensor([[[3, -1, 0]]]))
    assert ignored.item() == pytest.approx((-math.log(0.4) - math.log(0.7)) / 2, rel=1e-6)
    assert logs["pixel_accuracy"] == 1.0
    custom, _ = segmentation_loss(logits, torch.tensor([[[2, 255, 255]]]), ignore_index=255)
    assert custom.item() == pytest.approx(-math.log(0.3), rel=1e-6)


def test_segmentation_loss_with_nothing_annotated_is_zero_in_the_graph() -> None:
    logits = _seg_logits().requires_grad_(True)
    loss, logs = segmentation_loss(logits, torch.full((1, 1, 3), -1))
    assert loss.item() == 0.0
    assert math.isnan(logs["pixel_accuracy"])
    torch.autograd.backward(loss)
    assert logits.grad is not None
    assert float(logits.grad.abs().sum()) == 0.0


def test_segmentation_loss_rejects_bad_input() -> None:
    logits = _seg_logits()
    with pytest.raises(ValueError, match=r"mask must be \[B, H, W\] = \(1, 1, 3\)"):
        segmentation_loss(logits, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must be \[B, classes, H, W\]"):
        segmentation_loss(logits[0], torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must lie in \[0, 4\) or -1"):
        segmentation_loss(logits, torch.tensor([[[0, 4, 1]]]))
    with pytest.raises(ValueError, match="mask must lie"):
        segmentation_loss(logits, torch.tensor([[[0, -2, 1]]]))


def test_structure_loss_known_value_and_class_subset() -> None:
    logits = _seg_logits().requires_grad_(True)
    target = torch.tensor([[[3, 1, 0]]])
    loss, logs = structure_loss(logits, target)
    expected = (-math.log(0.4) - math.log(0.25) - math.log(0.7)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["structure"] == pytest.approx(expected, rel=1e-6)
    # Eq. 6.3, generated structure: only background and red-cell pixels count
    background, _ = structure_loss(logits, target, classes=(0, 1))
    assert background.item() == pytest.approx((-math.log(0.25) - math.log(0.7)) / 2, rel=1e-6)
    torch.autograd.backward(background)
    assert logits.grad is not None
    assert float(logits.grad[0, :, 0, 0].abs().sum()) == 0.0  # the nucleus pixel: no gradient
    with pytest.raises(ValueError, match="classes must be"):
        structure_loss(logits, target, classes=(0, 4))
    with pytest.raises(ValueError, match="structure_target_mask must be"):
        structure_loss(logits, torch.zeros(1, 3, dtype=torch.long))


def test_paired_targets_take_the_partners_label_else_its_probabilities() -> None:
    targets = paired_targets(torch.tensor([-1, 0, 1]), LOGITS, ignore_index=-1)
    expected = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(targets, expected)
    assert not targets.requires_grad
    with pytest.raises(ValueError, match="partner_labels must lie"):
        paired_targets(torch.tensor([5, -1, -1]), LOGITS, ignore_index=-1)
    with pytest.raises(ValueError, match="partner_labels must be"):
        paired_targets(torch.full((2,), -1), LOGITS, ignore_index=-1)


def test_soft_classification_loss_known_value() -> None:
    targets = torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    loss, logs = soft_classification_loss(LOGITS, targets)
    expected = (-0.5 * math.log(0.25) - 0.5 * math.log(0.75) - math.log(0.5) - math.log(0.9)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # argmax of logits 1, 0, 0 against targets 0 (tie: first), 1, 0: one of three
    assert logs == {"classification": pytest.approx(expected, rel=1e-6), "agreement": 1 / 3}
    with pytest.raises(ValueError, match="same"):
        soft_classification_loss(LOGITS, targets[:2])
