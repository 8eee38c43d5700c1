"""Calibration of a confidence score: the probability that a stained cell is acceptable, and
the review threshold that sends a target share of the unacceptable cells to an expert.

* ``fit_calibration``: isotonic regression (non-decreasing) of acceptable (0/1) on δ over
  held-out cells: ``P(acceptable | δ)`` as a step function through its knots, stored with
  the model version and evaluated by ``Calibration.probability``.
* ``review_threshold_for``: the smallest threshold t such that at least ``sensitivity`` of
  the unacceptable cells have δ < t (they go to review); what it costs is the share of all
  cells below it.
* ``reliability``: the calibrated probability against the observed share of acceptable
  cells, in equal-count bins (the reliability diagram).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """``P(acceptable | δ)``: linear between ``knots`` (δ) and ``values``, constant beyond."""

    knots: tuple[float, ...]
    values: tuple[float, ...]

    def probability(self, delta: npt.ArrayLike) -> F64:
        return np.interp(np.asarray(delta, np.float64), self.knots, self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"delta": list(self.knots), "p_acceptable": list(self.values)}


def _scores(scores: npt.ArrayLike, acceptable: npt.ArrayLike) -> tuple[F64, npt.NDArray[np.bool_]]:
    x = np.asarray(scores, np.float64).ravel()
    y = np.asarray(acceptable, bool).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError(f"need two equally long samples of ≥ 2 cells, got {x.size} and {y.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the scores contain NaN or infinite values")
    return x, y


def fit_calibration(scores: npt.ArrayLike, acceptable: npt.ArrayLike) -> Calibration:
    """Isotonic (non-decreasing in δ) regression of acceptable on δ."""
    x, y = _scores(scores, acceptable)
    model = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
    model.fit(x, y.astype(np.float64))
    knots = np.asarray(model.X_thresholds_, np.float64)
    values = np.asarray(model.y_thresholds_, np.float64)
    return Calibration(tuple(float(v) for v in knots), tuple(float(v) for v in values))


def review_threshold_for(
    scores: npt.ArrayLike, acceptable: npt.ArrayLike, sensitivity: float
) -> dict[str, Any]:
    """The review threshold reaching ``sensitivity`` on the unacceptable cells.

    Returns:
        ``threshold`` (None without an unacceptable cell), the ``sensitivity`` reached, the
        ``review_fraction`` of all cells below the threshold, and the counts ``cells`` and
        ``unacceptable``.
    """
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must lie in (0, 1], got {sensitivity}")
    x, y = _scores(scores, acceptable)
    bad = np.sort(x[~y])
    if bad.size == 0:
        return {
            "threshold": None,
            "sensitivity": None,
            "review_fraction": None,
            "cells": int(x.size),
            "unacceptable": 0,
        }
    needed = math.ceil(sensitivity * bad.size)  # unacceptable cells that must lie below
    threshold = float(np.nextafter(bad[needed - 1], np.inf))
    return {
        "threshold": threshold,
        "sensitivity": float(np.mean(bad < threshold)),
        "review_fraction": float(np.mean(x < threshold)),
        "cells": int(x.size),
        "unacceptable": int(bad.size),
    }


def reliability(
    probabilities: npt.ArrayLike, acceptable: npt.ArrayLike, bins: int = 5
) -> list[dict[str, float]]:
    """Equal-count bins of the predicted probability: its mean and the observed share of
    acceptable cells in each (``cells``, ``predicted``, ``observed``)."""
    p, y = _scores(probabilities, acceptable)
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, p.size)):
        if chunk.size:
            rows.append(
                {
                    "cells": float(chunk.size),
                    "predicted": float(p[chunk].mean()),
                    "observed": float(y[chunk].mean()),
                }
            )
    return rows
