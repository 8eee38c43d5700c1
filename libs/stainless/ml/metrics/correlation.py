"""Correlations with their uncertainty: Pearson, Spearman, partial, bootstrap intervals.

Pure functions of equally long samples (one value per cell). A correlation is never shown
without its sample size and a 95% interval: ``correlation_summary`` gives all of them at
once, the partial correlation controlling for a third variable (e.g. the cell's area, which
δ tracks) beside the plain ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

F64 = npt.NDArray[np.float64]


def _pair(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[F64, F64]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError(f"need two samples of equal length ≥ 2, got {a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("the samples contain NaN or infinite values")
    return a, b


def pearson_r(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation of two equally long samples (e.g. δ against per-cell LPIPS)."""
    a, b = _pair(x, y)
    if a.std() == 0 or b.std() == 0:
        raise ValueError("Pearson r is undefined for a constant sample")
    return float(np.corrcoef(a, b)[0, 1])


def spearman_r(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's rank correlation (ties share their mean rank)."""
    a, b = _pair(x, y)
    return pearson_r(rankdata(a), rankdata(b))


def partial_r(x: npt.ArrayLike, y: npt.ArrayLike, control: npt.ArrayLike) -> float:
    """Pearson correlation of x and y once each is freed of its linear relation to
    ``control`` (the residuals of a least-squares line on it)."""
    a, b = _pair(x, y)
    _, c = _pair(a, control)
    design = np.stack([c, np.ones_like(c)], axis=1)
    residual_a = a - design @ np.linalg.lstsq(design, a, rcond=None)[0]
    residual_b = b - design @ np.linalg.lstsq(design, b, rcond=None)[0]
    return pearson_r(residual_a, residual_b)


def bootstrap_interval(
    statistic: Callable[[npt.NDArray[np.intp]], float],
    n: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(indices)`` over resamples of ``n`` items
    drawn with replacement; resamples where it is undefined (a constant sample) are skipped.
    None when fewer than half are defined."""
    if n < 3:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        try:
            values.append(statistic(rng.integers(0, n, n)))
        except ValueError:
            continue
    if len(values) < resamples // 2:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def correlation_summary(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    control: npt.ArrayLike | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``n``, Pearson and Spearman r of x and y with bootstrap 95% intervals (``*_ci``), and
    with a ``control`` the partial Pearson r controlling for it and its interval. A figure
    that is undefined (a constant sample, too few cells) is None."""
    a, b = _pair(x, y)
    c = None if control is None else _pair(a, control)[1]

    def guarded(function: Callable[..., float], *samples: F64) -> float | None:
        try:
            return function(*samples)
        except ValueError:
            return None

    def interval(function: Callable[..., float], *samples: F64) -> tuple[float, float] | None:
        return bootstrap_interval(
            lambda i: function(*(s[i] for s in samples)), a.size, resamples=resamples, seed=seed
        )

    summary: dict[str, Any] = {
        "n": int(a.size),
        "pearson": guarded(pearson_r, a, b),
        "pearson_ci": interval(pearson_r, a, b),
        "spearman": guarded(spearman_r, a, b),
        "spearman_ci": interval(spearman_r, a, b),
    }
    if c is not None:
        summary["partial"] = guarded(partial_r, a, b, c)
        summary["partial_ci"] = interval(partial_r, a, b, c)
    return summary
