from __future__ import annotations

import numpy as np
import pytest
import torch

from stainless.imaging.phantom import PhantomConfig
from stainless.ml.metrics.fid import FidMetric
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask
from stainless_training.evaluate import (
    MASK_CLASSES,
    ColourTransfer,
    _overlap_means,
    evaluate,
    label_transfer,
    review_calibration,
)
from stainless_training.phantom_data import phantom_samples


def test_colour_transfer_fits_a_linear_map() -> None:
    samples = phantom_samples(
        fields=2, seed=3, image_size=32, config=PhantomConfig(width=768, height=576)
    )
    transfer = ColourTransfer.fit(samples)
    assert transfer.slope.shape == (3,)
    out = transfer(samples[0].dic)
    assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="training samples"):
        ColourTransfer.fit([])


def test_evaluation_reports_quality_classification_and_confidence() -> None:
    torch.manual_seed(0)
    config = MultiTaskConfig.tiny()
    samples = phantom_samples(
        fields=3, seed=4, image_size=config.image_size, config=PhantomConfig(width=768, height=576)
    )
    metrics = evaluate(
        build_multitask(config),
        samples,
        baseline=ColourTransfer.fit(samples),
        perceptual=PerceptualMetric(),
        k=3,
        fid=FidMetric(net="alexnet"),
        per_cell=True,
    )
    assert metrics["cells"] == len(samples)
    for key in (
        "mse",
        "ssim",
        "baseline_mse",
        "baseline_ssim",
        "lpips",
        "delta",
        "gamma",
        "accuracy",
    ):
        assert np.isfinite(metrics[key]), key
    assert "RANDOM backbone" in metrics["lpips_provenance"]
    assert sum(row["cells"] for row in metrics["per_class"].values()) == len(samples)
    deltas = np.array([r["delta"] for r in metrics["per_cell"]])
    assert metrics["review_fraction"] == pytest.approx(
        np.mean(deltas < metrics["review_threshold"])
    )
    if metrics["review"]["unacceptable"]:  # the untrained model's cells: mostly unacceptable
        assert metrics["review_rule"].startswith("sensitivity 0.9")
        assert metrics["review"]["sensitivity"] >= 0.9
    for key in ("rmse", "baseline_rmse", "fid", "baseline_fid", "macro_f1", "dice_mean"):
        assert np.isfinite(metrics[key]), key
    assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]))
    assert "RANDOM backbone" in metrics["fid_provenance"]
    assert metrics["mask_classes"] == ["background", "red_cell", "cytoplasm", "nucleus"]
    assert set(metrics["dice_per_class"]) == set(MASK_CLASSES) == set(metrics["iou_per_class"])
    assert all(v is None or 0 <= v <= 1 for v in metrics["dice_per_class"].values())
    assert len(metrics["confusion"]) == len(metrics["class_names"]) == 7
    for row in metrics["per_class"].values():
        assert {"recall", "precision", "f1", "accuracy", "dice_mean"} <= set(row)
        assert 0 <= row["accuracy"] <= 1
    assert len(metrics["per_cell"]) == len(samples)
    assert {"class", "predicted", "delta", "lpips", "dice"} <= set(metrics["per_cell"][0])
    rows = metrics["per_cell"]
    for name in ("delta", "gamma"):
        expected = np.corrcoef([r[name] for r in rows], [r["lpips"] for r in rows])[0, 1]
        assert metrics[f"{name}_lpips_pearson_r"] == pytest.approx(expected)
    assert metrics["confidence_variant"] == "whole-latent"
    domains = metrics["domain_accuracy"]
    assert set(domains) == {"DIC", "BF"}  # no other domain asked for
    assert domains["DIC"]["accuracy"] == pytest.approx(metrics["accuracy"])  # the same cells
    assert domains["BF"]["cells"] == len(samples) and 0 <= domains["BF"]["accuracy"] <= 1
    assert all(0 < r["delta_normalised"] <= 1 and 0 < r["area"] < 1 for r in rows)
    table = metrics["confidence_correlations"]
    assert set(table) == {"delta", "delta_normalised", "gamma"}
    for score, by_measure in table.items():
        assert set(by_measure) == {"lpips", "mse", "ssim"}
        lpips = by_measure["lpips"]
        assert lpips["n"] == len(samples)
        assert lpips["pearson"] == pytest.approx(
            np.corrcoef([r[score] for r in rows], [r["lpips"] for r in rows])[0, 1]
        )
        assert {"pearson_ci", "spearman", "spearman_ci", "partial", "partial_ci"} <= set(lpips)


def test_label_transfer_measures_the_unlabelled_trained_domains_against_the_labelled() -> None:
    by_domain = {
        d: {"accuracy": a} for d, a in {"DIC": 0.8, "BF": 0.9, "CV": 0.95, "BF wright": 0.1}.items()
    }
    transfer = label_transfer(by_domain, ["CV"])
    assert transfer is not None
    assert transfer["labelled"] == ["CV"] and transfer["labelled_accuracy"] == 0.95
    assert transfer["points_below"] == {"DIC": pytest.approx(15), "BF": pytest.approx(5)}
    assert transfer["worst_points_below"] == pytest.approx(15)  # BF wright: never trained
    both = label_transfer(by_domain, ["BF", "CV"])
    assert both is not None and both["points_below"] == {"DIC": pytest.approx(12.5)}
    assert label_transfer(by_domain, ["DIC", "BF", "CV"]) is None
    assert label_transfer({"DIC": {"accuracy": 0.5}}, ["CV"]) is None  # CV not evaluated


def test_review_calibration_from_delta_and_acceptability() -> None:
    """δ separates the acceptable cells: the calibration rises with δ, the threshold sends
    the asked share of unacceptable cells to review; with none it is a δ quantile."""
    deltas = [0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    acceptable = [False, False, True, False, True, True, True, True, True, True]
    result = review_calibration(deltas, acceptable, sensitivity=1.0, fallback_fraction=0.2)
    assert 0.6 < result["review_threshold"] < 0.7 and result["review_fraction"] == 0.4
    probability = result["calibration"]["p_acceptable"]
    assert probability == sorted(probability) and probability[0] < probability[-1]
    assert sum(r["cells"] for r in result["calibration"]["reliability"]) == 10
    fallback = review_calibration(deltas, [True] * 10, sensitivity=0.9, fallback_fraction=0.2)
    assert fallback["calibration"] is None and fallback["review_rule"].startswith("δ quantile")
    assert fallback["review_threshold"] == pytest.approx(np.quantile(deltas, 0.2))


def test_dice_per_class_is_averaged_over_cells_that_have_the_class() -> None:
    """Two cells: Dice of the known mask pairs, a class absent from both masks skipped."""
    from stainless.ml.metrics.segmentation import dice_iou

    truth = np.array([[0, 1], [2, 2]])
    first = dice_iou(np.array([[0, 1], [2, 3]]), truth)  # background 1, red 1, cyto 2/3, nucleus 0
    second = dice_iou(np.array([[0, 0], [2, 2]]), np.array([[0, 0], [2, 2]]))  # no red, nucleus
    rows = [
        {"dice": {MASK_CLASSES[c]: d for c, (d, _) in overlap.items()}}
        for overlap in (first, second)
    ]
    means = _overlap_means(rows, "dice")
    assert means["background"] == pytest.approx(1.0)
    assert means["red_cell"] == pytest.approx(1.0)  # only the first cell has red cell
    assert means["cytoplasm"] == pytest.approx((2 / 3 + 1) / 2)
    assert means["nucleus"] == pytest.approx(0.0)  # predicted in the first, absent in the second
