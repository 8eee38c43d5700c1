"""Wasserstein adversarial losses with gradient penalty (thesis ch. 5.2, 6.3, 8.2).

The thesis follows StarGAN in replacing the log-likelihood objective of Eq. (5.1) and
(6.1) with the Wasserstein GAN objective and the gradient penalty of Gulrajani et al.
(2017): the critic minimises ``E[D(fake)] - E[D(real)] + λ_gp E[(‖∇D(x̂)‖₂ - 1)²]`` with
``x̂ = ε real + (1 - ε) fake``, ε ~ U[0, 1] per sample; the generator minimises
``-E[D(fake)]``. Also the feature-matching loss of the paired model (Pix2PixHD, ch. 8).

Every function is pure and returns ``(loss, logs)``: a scalar tensor in the graph and
plain floats for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stainless.ml.losses._checks import check_same_shape, check_tensor, check_weight, shape

Logs = dict[str, float]


def wgan_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> tuple[Tensor, Logs]:
    """Critic loss ``mean(D(fake)) - mean(D(real))`` (WGAN form of thesis Eq. 5.1 / 6.1).

    Args:
        real_scores: critic outputs on real images, any shape (e.g. ``[B]``, ``[B, 1]``
            or patch scores ``[B, 1, h, w]``).
        fake_scores: critic outputs on generated images (detached by the caller).

    Returns:
        The loss and logs ``critic``, ``real``, ``fake`` and ``wasserstein``
        (``mean(real) - mean(fake)``, the critic's distance estimate).
    """
    check_tensor("real_scores", real_scores)
    check_tensor("fake_scores", fake_scores)
    real, fake = real_scores.mean(), fake_scores.mean()
    loss = fake - real
    r, f = float(real.detach()), float(fake.detach())
    return loss, {"critic": f - r, "real": r, "fake": f, "wasserstein": r - f}


def wgan_generator_loss(fake_scores: Tensor) -> tuple[Tensor, Logs]:
    """Generator loss ``-mean(D(fake))`` (WGAN form of thesis Eq. 5.1 / 6.1).

    Args:
        fake_scores: critic outputs on generated images, any shape.

    Returns:
        The loss and logs ``generator``.
    """
    check_tensor("fake_scores", fake_scores)
    loss = -fake_scores.mean()
    return loss, {"generator": float(loss.detach())}


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Logs]:
    """WGAN-GP penalty ``weight · mean((‖∇_x̂ D(x̂)‖₂ - 1)²)`` (Gulrajani et al. 2017).

    x̂ = ε·real + (1 - ε)·fake with one ε ~ U[0, 1) per sample; both inputs are detached,
    the graph through the critic is kept (``create_graph``) so the penalty trains it.
    A critic whose output does not depend on x̂ has a zero gradient (penalty = weight).

    Args:
        critic: maps ``[B, ...]`` images to scores (any shape with batch first).
        real: real images ``[B, ...]``.
        fake: generated images, same shape.
        weight: λ_gp (default 10, as in WGAN-GP and StarGAN, thesis ch. 5.3 / 6.3).
        generator: torch generator for ε.

    Returns:
        The penalty and logs ``gradient_penalty`` and ``gradient_norm`` (mean ‖∇‖₂).
    """
    check_same_shape("real", real, "fake", fake)
    check_weight("weight", weight)
    if real.dim() < 2:
        raise ValueError(f"real and fake must be batches [B, ...], got {shape(real)}")
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    # Drawn where the generator lives (a CPU generator for GPU tensors too), then moved.
    device = generator.device if generator is not None else real.device
    eps = torch.rand(eps_shape, generator=generator, dtype=real.dtype, device=device)
    eps = eps.to(real.device)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(mixed)
        grad: Tensor | None = None
        if isinstance(scores, Tensor) and scores.requires_grad:
            (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(mixed)
    norms = grad.flatten(1).norm(p=2, dim=1)
    penalty = weight * ((norms - 1) ** 2).mean()
    return penalty, {
        "gradient_penalty": float(penalty.detach()),
        "gradient_norm": float(norms.detach().mean()),
    }


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]],
    fake_features: Sequence[Sequence[Tensor]],
    *,
    weight: float = 1.0,
) -> tuple[Tensor, Logs]:
    """L1 between the discriminators' intermediate features on real and fake (ch. 8.2).

    Pix2PixHD feature matching: for each discriminator (scale) the mean over its layers of
    ``mean|fake - real|``, then the mean over discriminators, times ``weight``. The real
    features are detached (they are targets).

    Args:
        real_features: per discriminator, its intermediate feature maps on the real pair.
        fake_features: the same structure on the generated pair.
        weight: multiplier (Pix2PixHD uses 10).

    Returns:
        The loss and logs ``feature_matching``.
    """
    check_weight("weight", weight)
    if len(real_features) == 0 or len(real_features) != len(fake_features):
        raise ValueError(
            f"need the same non-zero number of discriminators, got {len(real_features)} real "
            f"and {len(fake_features)} fake"
        )
    per_discriminator = []
    for d, (reals, fakes) in enumerate(zip(real_features, fake_features, strict=True)):
        if len(reals) == 0 or len(reals) != len(fakes):
            raise ValueError(
                f"discriminator {d}: need the same non-zero number of layers, got "
                f"{len(reals)} real and {len(fakes)} fake"
            )
        layers = []
        for j, (r, f) in enumerate(zip(reals, fakes, strict=True)):
            check_same_shape(f"real_features[{d}][{j}]", r, f"fake_features[{d}][{j}]", f)
            layers.append((f - r.detach()).abs().mean())
        per_discriminator.append(torch.stack(layers).mean())
    loss = weight * torch.stack(per_discriminator).mean()
    return loss, {"feature_matching": float(loss.detach())}
