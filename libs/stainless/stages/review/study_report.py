"""The report of a validation study, laid out as thesis Tables 8.3–8.6.

For every expert and for the automatic classifier (the model's class of each cell when the
study was drawn): accuracy, macro-F1, per-class recall in percent (Table 8.3) and as
right/of counts (Table 8.4), the share of cells marked poor quality, and the confusion
matrix against the reference with a ``PQ`` column (Tables 8.5–8.6). Cohen's κ between
every two experts and between each expert and the automatic classifier, each on the cells
both labelled. An expert who has not finished is reported on the cells labelled so far,
and the report says how many.

Written as one self-contained HTML file (the confusion matrices also as a PNG figure) and
CSV files: the labels of every cell, the summary table, the confusion matrices (long
form) and the κ values.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stainless.domain.study import POOR_QUALITY
from stainless.domain.vocabulary import vocabulary_of
from stainless.ml.metrics.agreement import (
    RaterSummary,
    cohen_kappa,
    confusion_matrix,
    rater_summary,
)
from stainless.stages.review.study import StudyLabels

__all__ = ["Agreement", "Rater", "StudyReport", "study_report", "write_study_report"]

AUTOMATIC = "automatic classifier"


@dataclass(frozen=True)
class Rater:
    """One rater's labels against the reference, on the cells it labelled."""

    name: str
    automatic: bool
    labels: dict[str, str]  # item id → label
    summary: RaterSummary
    matrix: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Agreement:
    """Cohen's κ of two raters on the cells both labelled (None when they share none)."""

    first: str
    second: str
    cells: int
    kappa: float | None


@dataclass(frozen=True)
class StudyReport:
    name: str
    vocabulary: str
    classes: list[str]  # the study's classes, in its vocabulary's order
    present: list[str]  # the classes the reference holds: the rows of the tables
    reference: str
    model_versions: list[str]
    references: dict[str, str]  # item id → reference class
    cell_ids: dict[str, str]  # item id → cell id
    raters: list[Rater]
    agreements: list[Agreement]

    @property
    def experts(self) -> list[Rater]:
        return [rater for rater in self.raters if not rater.automatic]

    @property
    def poor_quality(self) -> float | None:
        """The share of the experts' labels that are ``PQ`` (None before any label)."""
        labels = [label for rater in self.experts for label in rater.labels.values()]
        return sum(label == POOR_QUALITY for label in labels) / len(labels) if labels else None


def _rater(
    name: str,
    labels: dict[str, str],
    report: tuple[dict[str, str], list[str]],
    *,
    automatic: bool = False,
) -> Rater:
    references, classes = report
    ids = sorted(labels)
    truth = [references[item] for item in ids]
    given = [labels[item] for item in ids]
    return Rater(
        name=name,
        automatic=automatic,
        labels=labels,
        summary=rater_summary(truth, given, classes),
        matrix=confusion_matrix(truth, given, classes),
    )


def _agreement(first: Rater, second: Rater) -> Agreement:
    shared = sorted(set(first.labels) & set(second.labels))
    kappa = (
        cohen_kappa([first.labels[i] for i in shared], [second.labels[i] for i in shared])
        if shared
        else None
    )
    return Agreement(first.name, second.name, len(shared), kappa)


def study_report(found: StudyLabels) -> StudyReport:
    """The report of a study from its items and labels (pure: no I/O)."""
    study = found.study
    classes = list(study.classes)
    references = {item.id: item.reference_class for item in found.items}
    automatic = {
        item.id: item.automatic_class for item in found.items if item.automatic_class is not None
    }
    raters = [
        _rater(expert, labels, (references, classes))
        for expert, labels in found.labels.items()
        if labels
    ]
    experts = list(raters)
    if automatic:
        raters.append(_rater(AUTOMATIC, automatic, (references, classes), automatic=True))
    agreements = [_agreement(a, b) for a, b in combinations(experts, 2)]
    if automatic:
        agreements += [_agreement(expert, raters[-1]) for expert in experts]
    present = set(references.values())
    return StudyReport(
        name=study.name,
        vocabulary=study.vocabulary,
        classes=classes,
        present=[code for code in classes if code in present],
        reference=study.reference,
        model_versions=sorted({i.model_version for i in found.items if i.model_version}),
        references=references,
        cell_ids={item.id: item.cell_id for item in found.items},
        raters=raters,
        agreements=agreements,
    )


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _exact(value: float | None) -> str:
    """A value in full precision for machines (CSV, data attributes); empty for None."""
    return "" if value is None else repr(value)


def _summary_rows(report: StudyReport) -> list[tuple[str, list[str]]]:
    """Table 8.3 and 8.4 in one: a measure per row, a rater per column."""
    total = len(report.references)
    rows = [
        ("labelled", [f"{r.summary.cells}/{total}" for r in report.raters]),
        ("overall accuracy", [_percent(r.summary.accuracy) for r in report.raters]),
        ("macro-F1", [f"{r.summary.macro_f1:.3f}" for r in report.raters]),
        ("poor quality (PQ)", [_percent(r.summary.poor_quality) for r in report.raters]),
    ]
    for code in report.present:
        cells = []
        for rater in report.raters:
            hit, of = rater.summary.correct[code]
            cells.append(f"{_percent(rater.summary.recall[code])} ({hit}/{of})")
        rows.append((code, cells))
    return rows


def _figure(report: StudyReport) -> bytes:
    """The raters' confusion matrices (row percent) side by side, as a PNG."""
    columns = [*report.classes, POOR_QUALITY]
    count = max(1, len(report.raters))
    figure = Figure(figsize=(4.2 * count, 4.0), dpi=100)
    for position, rater in enumerate(report.raters, start=1):
        axis = figure.add_subplot(1, count, position)
        grid = []
        for code in report.present:
            row = rater.matrix[code]
            of = sum(row.values()) or 1
            grid.append([100.0 * row[label] / of for label in columns])
        axis.imshow(grid or [[0.0] * len(columns)], cmap="Purples", vmin=0, vmax=100)
        axis.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        axis.set_yticks(range(len(report.present)), report.present, fontsize=7)
        axis.set_title(f"{rater.name} (% of row)", fontsize=9)
        axis.set_xlabel("label", fontsize=8)
        axis.set_ylabel("reference", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def _confusion_table(report: StudyReport, rater: Rater) -> str:
    columns = [*report.classes, POOR_QUALITY]
    head = "".join(f"<th>{code}</th>" for code in columns)
    body = []
    for code in report.present:
        row = rater.matrix[code]
        of = sum(row.values())
        cells = "".join(
            f'<td data-reference="{code}" data-label="{label}" data-count="{row[label]}"'
            f' title="{row[label]}/{of}">{100 * row[label] / of:.1f}</td>'
            if of
            else f'<td data-reference="{code}" data-label="{label}" data-count="0"></td>'
            for label in columns
        )
        body.append(f"<tr><th>{code}</th>{cells}</tr>")
    name = html.escape(rater.name)
    return (
        f"<h3>{name}</h3><table data-testid='confusion' data-rater='{name}'>"
        f"<tr><th>reference \\ label</th>{head}</tr>{''.join(body)}</table>"
    )


def study_html(report: StudyReport) -> str:
    """The report as one self-contained HTML page."""
    vocabulary = vocabulary_of(report.vocabulary)
    names = "".join(f"<th>{html.escape(r.name)}</th>" for r in report.raters)
    summary = "".join(
        f"<tr><th>{html.escape(measure)}</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>"
        for measure, cells in _summary_rows(report)
    )
    agreements = "".join(
        f"<tr data-testid='kappa' data-first='{html.escape(a.first)}' "
        f"data-second='{html.escape(a.second)}' data-kappa='{_exact(a.kappa)}'>"
        f"<td>{html.escape(a.first)}</td><td>{html.escape(a.second)}</td><td>{a.cells}</td>"
        f"<td>{'' if a.kappa is None else f'{a.kappa:.3f}'}</td></tr>"
        for a in report.agreements
    )
    legend = ", ".join(f"{code} {html.escape(vocabulary.names[code])}" for code in report.classes)
    counts = Counter(report.references.values())
    composition = ", ".join(f"{code} {counts[code]}" for code in report.present)
    figure = base64.b64encode(_figure(report)).decode("ascii") if report.raters else ""
    matrices = "".join(_confusion_table(report, rater) for rater in report.raters)
    models = ", ".join(report.model_versions) or "none"
    poor = _percent(report.poor_quality) or "no labels yet"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Stainless — study {html.escape(report.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }}
td, th {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }}
.note {{ color: #666; font-size: .9rem; }}
</style></head><body>
<h1>Validation study {html.escape(report.name)}</h1>
<p>{len(report.references)} stained cells ({composition}); reference:
{html.escape(report.reference)}; automatic classifier: {html.escape(models)}.
Experts' labels marked poor quality: <b data-testid="poor-quality">{poor}</b>.</p>
<p class="note">Classes: {legend}; PQ poor quality (the image cannot be classified).
A PQ label counts as wrong. The automatic classifier's class is the model's prediction
when the study was drawn.</p>
<h2>Per class (thesis Tables 8.3 and 8.4)</h2>
<p class="note">Recall per reference class in percent, with right/of counts.</p>
<table data-testid="summary"><tr><th></th>{names}</tr>{summary}</table>
<h2>Agreement (Cohen's κ)</h2>
<table data-testid="agreement"><tr><th>rater</th><th>rater</th><th>cells</th><th>κ</th></tr>
{agreements}</table>
<h2>Confusion matrices (thesis Tables 8.5 and 8.6)</h2>
<p class="note">Percent of each reference class (row); hover a cell for its count.</p>
{matrices}
<img src="data:image/png;base64,{figure}" alt="confusion matrices">
</body></html>
"""


def _write_csv(path: Path, header: Sequence[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_study_report(report: StudyReport, out: Path) -> list[Path]:
    """``report.html``, ``labels.csv``, ``summary.csv``, ``confusion.csv`` and
    ``agreement.csv`` in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(study_html(report))
    names = [rater.name for rater in report.raters]
    labels = out / "labels.csv"
    _write_csv(
        labels,
        ["item", "cell", "reference", *names],
        [
            [item, report.cell_ids[item], truth, *(r.labels.get(item, "") for r in report.raters)]
            for item, truth in sorted(report.references.items())
        ],
    )
    summary = out / "summary.csv"
    _write_csv(summary, ["measure", *names], [[m, *cells] for m, cells in _summary_rows(report)])
    confusion = out / "confusion.csv"
    _write_csv(
        confusion,
        ["rater", "reference", "label", "count"],
        [
            [rater.name, code, label, count]
            for rater in report.raters
            for code in report.present
            for label, count in rater.matrix[code].items()
        ],
    )
    agreement = out / "agreement.csv"
    _write_csv(
        agreement,
        ["first", "second", "cells", "kappa"],
        [[a.first, a.second, a.cells, _exact(a.kappa)] for a in report.agreements],
    )
    return [page, labels, summary, confusion, agreement]
