"""L1 reconstruction, style reconstruction and diversity losses (thesis ch. 5.2, 6.1).

Pure functions returning ``(loss, logs)``; every L1 is the mean absolute difference over
all elements (batch included), the expectation of the thesis' ``‖·‖₁`` terms.
"""

from __future__ import annotations

from torch import Tensor

from stainless.ml.losses._checks import check_same_shape, check_weight

Logs = dict[str, float]


def _l1(name_a: str, a: Tensor, name_b: str, b: Tensor) -> Tensor:
    check_same_shape(name_a, a, name_b, b)
    return (a - b).abs().mean()


def cycle_loss(original: Tensor, reconstructed: Tensor) -> tuple[Tensor, Logs]:
    """Cycle consistency ``mean|x - G(G(x, c_T), c_S)|`` (thesis Eq. 5.3, 6.5).

    Args:
        original: input images ``[B, ...]``.
        reconstructed: the images translated to the target domain and back, same shape.

    Returns:
        The loss and logs ``cycle``.
    """
    loss = _l1("original", original, "reconstructed", reconstructed)
    return loss, {"cycle": float(loss.detach())}


def pairwise_reconstruction_loss(generated: Tensor, target: Tensor) -> tuple[Tensor, Logs]:
    """Pair-wise reconstruction ``mean|x_T - G(h_S, c_T)|`` where pairs exist (Eq. 5.6).

    Args:
        generated: translated images ``[B, ...]``.
        target: the registered real images of the target domain, same shape.

    Returns:
        The loss and logs ``reconstruction``.
    """
    loss = _l1("generated", generated, "target", target)
    return loss, {"reconstruction": float(loss.detach())}


def latent_alignment_loss(latent_a: Tensor, latent_b: Tensor) -> tuple[Tensor, Logs]:
    """Latent alignment ``mean|En(x_A) - En(x_B)|`` of the same cells seen in two domains.

    Not in the thesis: a term for the label-transfer setting that pulls the shared latent
    of each registered DIC/brightfield pair together, so that a classifier trained on one
    domain's latents reads the other's.

    Args:
        latent_a: latents of cells in one domain ``[B, ...]``.
        latent_b: latents of the same cells, in the same order, in another domain.

    Returns:
        The loss and logs ``latent_alignment``.
    """
    loss = _l1("latent_a", latent_a, "latent_b", latent_b)
    return loss, {"latent_alignment": float(loss.detach())}


def style_reconstruction_loss(s_pred: Tensor, s_target: Tensor) -> tuple[Tensor, Logs]:
    """Style reconstruction ``mean|s̃ - En_s(G(x, s̃, ·))|`` (thesis Eq. 6.2).

    Args:
        s_pred: style codes re-encoded from the generated images ``[B, D]``.
        s_target: the style codes the images were generated with, same shape.

    Returns:
        The loss and logs ``style``.
    """
    loss = _l1("s_pred", s_pred, "s_target", s_target)
    return loss, {"style": float(loss.detach())}


def diversity_loss(image_a: Tensor, image_b: Tensor, *, weight: float = 3.0) -> tuple[Tensor, Logs]:
    """Diversity-sensitive loss ``-λ mean|G(x, s₁) - G(x, s₂)|``, to minimise (Eq. 6.4).

    Minimising it maximises the L1 distance between two outputs generated from two
    different style (or structure) codes, as in StarGAN v2.

    Args:
        image_a: outputs with the first code ``[B, ...]``.
        image_b: outputs with the second code, same shape.
        weight: λ (3 in the thesis, Table 6.1; DESIGN).

    Returns:
        The (non-positive) loss and logs ``diversity`` (the loss) and ``diversity_l1``
        (the unweighted distance).
    """
    check_weight("weight", weight)
    distance = _l1("image_a", image_a, "image_b", image_b)
    loss = -weight * distance
    return loss, {"diversity": float(loss.detach()), "diversity_l1": float(distance.detach())}
