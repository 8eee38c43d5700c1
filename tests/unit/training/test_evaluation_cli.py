from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from stainless.ml.models.disentangled import build_disentangled
from stainless.ml.models.mtmd import build_multitask
from stainless.ml.models.paired import build_paired_discriminator, build_paired_generator
from stainless_training.config import load_config
from stainless_training.disentangled import model_config as disentangled_config
from stainless_training.evaluation_cli import FILES, app
from stainless_training.mtmd import model_config
from stainless_training.paired import model_config as paired_config

ROOT = Path(__file__).resolve().parents[3]


def _checkpoint(folder: Path, model: str = "mtmd", **data: object) -> Path:
    """A random tiny model 1 (or 2) with a config trained on one phantom field (seed 5)."""
    name = {"mtmd": "mtmd-tiny.yaml", "disentangled": "disentangled-tiny.yaml"}[model]
    config = yaml.safe_load((ROOT / "training" / "configs" / name).read_text())
    config["data"] = {"phantom_seed": 5, "phantom_fields": 1, **data}
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    loaded = load_config(folder / "config.yaml")
    translator = (
        build_multitask(model_config(loaded))
        if model == "mtmd"
        else build_disentangled(disentangled_config(loaded))
    )
    path = folder / "checkpoint.pt"
    torch.save({"translator": translator.state_dict()}, path)
    return path


def test_writes_metrics_and_four_plots(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "model")
    out = tmp_path / "eval"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--fields", "2", "--seed", "7"]
    # 50 calibration fields of seed 8 hold 110 cells: enough to fit (100), and quicker than 200.
    result = CliRunner().invoke(app, [*args, "--calibration-fields", "50"])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for name in FILES[1:]:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["review_threshold"] > 0
    assert {"fid", "rmse", "dice_per_class", "dice_mean", "per_cell"} <= set(metrics)
    assert "RANDOM backbone" in metrics["fid_provenance"]
    assert "RANDOM backbone" in result.output  # the provenance printed next to the number
    assert metrics["held_out"] == {"fields": 2, "seed": 7, "image_size": 64}
    assert set(metrics["domain_accuracy"]) == {"DIC", "BF", "BF wright"}
    assert "classified from BF wright" in result.output
    assert metrics["label_transfer"] is None  # every trained domain had its labels
    calibration = metrics["probability_calibration"]
    assert calibration["cells"] == 110 and calibration["scaling"] is not None


def test_a_label_transfer_model_is_classified_on_its_third_domain_too(tmp_path: Path) -> None:
    cv = {"acquisition": "giemsa", "fields": 1, "seed": 6}
    checkpoint = _checkpoint(tmp_path / "model", cv=cv, labelled=["CV"])
    out = tmp_path / "eval"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--fields", "2", "--seed", "7"]
    more = ["--other-domain", "leishman", "--calibration-fields", "1"]
    result = CliRunner().invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "no calibration fitted" in metrics["probability_calibration"]["note"]
    assert set(metrics["domain_accuracy"]) == {"DIC", "BF", "CV", "BF leishman"}
    transfer = metrics["label_transfer"]
    assert transfer["labelled"] == ["CV"] and set(transfer["points_below"]) == {"DIC", "BF"}
    assert "labels from CV" in result.output


def test_model_2_is_evaluated_with_its_chapter6_delta(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "model", "disentangled")
    out = tmp_path / "eval"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--seed", "7", "--fields"]
    one_cell = CliRunner().invoke(app, [*args, "1"])
    assert one_cell.exit_code == 2 and "1 held-out cells" in one_cell.output
    result = CliRunner().invoke(app, [*args, "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(set(FILES) - {"confusion.png"})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confidence_variant"] == "disentangled"
    assert metrics["noise"]["k"] == 20 and "blackout" in metrics
    assert "delta ↔ LPIPS (disentangled" in result.output


def test_refuses_the_training_seed_and_missing_weights(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "model")
    runner = CliRunner()
    base = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval")]
    same = runner.invoke(app, [*base, "--seed", "5"])
    assert same.exit_code == 2 and "must differ" in same.output
    calibrating_on_it = runner.invoke(app, [*base, "--seed", "4"])
    assert calibrating_on_it.exit_code == 2 and "calibration seed" in calibrating_on_it.output
    missing = runner.invoke(app, [*base, "--fid-weights", str(tmp_path / "none.pt")])
    assert missing.exit_code == 2 and "not found" in missing.output
    unknown = runner.invoke(app, [*base, "--other-domain", "purple"])
    assert unknown.exit_code == 2 and "--other-domain" in unknown.output
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(
    ("class_head", "class_condition"), [("pair", False), ("stained", False), ("pair", True)]
)
def test_model_3_is_evaluated_per_clinical_class(
    tmp_path: Path, class_head: str, class_condition: bool
) -> None:
    config = yaml.safe_load((ROOT / "training/configs/paired-clinical.yaml").read_text())
    config["data"] |= {"phantom_seed": 5, "phantom_fields": 1}
    config["class_head"] = class_head
    config["class_condition"] = class_condition
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    net = paired_config(load_config(folder / "config.yaml"))
    torch.save(
        {
            "generator": build_paired_generator(net).state_dict(),
            "critic": build_paired_discriminator(net).state_dict(),
        },
        folder / "checkpoint.pt",
    )
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            *("--checkpoint", str(folder / "checkpoint.pt"), "--out", str(out)),
            *("--fields", "4", "--calibration-fields", "4", "--dic-probe-steps", "3"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"]["seed"] == 1000  # the default held-out seed
    assert ("on the stained image alone" in metrics["classifier"]) == (class_head == "stained")
    assert ("generator_class_accuracy" in metrics) == class_condition
    if class_condition:
        assert len(metrics["generator_class_confusion"]) == 12
        assert 0 <= metrics["generator_class_accuracy"] <= 1
        assert "the generator's own class of the DIC" in result.stderr
    assert "never served" in metrics["dic_only_classifier"]
    assert len(metrics["dic_only_confusion"]) == 12 and "not_in_dic" in metrics
    rows = metrics["per_class"]
    assert all(row["recall_dic_only"] is not None or not row["cells"] for row in rows)
    assert "DIC-only classifier: accuracy" in result.stderr
    # The head's probabilities on cells of the next seed: too few here to fit, as it says.
    calibration = metrics["probability_calibration"]
    assert calibration["cells"] > 0
    assert calibration["scaling"] is None and "no calibration fitted" in calibration["note"]
    assert calibration["ece_raw"] is not None and (out / "probabilities.png").is_file()
    assert "class probabilities on" in result.stderr
    assert metrics["vocabulary"] == "clinical" and len(metrics["class_names"]) == 12
    assert metrics["held_out"]["crop_size"] == 360 and metrics["held_out"]["slide"] == (
        "clinical-balanced"
    )
    table = {row["class"]: row for row in metrics["per_class"]}
    assert sum(row["cells"] for row in table.values()) == metrics["cells"] > 0
    assert (
        table["BL"]["thesis_automatic_recall"] == 0.815
        and table["RLY"]["thesis_automatic_recall"] is None
    )
    assert len(metrics["confusion"]) == 12 and "lost_from_dic" in metrics
    assert (out / "confusion.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "samples.png").read_bytes().startswith(b"\x89PNG")
    assert "recall" in result.stderr and "not like for like" in result.stderr
