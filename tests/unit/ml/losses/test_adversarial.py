"""WGAN critic/generator losses, gradient penalty and feature matching on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from stainless.ml.losses import (
    feature_matching_loss,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)


def test_wgan_critic_loss_known_value() -> None:
    real = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    fake = torch.tensor([[0.0], [1.0]], requires_grad=True)
    loss, logs = wgan_critic_loss(real, fake)
    # mean(fake) - mean(real) = 0.5 - 2
    assert loss.item() == pytest.approx(-1.5)
    assert logs == pytest.approx({"critic": -1.5, "real": 2.0, "fake": 0.5, "wasserstein": 1.5})
    torch.autograd.backward(loss)
    assert real.grad is not None and fake.grad is not None
    torch.testing.assert_close(real.grad, torch.full((3,), -1 / 3))
    torch.testing.assert_close(fake.grad, torch.full((2, 1), 0.5))


def test_wgan_generator_loss_known_value() -> None:
    loss, logs = wgan_generator_loss(torch.tensor([[-1.0, 2.0], [0.5, 0.5]]))
    assert loss.item() == pytest.approx(-0.5)
    assert logs == {"generator": pytest.approx(-0.5)}


def test_wgan_losses_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="real_scores is empty"):
        wgan_critic_loss(torch.zeros(0), torch.zeros(2))
    with pytest.raises(ValueError, match="floating-point"):
        wgan_generator_loss(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        wgan_generator_loss([1.0])  # type: ignore[arg-type]


def _images(seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic() -> None:
    real, fake = _images()
    w = torch.randn(3 * 5 * 5, generator=torch.Generator().manual_seed(1))

    def critic(x: Tensor) -> Tensor:
        return torch.matmul(x.flatten(1), w / w.norm())

    penalty, logs = gradient_penalty(critic, real, fake, generator=torch.Generator())
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)
    assert logs["gradient_norm"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("weight", [10.0, 1.0, 0.0])
def test_gradient_penalty_equals_weight_for_a_constant_critic(weight: float) -> None:
    real, fake = _images()

    def detached(x: Tensor) -> Tensor:
        return torch.ones(x.shape[0])

    def unused(x: Tensor) -> Tensor:
        return x.sum(dim=(1, 2, 3)) * 0 + 2.0

    for critic in (detached, unused):
        penalty, logs = gradient_penalty(critic, real, fake, weight=weight)
        assert penalty.item() == pytest.approx(weight)
        assert logs == {"gradient_penalty": pytest.approx(weight), "gradient_norm": 0.0}


def test_gradient_penalty_known_value_and_trains_the_critic() -> None:
    real, fake = _images()
    scale = torch.tensor(2.0, requires_grad=True)

    def critic(x: Tensor) -> Tensor:
        return scale * x.sum(dim=(1, 2, 3))

    # gradient of 2·sum(x) is 2 everywhere: norm 2·sqrt(75)
    penalty, _ = gradient_penalty(critic, real, fake, weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (2 * math.sqrt(75) - 1) ** 2, rel=1e-6)
    torch.autograd.backward(penalty)
    # d/dscale of 10·(scale·sqrt(75) - 1)² = 20·(2·sqrt(75) - 1)·sqrt(75)
    assert scale.grad is not None
    assert scale.grad.item() == pytest.approx(20 * (2 * math.sqrt(75) - 1) * math.sqrt(75))


def test_gradient_penalty_interpolates_with_a_seeded_epsilon() -> None:
    real, fake = _images()
    real.requires_grad_(True)

    def critic(x: Tensor) -> Tensor:  # gradient 2·x̂: depends on where x̂ lies
        return (x**2).sum(dim=(1, 2, 3))

    a, _ = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    b, _ = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    c, _ = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item()
    assert a.item() != c.item()
    # By hand: the same ε, x̂ = ε real + (1 - ε) fake, ‖2 x̂‖.
    eps = torch.rand((4, 1, 1, 1), generator=torch.Generator().manual_seed(3))
    mixed = eps * real.detach() + (1 - eps) * fake
    norms = (2 * mixed).flatten(1).norm(dim=1)
    assert a.item() == pytest.approx(float(10 * ((norms - 1) ** 2).mean()), rel=1e-6)
    # the inputs are detached
    torch.autograd.backward(a)
    assert real.grad is None


def test_gradient_penalty_rejects_bad_input() -> None:
    real, fake = _images()
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lambda x: x.sum(), real, fake[:2])
    with pytest.raises(ValueError, match="weight"):
        gradient_penalty(lambda x: x.sum(), real, fake, weight=-1.0)
    with pytest.raises(ValueError, match="batches"):
        gradient_penalty(lambda x: x.sum(), torch.zeros(3), torch.zeros(3))


def test_feature_matching_known_value() -> None:
    real = [
        [torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2, 2, 2)],
        [torch.tensor([[0.0, 0.0, 0.0]])],
    ]
    fake_leaf = torch.tensor([[2.0, 0.0]], requires_grad=True)
    fake = [
        [fake_leaf, torch.ones(1, 2, 2, 2)],
        [torch.tensor([[3.0, -3.0, 0.0]])],
    ]
    # D0: layers (|1| + |2|) / 2 = 1.5 and 1 -> 1.25; D1: 6 / 3 = 2; mean 1.625
    loss, logs = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(1.625)
    assert logs == {"feature_matching": pytest.approx(1.625)}
    loss10, _ = feature_matching_loss(real, fake, weight=10.0)
    assert loss10.item() == pytest.approx(16.25)
    torch.autograd.backward(loss)
    assert fake_leaf.grad is not None
    # d/dfake of 1/2 · 1/2 · mean|fake - real| over 2 elements: ±1/8
    torch.testing.assert_close(fake_leaf.grad, torch.tensor([[0.125, -0.125]]))


def test_feature_matching_rejects_mismatched_structures() -> None:
    a = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="number of discriminators"):
        feature_matching_loss([[a]], [[a], [a]])
    with pytest.raises(ValueError, match="number of discriminators"):
        feature_matching_loss([], [])
    with pytest.raises(ValueError, match=r"discriminator 0: .* layers"):
        feature_matching_loss([[a, a]], [[a]])
    with pytest.raises(ValueError, match=r"real_features\[0\]\[1\]"):
        feature_matching_loss([[a, a]], [[a, torch.zeros(1, 3)]])
