"""Losses of the "objects as points" white-cell detector (Zhou et al. 2019, arXiv:1904.07850).

Pure functions returning ``(loss, logs)``. Equation numbers are those of the paper:

* eq. 1: penalty-reduced pixel-wise focal loss on the centre heatmap;
* eq. 2: L1 on the centre offset, at object centres only;
* eq. 3: L1 on the box size, at object centres only;
* eq. 4: ``L_det = L_k + λ_size L_size + λ_off L_off`` (λ_size = 0.1, λ_off = 1).

Every term is normalised by ``N``, the number of objects in the batch (at least 1, so a
batch without cells still trains the heatmap towards 0).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from stainless.ml.losses._checks import check_same_shape, check_tensor, check_weight, shape

Logs = dict[str, float]

__all__ = [
    "GroundTruthMaps",
    "PredictedMaps",
    "centre_l1_loss",
    "detection_loss",
    "focal_loss",
]


class PredictedMaps(Protocol):
    """The network's maps ``(B, ., h, w)``: heatmap logits, size and offset."""

    @property
    def heatmap(self) -> Tensor: ...

    @property
    def size(self) -> Tensor: ...

    @property
    def offset(self) -> Tensor: ...


class GroundTruthMaps(PredictedMaps, Protocol):
    """Ground-truth maps ``(B, ., h, w)``: Gaussian heatmap, size, offset, centre mask."""

    @property
    def mask(self) -> Tensor: ...


def _positives(target: Tensor) -> Tensor:
    # The encoder writes exactly 1 at a centre; a little slack covers float round-trips.
    return target >= 1.0 - 1e-4


def focal_loss(
    logits: Tensor, target: Tensor, *, alpha: float = 2.0, beta: float = 4.0
) -> tuple[Tensor, Logs]:
    """Penalty-reduced pixel-wise focal loss on the centre heatmap (paper eq. 1).

    ``L_k = -1/N Σ_xyc { (1 - Ŷ)^α log Ŷ            if Y = 1
                         (1 - Y)^β Ŷ^α log(1 - Ŷ)   otherwise }``

    with ``Ŷ = sigmoid(logits)`` (the logs taken stably as ``logsigmoid``). ``(1 - Y)^β``
    reduces the penalty for a score near a centre, where the Gaussian target is high.

    Args:
        logits: heatmap logits ``(B, 1, h, w)``.
        target: Gaussian target ``Y`` in [0, 1], exactly 1 at centres, same shape.
        alpha: focusing exponent α (2 in the paper).
        beta: penalty-reduction exponent β (4 in the paper).

    Returns:
        The loss and logs ``heatmap`` (the loss) and ``objects`` (N).
    """
    check_same_shape("logits", logits, "target", target)
    check_weight("alpha", alpha)
    check_weight("beta", beta)
    positive = _positives(target)
    prob = torch.sigmoid(logits)
    pos_term = (1 - prob).pow(alpha) * F.logsigmoid(logits)
    neg_term = (1 - target).pow(beta) * prob.pow(alpha) * F.logsigmoid(-logits)
    count = positive.sum()
    total = torch.where(positive, pos_term, neg_term).sum()
    loss = -total / count.clamp(min=1)
    return loss, {"heatmap": float(loss.detach()), "objects": float(count)}


def centre_l1_loss(
    prediction: Tensor, target: Tensor, mask: Tensor, *, name: str
) -> tuple[Tensor, Logs]:
    """L1 of a regression map at object centres only (paper eq. 2 and 3).

    ``L = 1/N Σ_k |P̂_k - p_k|₁`` over the ``N`` centre cells ``k`` the mask marks, the L1
    norm summed over the map's channels (both coordinates of a size or offset).

    Args:
        prediction: predicted map ``(B, C, h, w)`` (size: eq. 3, offset: eq. 2).
        target: its target, same shape (values off-centre are ignored).
        mask: ``(B, 1, h, w)``, 1 at object centres, 0 elsewhere.
        name: key of the loss in the logs (``"size"``, ``"offset"``).

    Returns:
        The loss and logs ``{name: loss}``.
    """
    check_same_shape("prediction", prediction, "target", target)
    check_tensor("mask", mask)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != prediction.shape[2:]:
        raise ValueError(
            f"mask must be (B, 1, h, w) matching {shape(prediction)}, got {shape(mask)}"
        )
    if mask.shape[0] != prediction.shape[0]:
        raise ValueError(f"mask batch {mask.shape[0]} differs from {prediction.shape[0]}")
    weight = mask.to(prediction.dtype)
    loss = ((prediction - target).abs() * weight).sum() / weight.sum().clamp(min=1)
    return loss, {name: float(loss.detach())}


def detection_loss(
    pred: PredictedMaps,
    targets: GroundTruthMaps,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
) -> tuple[Tensor, Logs]:
    """The detector's training objective ``L_k + λ_size L_size + λ_off L_off`` (paper eq. 4).

    Args:
        pred: the network's maps: ``heatmap`` logits ``(B, 1, h, w)``, ``size`` and
            ``offset`` ``(B, 2, h, w)``.
        targets: ``heatmap``, ``size``, ``offset`` of the same shapes and ``mask``
            ``(B, 1, h, w)`` (from ``encode_targets``, stacked).
        size_weight: λ_size (0.1 in the paper; sizes are in working pixels).
        offset_weight: λ_off (1 in the paper).

    Returns:
        The loss and logs ``detection`` (the total), ``heatmap``, ``size``, ``offset`` and
        ``objects``.
    """
    check_weight("size_weight", size_weight)
    check_weight("offset_weight", offset_weight)
    heatmap, logs = focal_loss(pred.heatmap, targets.heatmap)
    size, size_logs = centre_l1_loss(pred.size, targets.size, targets.mask, name="size")
    offset, offset_logs = centre_l1_loss(pred.offset, targets.offset, targets.mask, name="offset")
    loss = heatmap + size_weight * size + offset_weight * offset
    return loss, {"detection": float(loss.detach()), **logs, **size_logs, **offset_logs}
