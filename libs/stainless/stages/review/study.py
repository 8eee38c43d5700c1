"""Blinded validation studies (thesis ch. 8.4): draw cells, collect experts' labels.

A study draws stained cells from chosen slides, stratified by their reference class
(:mod:`stainless.domain.study`); its items fix, when drawn, the stained image, the
reference class and the automatic classifier's class, so later predictions or reviews of
the cells change nothing in it. An expert sees only item ids and stained images, in an
order of their own, and labels each with one of the study's classes or ``PQ``; a new
label of the same item replaces the expert's earlier one. Each write is one transaction
with its audit event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from stainless.core.audit import Actor, add_audit
from stainless.core.db.cells import cell_views
from stainless.core.db.engine import session_scope
from stainless.core.db.models import Slide, Study, StudyItem, StudyLabel, utcnow
from stainless.core.http.errors import Conflict, Invalid, NotFound
from stainless.domain.study import POOR_QUALITY, draw_stratified, expert_order
from stainless.domain.vocabulary import TO_CLINICAL, vocabulary_for

__all__ = [
    "PHANTOM_REFERENCE",
    "Drawn",
    "ExpertItems",
    "StudyLabels",
    "StudyRow",
    "create_study",
    "expert_items",
    "item_stain_key",
    "label_item",
    "list_studies",
    "study_labels",
    "study_row",
]

PHANTOM_REFERENCE = "phantom ground truth"


@dataclass(frozen=True)
class Drawn:
    """A new study, what was left out of the draw by reason (cells without a stained image
    or without a reference class), and how many given reference classes named no cell of
    the slides."""

    study: Study
    items: int
    left_out: dict[str, int]
    unmatched_references: int = 0


def _checked_class(code: str, *, cell_id: str) -> str:
    if code not in TO_CLINICAL:
        raise Invalid(
            f"reference class {code!r} of cell {cell_id} is not a known class: "
            f"expected one of {', '.join(TO_CLINICAL)}"
        )
    return code


def create_study(
    engine: Engine,
    *,
    name: str,
    slide_ids: Sequence[str],
    cells: int,
    seed: int,
    actor: Actor,
    references: Mapping[str, str] | None = None,
    reference: str = PHANTOM_REFERENCE,
) -> Drawn:
    """Draw ``cells`` stained cells of ``slide_ids`` stratified by reference class.

    The reference classes are ``references`` (cell id → class, e.g. the chemically stained
    original's labels), else the cells' phantom ground truth; ``reference`` says which.
    The study's classes are those of the vocabulary its reference and automatic classes
    need (healthy or clinical; SNE counts as NE in the clinical one).

    Raises:
        Invalid: no slides, an unknown reference class, or fewer usable cells than asked.
        NotFound: an unknown slide.
        Conflict: a study of that name exists.
    """
    if not slide_ids:
        raise Invalid("a study needs at least one slide")
    with session_scope(engine) as session:
        if session.exec(select(Study).where(Study.name == name)).first() is not None:
            raise Conflict(f"a study named {name!r} already exists")
        usable: dict[str, tuple[str, str, str | None, str | None]] = {}
        seen: set[str] = set()
        left_out = {"no stained image": 0, "no reference class": 0}
        for slide_id in dict.fromkeys(slide_ids):
            if session.get(Slide, slide_id) is None:
                raise NotFound(f"no slide {slide_id}")
            for view in cell_views(session, slide_id=slide_id):
                prediction = view.prediction
                cell_id = view.cell.id
                seen.add(cell_id)
                truth = references.get(cell_id) if references is not None else view.cell.true_class
                if prediction is None or prediction.stain_key is None:
                    left_out["no stained image"] += 1
                elif truth is None:
                    left_out["no reference class"] += 1
                else:
                    usable[cell_id] = (
                        prediction.stain_key,
                        _checked_class(truth, cell_id=cell_id),
                        prediction.predicted_class,
                        prediction.model_version,
                    )
        vocabulary = vocabulary_for(
            code for _, truth, automatic, _ in usable.values() for code in (truth, automatic)
        )
        try:
            drawn = draw_stratified(
                {cell_id: vocabulary.code_of(row[1]) for cell_id, row in usable.items()},
                cells,
                seed=seed,
            )
        except ValueError as exc:
            raise Invalid(f"cannot draw the study: {exc}") from None
        study = Study(
            name=name,
            vocabulary=vocabulary.name,
            classes=list(vocabulary.classes),
            reference=reference,
            slide_ids=list(dict.fromkeys(slide_ids)),
            seed=seed,
            created_by=actor.name,
        )
        session.add(study)
        session.flush()
        for cell_id in drawn:
            stain_key, truth, automatic, model_version = usable[cell_id]
            session.add(
                StudyItem(
                    study_id=study.id,
                    cell_id=cell_id,
                    stain_key=stain_key,
                    reference_class=vocabulary.code_of(truth),
                    automatic_class=vocabulary.code_of(automatic) if automatic else None,
                    model_version=model_version,
                )
            )
        detail = {"name": name, "cells": len(drawn), "reference": reference, "seed": seed}
        add_audit(session, actor, "study-create", f"study:{study.id}", detail)
    unmatched = len(set(references) - seen) if references is not None else 0
    return Drawn(study, len(drawn), {reason: n for reason, n in left_out.items() if n}, unmatched)


def _study(session: Session, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study


def _items(session: Session, study_id: str) -> list[StudyItem]:
    query = select(StudyItem).where(StudyItem.study_id == study_id).order_by(col(StudyItem.id))
    return list(session.exec(query).all())


@dataclass(frozen=True)
class ExpertItems:
    """What one expert sees of a study: its classes, the item ids in the expert's order
    and the expert's own labels so far (nothing of the reference or other experts)."""

    study: Study
    item_ids: list[str]
    labels: dict[str, str]


def expert_items(engine: Engine, *, study_id: str, expert: str) -> ExpertItems:
    with Session(engine) as session:
        study = _study(session, study_id)
        ids = [item.id for item in _items(session, study_id)]
        own = session.exec(
            select(StudyLabel).where(StudyLabel.study_id == study_id, StudyLabel.expert == expert)
        ).all()
    return ExpertItems(
        study, expert_order(ids, seed=study.seed, expert=expert), {r.item_id: r.label for r in own}
    )


def _item(session: Session, study_id: str, item_id: str) -> StudyItem:
    item = session.get(StudyItem, item_id)
    if item is None or item.study_id != study_id:
        raise NotFound(f"study {study_id} has no item {item_id}")
    return item


def item_stain_key(engine: Engine, *, study_id: str, item_id: str) -> str:
    """The object key of the stained image an item shows."""
    with Session(engine) as session:
        return _item(session, study_id, item_id).stain_key


def label_item(
    engine: Engine, *, study_id: str, item_id: str, expert: str, label: str, actor: Actor
) -> StudyLabel:
    """Record (or replace) ``expert``'s label of an item.

    Raises:
        NotFound: no such study, or the item is not one of its items.
        Invalid: the label is neither one of the study's classes nor ``PQ``.
    """
    try:
        with session_scope(engine) as session:
            study = _study(session, study_id)
            if label not in (*study.classes, POOR_QUALITY):
                choices = ", ".join((*study.classes, POOR_QUALITY))
                raise Invalid(f"unknown label {label!r}; expected one of {choices}")
            _item(session, study_id, item_id)
            row = session.get(StudyLabel, (item_id, expert)) or StudyLabel(
                item_id=item_id, expert=expert, study_id=study_id, label=label
            )
            row.label, row.labelled_at = label, utcnow()
            session.add(row)
            add_audit(session, actor, "study-label", f"study:{study_id}:{item_id}")
    except IntegrityError:  # the same expert's first label of the item, sent twice at once
        raise Conflict(f"item {item_id} was labelled at the same time; send it again") from None
    return row


@dataclass(frozen=True)
class StudyRow:
    """A study in a list: its size and each expert's count of labelled items."""

    study: Study
    items: int
    labelled: dict[str, int]


def _rows(session: Session, studies: Sequence[Study]) -> list[StudyRow]:
    ids = [found.id for found in studies]
    sizes = select(StudyItem.study_id, func.count()).where(col(StudyItem.study_id).in_(ids))
    labelled = select(StudyLabel.study_id, StudyLabel.expert, func.count()).where(
        col(StudyLabel.study_id).in_(ids)
    )
    items = dict(session.exec(sizes.group_by(col(StudyItem.study_id))).all())
    experts: dict[str, dict[str, int]] = {}
    grouped = labelled.group_by(col(StudyLabel.study_id), col(StudyLabel.expert))
    for study_id, expert, count in session.exec(grouped).all():
        experts.setdefault(study_id, {})[expert] = int(count)
    return [
        StudyRow(
            found, int(items.get(found.id, 0)), dict(sorted(experts.get(found.id, {}).items()))
        )
        for found in studies
    ]


def list_studies(engine: Engine) -> list[StudyRow]:
    """Every study, newest first."""
    with Session(engine) as session:
        return _rows(
            session, session.exec(select(Study).order_by(col(Study.created_at).desc())).all()
        )


def study_row(engine: Engine, *, study_id: str) -> StudyRow:
    """One study with its size and each expert's progress."""
    with Session(engine) as session:
        return _rows(session, [_study(session, study_id)])[0]


@dataclass(frozen=True)
class StudyLabels:
    """A study's items and every expert's labels (expert → item id → label)."""

    study: Study
    items: list[StudyItem]
    labels: dict[str, dict[str, str]]


def study_labels(engine: Engine, *, study_id: str) -> StudyLabels:
    with Session(engine) as session:
        study = _study(session, study_id)
        items = _items(session, study_id)
        rows = session.exec(select(StudyLabel).where(StudyLabel.study_id == study_id)).all()
    labels: dict[str, dict[str, str]] = {}
    for row in rows:
        labels.setdefault(row.expert, {})[row.item_id] = row.label
    return StudyLabels(study, items, dict(sorted(labels.items())))
