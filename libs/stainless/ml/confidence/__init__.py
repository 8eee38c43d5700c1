"""Confidence of generated images: mutual information and latent noise injection (ch. 6-7)."""

from __future__ import annotations

from stainless.ml.confidence.mutual_information import (
    ChannelMode,
    bin_labels,
    default_bins,
    image_delta,
    mutual_information,
)
from stainless.ml.confidence.noise import (
    DISENTANGLED,
    WHOLE_LATENT,
    ConfidenceResult,
    DisentangledModel,
    LatentModel,
    disentangled_confidence,
    naive_whole_latent_confidence,
    whole_latent_confidence,
)

__all__ = [
    "DISENTANGLED",
    "WHOLE_LATENT",
    "ChannelMode",
    "ConfidenceResult",
    "DisentangledModel",
    "LatentModel",
    "bin_labels",
    "default_bins",
    "disentangled_confidence",
    "image_delta",
    "mutual_information",
    "naive_whole_latent_confidence",
    "whole_latent_confidence",
]
