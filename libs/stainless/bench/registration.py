"""Registration benchmark: ``Registrar`` against plain full-resolution ECC, on phantoms.

Each pair is one phantom field (``generate_field`` with the generator of
``field_rng(seed, 0, index)``) whose ground-truth brightfield -> DIC affine is known. Both
methods run in this process on the same pair, one after the other; field generation is not
timed. The error of an estimate is ``corner_error_px`` against the truth.

Baseline: ``cv2.findTransformECC`` with an affine model on the full-resolution images,
starting from the identity, with the ``Registrar``'s iteration limit and epsilon. By default
it compares the same images as the ``Registrar`` (DIC against the brightfield pseudo-DIC),
so the comparison isolates the pyramid and the phase-correlation start; ``"naive"``
compares DIC intensity with brightfield grey level instead. A baseline run fails when ECC
raises (no convergence), or its error exceeds ``failure_px``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stainless.imaging.phantom import generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.imaging.registration import (
    REPRESENTATION,
    Registrar,
    baseline_register,
    corner_error_px,
)

Progress = Callable[[], None]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_registration_bench(
    pairs: int = 20,
    seed: int = 0,
    *,
    width: int | None = None,
    height: int | None = None,
    registrar: Registrar | None = None,
    baseline: bool = True,
    baseline_representation: str = "pseudo-dic",
    failure_px: float = 5.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Register ``pairs`` phantom fields with ``Registrar`` and the baseline.

    Args:
        pairs: number of field pairs.
        seed: phantom seed (pair ``i`` uses ``field_rng(seed, 0, i)``).
        width: field width (default 2064).
        height: field height (default 1544).
        registrar: the registrar to measure (default settings when None).
        baseline: also run the baseline.
        baseline_representation: ``"pseudo-dic"`` or ``"naive"``.
        failure_px: a baseline error above this counts as a failure.
        progress: called after each pair.

    Returns:
        ``pairs, median_err_px, p95_err_px, max_err_px, s_per_pair, accepted,
        baseline_median_err_px, baseline_p95_err_px, baseline_s_per_pair,
        baseline_failures, speedup, representation`` and details. Baseline error
        statistics cover the runs that returned a transform (a raised ECC has none).
    """
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    config = phantom_config(width=width, height=height)
    registrar = registrar or Registrar()
    errors: list[float] = []
    seconds: list[float] = []
    accepted = 0
    base_errors: list[float] = []
    base_seconds: list[float] = []
    base_failures = 0
    base_exceptions = 0
    for index in range(pairs):
        field = generate_field(config, field_rng(seed, 0, index))
        started = time.perf_counter()
        result = registrar.register(field.dic, field.bf)
        seconds.append(time.perf_counter() - started)
        errors.append(
            corner_error_px(
                result.affine_bf_to_dic, field.affine_bf_to_dic, config.width, config.height
            )
        )
        accepted += int(result.accepted)
        if baseline:
            started = time.perf_counter()
            affine, _, problem = baseline_register(
                field.dic,
                field.bf,
                representation=baseline_representation,
                max_iterations=registrar.max_iterations,
                epsilon=registrar.epsilon,
                shear_angle_deg=registrar.shear_angle_deg,
            )
            base_seconds.append(time.perf_counter() - started)
            if affine is None or problem is not None:
                base_failures += 1
                base_exceptions += 1
            else:
                error = corner_error_px(affine, field.affine_bf_to_dic, config.width, config.height)
                base_errors.append(error)
                base_failures += int(not error <= failure_px)
        if progress is not None:
            progress()
    s_per_pair = float(np.mean(seconds))
    base_s = float(np.mean(base_seconds)) if base_seconds else None
    representation = REPRESENTATION
    if baseline:
        representation += f"; baseline: {baseline_representation}, full resolution, from identity"
    return {
        "pairs": pairs,
        "width": config.width,
        "height": config.height,
        "median_err_px": float(np.median(errors)),
        "p95_err_px": float(np.percentile(errors, 95)),
        "max_err_px": float(np.max(errors)),
        "s_per_pair": s_per_pair,
        "accepted": accepted,
        "baseline_median_err_px": _percentile(base_errors, 50),
        "baseline_p95_err_px": _percentile(base_errors, 95),
        "baseline_s_per_pair": base_s,
        "baseline_failures": base_failures if baseline else None,
        "baseline_exceptions": base_exceptions if baseline else None,
        "baseline_failure_px": failure_px,
        "speedup": base_s / s_per_pair if base_s is not None and s_per_pair > 0 else None,
        "representation": representation,
        "levels": registrar.levels,
        "finest_level": registrar.finest_for(config.width, config.height),
        "motion": str(registrar.motion),
        "seed": seed,
    }


def is_number(value: object) -> bool:
    """Whether a bench value is a finite float or int (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
