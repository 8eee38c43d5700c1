"""The inference port: stain, classify and score confidence for a batch of DIC crops."""

from __future__ import annotations

from stainless.core.inference.factory import create_inference
from stainless.core.inference.port import (
    CellOutput,
    InferencePort,
    InferenceRejected,
    InferenceUnavailable,
)

__all__ = [
    "CellOutput",
    "InferencePort",
    "InferenceRejected",
    "InferenceUnavailable",
    "create_inference",
]
