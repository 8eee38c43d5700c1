"""A blinded validation study (thesis ch. 8.4): which cells the experts see, in what order.

Cells are drawn stratified by their reference class (the phantom's ground truth, or the
class of the chemically stained original): every class gets an equal share of the cells
as far as it has cells, and what a small class cannot fill goes to the larger ones. Each
expert sees the drawn cells in an order of their own, fixed by the study's seed and the
expert's name, so a second expert never follows the first one's sequence and a reload
shows the same order again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

__all__ = ["POOR_QUALITY", "draw_stratified", "expert_order"]

POOR_QUALITY = "PQ"
"""An expert's label for a stained image that cannot be classified (thesis Tables 8.5–8.6)."""


def draw_stratified(references: Mapping[str, str], cells: int, *, seed: int) -> list[str]:
    """``cells`` ids of ``references`` (id → reference class), stratified by class.

    Each class gets ``cells // classes`` (the remainder to the classes in turn); a class
    with fewer cells gives all it has and the rest is shared among the others the same
    way. The ids come back shuffled. Raises ``ValueError`` when fewer cells than asked are
    available, or none.
    """
    if cells < 1:
        raise ValueError(f"a study needs at least one cell, not {cells}")
    if len(references) < cells:
        raise ValueError(f"{cells} cells asked for, but only {len(references)} can be drawn")
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {}
    for cell_id in sorted(references):
        by_class.setdefault(references[cell_id], []).append(cell_id)
    for members in by_class.values():
        rng.shuffle(members)
    quota = dict.fromkeys(by_class, 0)
    left = cells
    while left:
        open_classes = [code for code in sorted(by_class) if quota[code] < len(by_class[code])]
        share, extra = divmod(left, len(open_classes))
        for rank, code in enumerate(open_classes):
            take = min(share + (rank < extra), len(by_class[code]) - quota[code])
            quota[code] += take
            left -= take
    drawn = [cell_id for code in sorted(by_class) for cell_id in by_class[code][: quota[code]]]
    rng.shuffle(drawn)
    return drawn


def expert_order(ids: Sequence[str], *, seed: int, expert: str) -> list[str]:
    """``ids`` in the order ``expert`` sees them: the same on every call, another for
    another expert (a shuffle seeded by the study's seed and the expert's name)."""
    ordered = list(ids)
    random.Random(f"{seed}:{expert}").shuffle(ordered)
    return ordered
