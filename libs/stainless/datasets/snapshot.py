"""Snapshots of the reviewed cells in the database: the data a retraining run reads.

A cell's label is its effective class (:func:`stainless.stages.review.queries.cell_views`:
the latest reclassification, else the latest prediction) once a haematologist has
reviewed it (confirm or reclassify); cells whose latest review says poor quality
are left out. Predicted cells nobody reviewed come in only when asked for, with the
source ``prediction``. The snapshot names the crops already in the store (no
copies); a cell one of whose crops is missing is reported and left out whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from stainless.core.db.cells import CellView, cell_views
from stainless.core.db.models import Slide, utcnow
from stainless.core.storage import ObjectStore
from stainless.datasets.manifest import (
    CLASSES,
    DatasetError,
    DatasetItem,
    DatasetManifest,
    check_name,
    write_manifest,
)
from stainless.domain.review import ReviewAction

__all__ = ["SOURCE_PREDICTION", "SOURCE_REVIEW", "SkippedCell", "build_snapshot"]

SOURCE_REVIEW = "review"
SOURCE_PREDICTION = "prediction"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedCell:
    cell_id: str
    reason: str


def build_snapshot(
    engine: Engine,
    store: ObjectStore,
    *,
    name: str,
    slide_ids: Sequence[str] | None = None,
    include_unreviewed: bool = False,
    description: str = "",
    on_skip: Callable[[SkippedCell], None] | None = None,
) -> tuple[str, DatasetManifest]:
    """Write a snapshot of the labelled cells and return ``(key, manifest)``.

    Items come in slide, field and cell order. Cells left out because an object is
    missing are logged and passed to ``on_skip``.

    Raises:
        DatasetError: a bad name, an unknown slide, or no cell to snapshot.
    """
    check_name(name)
    wanted = list(dict.fromkeys(slide_ids)) if slide_ids else None
    with Session(engine) as session:
        if wanted is None:
            views = cell_views(session)
        else:
            missing = [s for s in wanted if session.get(Slide, s) is None]
            if missing:
                raise DatasetError(f"no slide {', '.join(missing)}")
            views = [v for s in sorted(wanted) for v in cell_views(session, slide_id=s)]
    items: list[DatasetItem] = []
    skipped = 0
    for view in views:
        source = _source(view, include_unreviewed=include_unreviewed)
        if source is None:
            continue
        reason = _missing(store, view) or _unknown_class(view)
        if reason is not None:
            skipped += 1
            log.warning("snapshot %s: cell %s left out: %s", name, view.cell.id, reason)
            if on_skip is not None:
                on_skip(SkippedCell(view.cell.id, reason))
            continue
        assert view.cell.dic_crop_key is not None  # checked by _missing
        items.append(
            DatasetItem(
                id=view.cell.id,
                dic=view.cell.dic_crop_key,
                bf=view.cell.bf_crop_key,
                mask=None,
                label=view.effective_class,
                source=source,
                slide_id=view.cell.slide_id,
            )
        )
    if not items:
        scope = "the slides given" if wanted else "the database"
        left = f" ({skipped} left out for missing objects)" if skipped else ""
        raise DatasetError(f"no labelled cell with its crops in {scope}{left}: nothing to snapshot")
    manifest = DatasetManifest(
        name=name, created_at=utcnow(), items=tuple(items), description=description
    )
    return write_manifest(store, manifest), manifest


def _source(view: CellView, *, include_unreviewed: bool) -> str | None:
    """Why the cell is in the snapshot (its ``source``), or None to leave it out."""
    if view.effective_class is None or not view.counted:  # pending or poor quality
        return None
    review = view.latest_review
    if review is not None:
        if ReviewAction(review.action) in (ReviewAction.CONFIRM, ReviewAction.RECLASSIFY):
            return SOURCE_REVIEW
        return None
    return SOURCE_PREDICTION if include_unreviewed else None


def _unknown_class(view: CellView) -> str | None:
    if view.effective_class not in CLASSES:
        return f"its class {view.effective_class} is not one of the model's ({', '.join(CLASSES)})"
    return None


def _missing(store: ObjectStore, view: CellView) -> str | None:
    cell = view.cell
    if not cell.dic_crop_key:
        return "it has no DIC crop"
    if not store.exists(cell.dic_crop_key):
        return f"its DIC crop {cell.dic_crop_key} is missing from the store"
    if cell.bf_crop_key and not store.exists(cell.bf_crop_key):
        return f"its brightfield crop {cell.bf_crop_key} is missing from the store"
    return None
