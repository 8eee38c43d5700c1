"""Loss functions of the three translators (thesis ch. 5.2, 6.1, 8.2), pure functions.

Each returns ``(loss, logs)``: a scalar tensor to backpropagate and ``dict[str, float]``.
"""

from __future__ import annotations

from stainless.ml.losses.adversarial import (
    feature_matching_loss,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from stainless.ml.losses.classification import (
    classification_loss,
    domain_classification_loss,
    paired_targets,
    segmentation_loss,
    soft_classification_loss,
    structure_loss,
)
from stainless.ml.losses.reconstruction import (
    cycle_loss,
    diversity_loss,
    latent_alignment_loss,
    pairwise_reconstruction_loss,
    style_reconstruction_loss,
)

__all__ = [
    "classification_loss",
    "cycle_loss",
    "diversity_loss",
    "domain_classification_loss",
    "feature_matching_loss",
    "gradient_penalty",
    "latent_alignment_loss",
    "paired_targets",
    "pairwise_reconstruction_loss",
    "segmentation_loss",
    "soft_classification_loss",
    "structure_loss",
    "style_reconstruction_loss",
    "wgan_critic_loss",
    "wgan_generator_loss",
]
