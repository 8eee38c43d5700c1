"""The image-quality metrics with the backbones a site configured (``EvaluationSettings``).

A backbone is a local path or ``store:<key>``, an object in the object store (fetched into
a temporary file and loaded from it). Nothing is downloaded; without a backbone LPIPS and
FID run on a random one, and their ``provenance`` says so beside every figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stainless.core.config import EvaluationSettings
from stainless.core.storage.base import ObjectStore
from stainless.ml.metrics.fid import FidMetric
from stainless.ml.metrics.perceptual import PerceptualMetric

STORE_PREFIX = "store:"


def quality_metrics(
    settings: EvaluationSettings, store: ObjectStore | None = None
) -> tuple[PerceptualMetric, FidMetric]:
    """LPIPS and FID with the configured backbones (random where none is configured).

    Raises:
        FileNotFoundError: a configured local file or object that does not exist (the
            message names it).
        ValueError: a ``store:`` backbone without an object store.
    """
    with tempfile.TemporaryDirectory() as folder:
        lpips_path = local_weights(settings.lpips_backbone, store, Path(folder) / "lpips.pth")
        fid_path = local_weights(settings.fid_weights, store, Path(folder) / "fid.pth")
        return (
            PerceptualMetric(backbone_weights=lpips_path, source=settings.lpips_backbone),
            FidMetric(net=settings.fid_net, weights=fid_path, source=settings.fid_weights),
        )


def local_weights(reference: str | None, store: ObjectStore | None, into: Path) -> Path | None:
    """The local file of a backbone reference: the path itself, or ``store:<key>`` written
    to ``into``; None without a reference."""
    if reference is None:
        return None
    if not reference.startswith(STORE_PREFIX):
        return Path(reference)
    key = reference.removeprefix(STORE_PREFIX)
    if store is None:
        raise ValueError(f"backbone {reference!r} is in the object store, but none is configured")
    if not store.exists(key):
        raise FileNotFoundError(f"backbone weights not found in the object store at {key!r}")
    into.write_bytes(store.get(key))
    return into
