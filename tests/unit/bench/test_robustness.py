"""The robustness benchmark on a tiny grid (512 px fields, one field per cell) and its CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from stainless.bench.registration import is_number
from stainless.bench.robustness import (
    TARGETS,
    DetectorPair,
    Target,
    render_robustness_table,
    robustness_grid,
    run_robustness_bench,
)
from stainless.cli.main import app
from stainless.imaging.acquisition import random_acquisition
from stainless.imaging.detection import BrightfieldDetector, Detection, UnreliableFieldError
from stainless.imaging.phantom import PhantomConfig

SIZE = {"width": 512, "height": 512}
PRESETS = ["reference", "wright"]
CELL_KEYS = {
    "name",
    "axis",
    "description",
    "overrides",
    "fields",
    "wbcs",
    "bf_precision",
    "bf_recall",
    "dic_precision",
    "dic_recall",
    "bf_counts",
    "dic_counts",
    "bf_rejected_fields",
    "registration_median_px",
    "registration_p95_px",
    "registration_rejected",
    "registration_rejected_fraction",
    "seconds",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RED_BGR = (0xB6, 0xB6, 0xF4)  # the table's "target missed" colour


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    ticks: list[int] = []
    found = run_robustness_bench(
        1, 2026, **SIZE, presets=PRESETS, mixtures=1, progress=lambda: ticks.append(1)
    )
    assert len(ticks) == 3  # one tick per field: 3 grid cells x 1 field
    return found


class _Blind:
    """A detector that never finds anything."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        return []


def _blind(config: PhantomConfig) -> DetectorPair:
    return DetectorPair(bf=_Blind(), dic=_Blind())


def _ratio(tp: int, other: int) -> float:
    return tp / (tp + other) if tp + other else 1.0


def test_result_structure_and_metric_ranges(result: dict[str, Any]) -> None:
    assert result["detector"] == "classical" and list(result["detectors"]) == ["classical"]
    assert result["seed"] == 2026 and result["fields_per_cell"] == 1
    assert (result["width"], result["height"]) == (512, 512)
    assert set(result["targets"]) == {t.metric for t in TARGETS}
    cells = result["detectors"]["classical"]["cells"]
    assert [c["name"] for c in cells] == [*PRESETS, "mixture-0"]
    assert [c["axis"] for c in cells] == ["reference", "stain", "mixture"]
    expected = json.loads(json.dumps(random_acquisition(np.random.default_rng([2026, 7919, 0]))))
    assert cells[2]["overrides"] == expected
    assert cells[1]["overrides"] == {"stain": {"protocol": "wright", "strength": 1.0}}
    for cell in cells:
        assert cell.keys() >= CELL_KEYS, cell["name"]
        for key in ("bf_precision", "bf_recall", "dic_precision", "dic_recall"):
            assert is_number(cell[key]) and 0.0 <= cell[key] <= 1.0, (cell["name"], key)
        bf, dic = cell["bf_counts"], cell["dic_counts"]
        assert cell["bf_precision"] == pytest.approx(_ratio(bf["tp"], bf["fp"]))
        assert cell["dic_recall"] == pytest.approx(_ratio(dic["tp"], dic["fn"]))
        assert dic["tp"] + dic["fn"] == cell["wbcs"] >= 1  # every phantom cell counts in DIC
        assert bf["tp"] + bf["fn"] <= cell["wbcs"]
        assert 0 <= cell["registration_rejected"] <= 1
        assert cell["registration_rejected_fraction"] == cell["registration_rejected"] / 1
        for key in ("registration_median_px", "registration_p95_px"):
            accepted = cell["registration_rejected"] == 0
            assert (cell[key] is not None) == accepted, (cell["name"], key)
            assert cell[key] is None or (is_number(cell[key]) and cell[key] >= 0)
        assert cell["seconds"] > 0
    json.dumps(result)  # plain JSON types only


def test_summary_lists_exactly_the_cells_that_miss_a_target(result: dict[str, Any]) -> None:
    report = result["detectors"]["classical"]
    cells = report["cells"]
    targets = {t.metric: t for t in TARGETS}
    assert result["failing"] == report["failing"]
    assert set(report["failing"]) == {t.metric for t in TARGETS}
    for target in TARGETS:
        missed = [c["name"] for c in cells if not target.met(c[target.metric])]
        assert report["failing"][target.metric] == missed, target.metric
    assert result["all_targets_met"] is (not any(report["failing"].values()))
    surely = report["failing_beyond_doubt"]
    assert set(surely) == {t.metric for t in TARGETS if t.op == ">="}
    for metric, names in surely.items():
        assert set(names) <= set(report["failing"][metric]), metric
        lows = [c["name"] for c in cells if c[f"{metric}_ci"][1] < targets[metric].threshold]
        assert names == lows, metric


def test_reference_acquisition_meets_the_detection_targets(result: dict[str, Any]) -> None:
    reference = result["detectors"]["classical"]["cells"][0]
    for key in ("bf_recall", "dic_recall"):
        assert reference["name"] not in result["failing"][key], key


def test_blind_detector_fails_recall() -> None:
    found = run_robustness_bench(
        1, 2026, **SIZE, presets=["reference"], mixtures=0, detectors={"blind": _blind}
    )
    assert found["detector"] == "blind"
    (cell,) = found["detectors"]["blind"]["cells"]
    assert cell["bf_counts"]["tp"] == 0 and cell["bf_counts"]["fn"] > 0
    assert cell["bf_recall"] == 0.0 and cell["dic_recall"] == 0.0
    assert cell["bf_precision"] == 1.0  # no detections, nothing false
    assert found["failing"]["bf_recall"] == ["reference"]
    assert found["failing"]["dic_recall"] == ["reference"]
    assert found["failing_beyond_doubt"]["dic_recall"] == ["reference"]  # 0 of n found
    assert cell["dic_recall_ci"][1] < 0.9
    assert found["all_targets_met"] is False
    png = render_robustness_table(found)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert np.all(image == RED_BGR, axis=2).any()  # the failing metrics are shown red


def test_unreliable_brightfield_field_is_rejected_and_its_cells_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: BrightfieldDetector, image: np.ndarray) -> list[Detection]:
        raise UnreliableFieldError("too little stain")

    monkeypatch.setattr(BrightfieldDetector, "detect", refuse)
    found = run_robustness_bench(1, 2026, **SIZE, presets=["reference"], mixtures=0)
    (cell,) = found["detectors"]["classical"]["cells"]
    assert cell["bf_rejected_fields"] == 1
    assert cell["bf_counts"]["tp"] == 0 and cell["bf_counts"]["fn"] > 0
    assert "reference" in found["failing"]["bf_recall"]


def test_targets_and_bad_arguments() -> None:
    assert Target("x", "<", 0.02).met(0.0) and not Target("x", "<", 0.02).met(0.02)
    assert Target("x", "<=", 0.3).met(0.3) and not Target("x", "<=", 0.3).met(0.31)
    assert Target("x", ">=", 0.95).met(0.95) and not Target("x", ">=", 0.95).met(0.9)
    assert not Target("x", ">=", 0.0).met(None) and not Target("x", ">=", 0.0).met(True)
    assert [g.name for g in robustness_grid(presets=["dim"], mixtures=2)] == [
        "dim",
        "mixture-0",
        "mixture-1",
    ]
    with pytest.raises(ValueError, match="unknown preset"):
        robustness_grid(presets=["no-such-lab"])
    with pytest.raises(ValueError, match="empty"):
        robustness_grid(presets=[], mixtures=0)
    with pytest.raises(ValueError, match="fields"):
        run_robustness_bench(0)


def test_png_table(result: dict[str, Any]) -> None:
    png = render_robustness_table(result)
    assert png.startswith(PNG_MAGIC)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 500
    with pytest.raises(ValueError, match="no detector"):
        render_robustness_table(result, "learned")


def test_cli_prints_json_and_writes_png(tmp_path: Path) -> None:
    png = tmp_path / "robustness.png"
    command = ["bench", "robustness", "--json", "--fields", "1", "--width", "512"]
    command += ["--height", "512", "--preset", "reference", "--mixtures", "0", "--png", str(png)]
    done = CliRunner().invoke(app, command)
    assert done.exit_code == 0, done.output
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert [c["name"] for c in last["detectors"]["classical"]["cells"]] == ["reference"]
    assert isinstance(last["all_targets_met"], bool)
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_cli_table_and_bad_preset() -> None:
    runner = CliRunner()
    command = ["bench", "robustness", "--fields", "1", "--width", "512", "--height", "512"]
    wide = {"COLUMNS": "200"}
    done = runner.invoke(app, [*command, "--preset", "reference", "--mixtures", "0"], env=wide)
    assert done.exit_code == 0, done.output
    assert "reference" in done.stdout and "DIC R" in done.stdout
    bad = runner.invoke(app, [*command, "--preset", "no-such-lab"])
    assert bad.exit_code == 2
    assert "unknown preset" in bad.output


def _untrained_checkpoint(path: Path, modality: str) -> Path:
    import torch

    from stainless.ml.models.detector import CHECKPOINT_FORMAT, DetectorConfig, build_cell_net

    config = DetectorConfig(modality=modality, width=8)
    model = build_cell_net(config)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": model.state_dict(),
        "config": config.to_dict(),
    }
    torch.save(checkpoint, path)
    return path


def test_cli_measures_the_learned_detector_beside_the_classical(tmp_path: Path) -> None:
    bf = _untrained_checkpoint(tmp_path / "bf.pt", "bf")
    dic = _untrained_checkpoint(tmp_path / "dic.pt", "dic")
    png = tmp_path / "robustness.png"
    command = ["bench", "robustness", "--json", "--fields", "1", "--width", "512"]
    command += ["--height", "512", "--preset", "reference", "--mixtures", "0", "--png", str(png)]
    done = CliRunner().invoke(app, [*command, "--learned-bf", str(bf), "--learned-dic", str(dic)])
    assert done.exit_code == 0, done.output
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(last["detectors"]) == ["classical", "learned"]
    assert (tmp_path / "robustness-learned.png").read_bytes().startswith(PNG_MAGIC)
    missing = CliRunner().invoke(
        app, [*command, "--learned-bf", str(tmp_path / "nope.pt"), "--learned-dic", str(dic)]
    )
    assert missing.exit_code == 2
    assert "nope.pt" in missing.output
