"""``stainless study``: blinded validation studies (thesis ch. 8.4) from the command line.

``create`` draws the cells, experts label them on the results service's study page
(``/studies/<id>``), ``report`` writes what they agreed on. The commands use the database
of the settings, as the results service does.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import Session, select

from stainless.cli.output import err, out
from stainless.cli.scanners import admin_engine
from stainless.core.audit import command_line_actor
from stainless.core.db.models import Study
from stainless.core.http.errors import ServiceError
from stainless.stages.review.study import (
    PHANTOM_REFERENCE,
    create_study,
    list_studies,
    study_labels,
)
from stainless.stages.review.study_report import study_report, write_study_report

study_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Blinded validation studies: draw stained cells for experts, report their agreement.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def read_references(path: Path) -> dict[str, str]:
    """``cell_id,class`` rows (a header line first): the classes the chemically stained
    original was given. Raises ``ValueError`` with the line at fault."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
            header = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not {"cell_id", "class"} <= header:
        raise ValueError(f"{path}: the header must name the columns cell_id and class")
    references: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        cell_id, code = (row["cell_id"] or "").strip(), (row["class"] or "").strip()
        if not cell_id or not code:
            raise ValueError(f"{path}, line {line}: a cell_id and a class are needed")
        if references.setdefault(cell_id, code) != code:
            raise ValueError(f"{path}, line {line}: cell {cell_id} has two classes")
    return references


@study_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The study's unique name.")],
    slide: Annotated[
        list[str], typer.Option("--slide", help="A slide id to draw from (repeat it).")
    ],
    cells: Annotated[int, typer.Option(min=1, help="How many cells to draw.")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the draw and the orders.")] = 0,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="CSV of cell_id,class: the classes of the chemically stained original "
            "(default: the phantom's ground truth)."
        ),
    ] = None,
) -> None:
    """Draw CELLS stained cells of the slides, stratified by reference class; print the
    study id. Experts open /studies/<id> on the results service."""
    try:
        references = read_references(reference) if reference else None
        drawn = create_study(
            admin_engine(),
            name=name,
            slide_ids=slide,
            cells=cells,
            seed=seed,
            actor=command_line_actor(),
            references=references,
            reference=f"lab labels ({reference.name})" if reference else PHANTOM_REFERENCE,
        )
    except (ServiceError, ValueError) as exc:
        raise _fail(str(exc)) from None
    found = study_labels(admin_engine(), study_id=drawn.study.id)
    composition = Counter(item.reference_class for item in found.items)
    err.print(
        f"study {name!r}: {drawn.items} cells ("
        + ", ".join(
            f"{code} {composition[code]}" for code in found.study.classes if code in composition
        )
        + f"), reference: {drawn.study.reference}"
    )
    for reason, count in drawn.left_out.items():
        err.print(f"  left out: {count} cells with {reason}")
    if drawn.unmatched_references:
        err.print(f"  {drawn.unmatched_references} reference rows name no cell of these slides")
    err.print(f"experts label it at /studies/{drawn.study.id} on the results service")
    typer.echo(drawn.study.id)


@study_app.command("list")
def list_command() -> None:
    """Studies with each expert's progress."""
    rows = list_studies(admin_engine())
    if not rows:
        err.print("no studies yet: `stainless study create` draws one")
        return
    table = Table("name", "id", "cells", "experts (labelled)", "reference", "created")
    for row in rows:
        experts = ", ".join(f"{who} ({n})" for who, n in row.labelled.items()) or "none yet"
        created = row.study.created_at.isoformat(timespec="minutes")
        table.add_row(
            row.study.name, row.study.id, str(row.items), experts, row.study.reference, created
        )
    out.print(table)


@study_app.command("report")
def report(
    study: Annotated[str, typer.Argument(help="The study's name or id.")],
    out: Annotated[Path, typer.Option(help="Folder for report.html and the CSV files.")],
) -> None:
    """Write the study's report: per-expert and automatic confusion matrices with a PQ
    column, accuracy, macro-F1, recall per class and Cohen's κ (thesis Tables 8.3–8.6)."""
    engine = admin_engine()
    with Session(engine) as session:
        found = (
            session.get(Study, study)
            or session.exec(select(Study).where(Study.name == study)).first()
        )
    if found is None:
        raise _fail(f"no study named or with the id {study!r}: `stainless study list` shows them")
    result = study_report(study_labels(engine, study_id=found.id))
    for path in write_study_report(result, out):
        typer.echo(path)
    for rater in result.raters:
        summary = rater.summary
        err.print(
            f"{rater.name}: {summary.cells} cells, accuracy {summary.accuracy:.3f}, "
            f"macro-F1 {summary.macro_f1:.3f}, poor quality {summary.poor_quality:.1%}"
        )
    for agreement in result.agreements:
        kappa = "n/a" if agreement.kappa is None else f"{agreement.kappa:.3f}"
        err.print(f"κ {agreement.first} / {agreement.second}: {kappa} on {agreement.cells} cells")
