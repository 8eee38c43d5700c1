"""``stainless study``: draw a study, list it, write its report (HTML and CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.cli.study import read_references
from stainless.core.audit import Actor
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.repository import get_or_create_scanner
from stainless.core.storage.local import LocalObjectStore
from stainless.stages.review.study import label_item, study_labels

from ..stages.review.conftest import CellSpec, World, make_settings


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("STAINLESS_DATABASE__URL", sqlite_url)
    settings = make_settings(sqlite_url, tmp_path / "store")
    engine = create_db_engine(settings.database)
    with session_scope(engine) as session:
        scanner = get_or_create_scanner(session, name="scanner", key_prefix="p", key_hash="h")
    return World(engine, LocalObjectStore(tmp_path / "store"), settings, scanner.id)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_study_is_drawn_labelled_and_reported(world: World, tmp_path: Path) -> None:
    cells = [("LY", "LY"), ("LY", "LY"), ("MO", "MO"), ("SNE", "SNE"), (None, "LY")]
    built = world.slide([CellSpec(predicted, truth=truth) for predicted, truth in cells])
    runner = CliRunner()
    created = runner.invoke(
        app, ["study", "create", "s1", "--slide", built.slide_id, "--cells", "4"]
    )
    assert created.exit_code == 0, created.output
    study_id = created.stdout.strip()
    assert "LY 2, MO 1, SNE 1" in created.stderr and "no stained image" in created.stderr
    assert f"/studies/{study_id}" in created.stderr
    items = study_labels(world.engine, study_id=study_id).items
    expert = Actor("erin", "reviewer")
    for item in items:  # erin calls every cell a lymphocyte
        label_item(
            world.engine,
            study_id=study_id,
            item_id=item.id,
            expert="erin",
            label="LY",
            actor=expert,
        )
    listed = runner.invoke(app, ["study", "list"])
    assert "s1" in listed.stdout and "erin (4)" in listed.stdout
    out = tmp_path / "report"
    written = runner.invoke(app, ["study", "report", "s1", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert "erin: 4 cells, accuracy 0.500" in written.stderr
    summary = {row["measure"]: row for row in _rows(out / "summary.csv")}
    assert summary["overall accuracy"]["erin"] == "50.0%"
    assert summary["LY"]["erin"] == "100.0% (2/2)" and summary["MO"]["erin"] == "0.0% (0/1)"
    assert summary["overall accuracy"]["automatic classifier"] == "100.0%"
    labels = _rows(out / "labels.csv")
    assert len(labels) == 4 and {row["erin"] for row in labels} == {"LY"}
    confusion = _rows(out / "confusion.csv")
    assert {"rater": "erin", "reference": "MO", "label": "LY", "count": "1"} in confusion
    agreement = _rows(out / "agreement.csv")
    assert [(row["first"], row["second"], row["cells"]) for row in agreement] == [
        ("erin", "automatic classifier", "4")
    ]
    assert float(agreement[0]["kappa"]) == 0.0  # erin's one class agrees only by chance
    assert "data-rater='erin'" in (out / "report.html").read_text()
    by_id = runner.invoke(app, ["study", "report", study_id, "--out", str(out)])
    assert by_id.exit_code == 0
    unknown = runner.invoke(app, ["study", "report", "nope", "--out", str(out)])
    assert unknown.exit_code == 2 and "no study" in unknown.stderr


def test_a_labs_reference_classes_come_from_a_csv(world: World, tmp_path: Path) -> None:
    built = world.slide([CellSpec("LY"), CellSpec("MO")])
    references = tmp_path / "stained.csv"
    references.write_text(
        "cell_id,class\n"
        f"{built.cell_ids[0]},BL\n{built.cell_ids[1]},MO\n00000000-0000-4000-8000-000000000000,LY\n"
    )
    runner = CliRunner()
    created = runner.invoke(
        app,
        [
            "study",
            "create",
            "lab",
            "--slide",
            built.slide_id,
            "--cells",
            "2",
            *("--reference", str(references)),
        ],
    )
    assert created.exit_code == 0, created.output
    assert "1 reference rows name no cell" in created.stderr
    found = study_labels(world.engine, study_id=created.stdout.strip())
    assert found.study.reference == "lab labels (stained.csv)"
    assert found.study.vocabulary == "clinical"
    assert sorted(item.reference_class for item in found.items) == ["BL", "MO"]
    references.write_text(f"cell_id,class\n{built.cell_ids[0]},XX\n")
    refused = runner.invoke(
        app,
        [
            "study",
            "create",
            "lab2",
            "--slide",
            built.slide_id,
            "--cells",
            "1",
            *("--reference", str(references)),
        ],
    )
    assert refused.exit_code == 2 and "'XX'" in refused.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\na,LY\n", "header must name"),
        ("cell_id,class\na,\n", "line 2: a cell_id and a class"),
        ("cell_id,class\na,LY\na,MO\n", "line 3: cell a has two classes"),
    ],
)
def test_bad_reference_files_are_refused_with_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "refs.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_references(path)
