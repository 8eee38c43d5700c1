"""``stainless demo`` (what ``make demo`` runs) on embedded defaults, in a clean folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_writes_its_summary_and_figure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stainless.cli",
            "demo",
            "--out",
            "out/demo",
            "--clinical-fields",
            "3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out/demo/summary.json").read_text())
    assert summary["fields"] == 3
    assert summary["images_uploaded"] == 6
    # one fields.ingested per uploaded image, one cells.cropped per registered field, one
    # cells.stained per round of the inference consumer (it gathers the fields' events)
    published = summary["events_published"]
    assert 1 <= published.pop("cells.stained") <= 3
    assert published == {
        "cells.cropped": 3,
        "fields.ingested": 6,
        "slides.completed": 1,
        "slides.uploaded": 1,
    }
    assert summary["status"] == "completed" and summary["model_version"] == "mtmd-tiny/1"
    assert summary["cell_count"] == summary["cells_cropped"]
    assert sum(c["count"] for c in summary["differential"].values()) == summary["cell_count"]
    assert 0 <= summary["needs_review"] <= summary["cell_count"]
    assert summary["mean_delta"] > 0
    flags = summary["flags"]  # a few dozen cells: too few for the proportions of a differential
    assert flags["proportions_assessed"] is False and flags["abnormal"] == []
    report = (tmp_path / "out/demo/report.html").read_text()
    assert "<h2>Flags</h2>" in report and "proportions not assessed" in report
    assert (
        "Differential" in report and report.count("data:image/png;base64,") > summary["cell_count"]
    )
    assert "stainless demo --serve" in done.stderr
    # a quiet console: a few lines for people, the service logs in a file
    assert len(done.stderr.splitlines()) <= 15, done.stderr
    assert not done.stdout.strip() and '"event"' not in done.stderr
    logs = (tmp_path / "out/demo/demo.log").read_text().splitlines()
    assert any(json.loads(line)["event"] == "slide completed" for line in logs)
    assert summary["white_cells_ground_truth"] == sum(summary["ground_truth_classes"].values()) > 0
    assert (
        summary["cells_cropped"] == summary["detection"]["matched"] + summary["detection"]["extra"]
    )
    assert summary["detection"]["missed"] <= 1
    registration = summary["registration"]
    assert [f["status"] for f in registration["fields"]] == ["accepted"] * 3
    assert registration["max_corner_error_px"] < 1.0
    assert (summary["database"], summary["store"], summary["bus"], summary["tasks"]) == (
        "sqlite",
        "local",
        "memory",
        "eager",
    )
    assert (tmp_path / "out/demo/phantom.png").read_bytes().startswith(b"\x89PNG")
    clinical = summary["clinical_slide"]  # thesis Table 8.1's classes, seen by the 7-class model
    assert clinical["slide_preset"] == "clinical-mix" and clinical["fields"] == 3
    assert sum(c["count"] for c in clinical["differential"].values()) == clinical["cell_count"] > 0
    assert set(clinical["flags"]) == {"pathological", "abnormal", "proportions_assessed"}
    truth = set(clinical["ground_truth_classes"])
    assert "NE" in truth and "SNE" not in truth  # clinical classes: SNE folds into NE
    assert set(clinical["classes_the_model_does_not_know"]) == truth - {
        "NE", "EO", "BA", "MO", "LY", "SMU", "ART"
    }  # fmt: skip
    assert set(clinical["ground_truth_flags"]) == truth & {"RLY", "IG", "BL", "ALC", "ERB", "SMU"}
    clinical_report = (tmp_path / "out/demo/clinical/report.html").read_text()
    assert "<h2>Flags</h2>" in clinical_report
    assert "clinical slide: out/demo/clinical/report.html" in " ".join(done.stderr.split())
    assert (tmp_path / "out/stainless.db").is_file()
