"""Losses of the "objects as points" detector (Zhou et al. 2019, eq. 1-4)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from stainless.ml.losses.detection import centre_l1_loss, detection_loss, focal_loss
from stainless.ml.models.detector import DetectorOutput, TargetMaps, encode_targets, stack_targets

BOXES = [(8, 8, 40, 44), (60, 20, 100, 52)]


def _targets() -> TargetMaps:
    return stack_targets([encode_targets(BOXES, (32, 32), 4)])


def _logits_peaking_at(mask: Tensor) -> Tensor:
    return torch.where(mask > 0, torch.tensor(20.0), torch.tensor(-20.0))


def test_focal_loss_is_zero_for_a_perfect_heatmap() -> None:
    targets = _targets()
    loss, logs = focal_loss(_logits_peaking_at(targets.mask), targets.heatmap)
    assert float(loss) < 1e-6
    assert logs["objects"] == 2


def test_focal_loss_punishes_misplaced_peaks_less_near_the_centre() -> None:
    targets = _targets()
    perfect, _ = focal_loss(_logits_peaking_at(targets.mask), targets.heatmap)
    near, _ = focal_loss(_logits_peaking_at(targets.mask.roll(1, dims=3)), targets.heatmap)
    far, _ = focal_loss(_logits_peaking_at(targets.mask.roll(8, dims=3)), targets.heatmap)
    assert float(perfect) < 1e-6 < float(near) < float(far)
    assert float(far) > 10  # a missed centre costs about |log sigmoid(-20)| = 20 per object
    silent, _ = focal_loss(torch.full_like(targets.heatmap, -20.0), targets.heatmap)
    assert float(silent) == pytest.approx(20.0, rel=0.01)


def test_focal_loss_is_normalised_by_the_number_of_objects() -> None:
    targets = _targets()
    logits = torch.zeros_like(targets.heatmap)
    one, _ = focal_loss(logits, targets.heatmap)
    two, logs = focal_loss(torch.cat([logits, logits]), torch.cat([targets.heatmap] * 2))
    assert logs["objects"] == 4
    assert float(two) == pytest.approx(float(one))


def test_focal_loss_without_objects_still_trains_the_background() -> None:
    empty = torch.zeros(1, 1, 8, 8)
    quiet, logs = focal_loss(torch.full_like(empty, -10.0), empty)
    loud, _ = focal_loss(torch.full_like(empty, 3.0), empty)
    assert logs["objects"] == 0
    assert float(quiet) < 1e-6 < float(loud)


def test_regression_counts_only_object_centres() -> None:
    targets = _targets()
    wrong_elsewhere = targets.size + (1 - targets.mask) * 50.0
    loss, logs = centre_l1_loss(wrong_elsewhere, targets.size, targets.mask, name="size")
    assert float(loss) == 0.0 and logs == {"size": 0.0}
    off_at_centres = targets.size + targets.mask * 3.0
    loss, _ = centre_l1_loss(off_at_centres, targets.size, targets.mask, name="size")
    assert float(loss) == pytest.approx(6.0)  # |3| + |3| per object, averaged over objects


def test_regression_gradient_vanishes_off_centre() -> None:
    targets = _targets()
    prediction = torch.zeros_like(targets.offset, requires_grad=True)
    loss, _ = centre_l1_loss(prediction, targets.offset + 0.3, targets.mask, name="offset")
    loss.backward()  # type: ignore[no-untyped-call]
    assert prediction.grad is not None
    assert float(prediction.grad[(targets.mask == 0).expand_as(prediction)].abs().sum()) == 0
    assert float(prediction.grad.abs().sum()) > 0


def test_detection_loss_weights_its_terms() -> None:
    targets = _targets()
    pred = DetectorOutput(
        torch.zeros_like(targets.heatmap),
        targets.size + targets.mask * 10.0,
        targets.offset + targets.mask * 0.5,
    )
    loss, logs = detection_loss(pred, targets)
    assert logs["size"] == pytest.approx(20.0) and logs["offset"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(logs["heatmap"] + 0.1 * 20.0 + 1.0 * 1.0)
    assert logs["detection"] == pytest.approx(float(loss))
    heavier, _ = detection_loss(pred, targets, size_weight=1.0, offset_weight=0.0)
    assert float(heavier) == pytest.approx(logs["heatmap"] + 20.0)


def test_losses_reject_mismatched_inputs() -> None:
    targets = _targets()
    with pytest.raises(ValueError, match="same shape"):
        focal_loss(torch.zeros(1, 1, 16, 16), targets.heatmap)
    with pytest.raises(ValueError, match="mask"):
        centre_l1_loss(targets.size, targets.size, targets.mask[..., :8], name="size")
    with pytest.raises(ValueError, match="size_weight"):
        detection_loss(
            DetectorOutput(targets.heatmap, targets.size, targets.offset), targets, size_weight=-1
        )
