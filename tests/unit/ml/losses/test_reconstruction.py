"""L1 reconstruction, style and diversity losses on tiny hand-made tensors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from stainless.ml.losses import (
    cycle_loss,
    diversity_loss,
    latent_alignment_loss,
    pairwise_reconstruction_loss,
    style_reconstruction_loss,
)

A = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # [1, 2, 2]
B = torch.tensor([[[1.0, 1.0], [0.0, 7.0]]])  # |A - B| = 1, 0, 2, 4 -> mean 1.75

L1_LOSSES: list[tuple[Callable[[Tensor, Tensor], tuple[Tensor, dict[str, float]]], str]] = [
    (cycle_loss, "cycle"),
    (pairwise_reconstruction_loss, "reconstruction"),
    (style_reconstruction_loss, "style"),
    (latent_alignment_loss, "latent_alignment"),
]


@pytest.mark.parametrize(("loss_fn", "key"), L1_LOSSES)
def test_l1_losses_known_value(
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, float]]], key: str
) -> None:
    pred = A.clone().requires_grad_(True)
    loss, logs = loss_fn(pred, B)
    assert loss.item() == pytest.approx(1.75)
    assert logs == {key: pytest.approx(1.75)}
    torch.autograd.backward(loss)
    assert pred.grad is not None
    torch.testing.assert_close(pred.grad, torch.tensor([[[-0.25, 0.0], [0.25, -0.25]]]))
    # style codes are [B, D]
    s_loss, _ = loss_fn(torch.tensor([[1.0, -1.0], [0.0, 0.0]]), torch.zeros(2, 2))
    assert s_loss.item() == pytest.approx(0.5)


@pytest.mark.parametrize(("loss_fn", "key"), L1_LOSSES)
def test_l1_losses_reject_mismatched_shapes(
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, float]]], key: str
) -> None:
    with pytest.raises(ValueError, match="must have the same shape"):
        loss_fn(A, B.reshape(1, 4))
    with pytest.raises(ValueError, match="empty"):
        loss_fn(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="floating-point"):
        loss_fn(A.long(), B.long())


def test_diversity_loss_known_value() -> None:
    a = torch.zeros(2, 2, requires_grad=True)
    b = torch.tensor([[1.0, 2.0], [3.0, -2.0]])
    loss, logs = diversity_loss(a, b)  # mean |a - b| = 2, λ = 3
    assert loss.item() == pytest.approx(-6.0)
    assert logs == {"diversity": pytest.approx(-6.0), "diversity_l1": pytest.approx(2.0)}
    torch.autograd.backward(loss)
    # d/da of -3 · mean|a - b| = -3/4 · sign(a - b) = +3/4 where b > 0, -3/4 where b < 0
    assert a.grad is not None
    torch.testing.assert_close(a.grad, torch.tensor([[0.75, 0.75], [0.75, -0.75]]))
    loss1, _ = diversity_loss(a, b, weight=1.0)
    assert loss1.item() == pytest.approx(-2.0)
    same, _ = diversity_loss(b, b)
    assert same.item() == 0.0


def test_diversity_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"image_a .* and image_b .* same shape"):
        diversity_loss(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="weight"):
        diversity_loss(torch.zeros(2), torch.zeros(2), weight=-3.0)
