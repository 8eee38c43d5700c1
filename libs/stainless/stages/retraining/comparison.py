"""Whether a candidate model version may replace the one served: compared on the same cells.

A training job evaluates its model on the snapshot's held-out cells and, when a version is
served, that version on the same cells; the candidate's metrics keep the served version's
figures under ``comparison``. Promotion reads them here: a candidate that was not compared
with the version served now, was compared on too few cells, or is worse by more than a
tolerance on a shared metric is refused (an operator may force it, and the reason is
printed either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_HELD_OUT_CELLS = 30
"""Fewer held-out cells set no review threshold and decide no comparison: at 30 cells one
cell moves an accuracy by 0.03, and a sensitivity quantile rests on a handful of cells."""

TOLERANCES = {"accuracy": 0.02, "ssim": 0.02}
"""How far below the served version a candidate may fall on each metric (higher is better):
about one cell in 45 for the accuracy, the spread of the SSIM between training seeds."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def comparison_of(
    served_id: str, served_name: str, figures: dict[str, Any], cells: int
) -> dict[str, Any]:
    """What a candidate's metrics keep of the served version's figures on its held-out cells."""
    shared = {name: figures[name] for name in TOLERANCES if figures.get(name) is not None}
    return {"model_version_id": served_id, "model": served_name, "cells": cells, **shared}


def judge(candidate: str, metrics: dict[str, Any], served_id: str, served_name: str) -> Verdict:
    """Whether ``candidate`` (with its registry ``metrics``) may replace ``served_name``."""
    compared = metrics.get("comparison")
    if not isinstance(compared, dict) or compared.get("model_version_id") != served_id:
        other = f" (it was compared with {compared['model']})" if isinstance(compared, dict) else ""
        return Verdict(
            False,
            f"{candidate} was not compared with the served {served_name} on the same "
            f"held-out cells{other}",
        )
    cells = int(compared.get("cells", 0))
    if cells < MIN_HELD_OUT_CELLS:
        return Verdict(
            False,
            f"{candidate} was compared with {served_name} on {cells} held-out cells: "
            f"at least {MIN_HELD_OUT_CELLS} are needed to tell which is better",
        )
    figures = []
    for name, tolerance in TOLERANCES.items():
        ours, theirs = metrics.get(name), compared.get(name)
        if ours is None or theirs is None:
            continue
        figures.append(f"{name} {ours:.3f} against {theirs:.3f}")
        if ours < theirs - tolerance:
            return Verdict(
                False,
                f"{candidate} is worse than the served {served_name} on the same {cells} "
                f"held-out cells: {name} {ours:.3f} against {theirs:.3f}",
            )
    if not figures:
        return Verdict(False, f"{candidate} and {served_name} share no metric to compare")
    return Verdict(
        True, f"on the same {cells} held-out cells as {served_name}: " + ", ".join(figures)
    )
