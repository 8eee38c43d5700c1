from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from stainless.ml.metrics.classification import classification_report
from stainless.ml.metrics.correlation import pearson_r
from stainless.ml.metrics.image import mse, rmse, ssim
from stainless.ml.metrics.perceptual import PerceptualMetric
from stainless.ml.metrics.segmentation import dice_iou


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((64, 64, 3))


def test_mse_rmse_known_values() -> None:
    a = np.zeros((2, 2))
    b = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert mse(a, b) == 0.5
    assert rmse(a, b) == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError, match="shape"):
        mse(a, np.zeros((3, 3)))


def test_ssim_is_one_for_equal_images_and_falls_with_noise() -> None:
    image = _image()
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 0.2, image.shape), 0, 1)
    assert ssim(image, noisy) < 0.9
    assert ssim(image * 255, noisy * 255, data_range=255) == pytest.approx(ssim(image, noisy))


def test_classification_report() -> None:
    labels = [0, 1, 2, 2, 1, 0]
    probabilities = np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.8 + 0.2 / 3
    report = classification_report(labels, probabilities, class_names=["A", "B", "C"])
    assert report.accuracy == pytest.approx(5 / 6)
    assert report.macro_f1 == pytest.approx(f1_score(labels, [0, 1, 2, 1, 1, 0], average="macro"))
    assert report.confusion == [[2, 0, 0], [0, 2, 0], [0, 1, 1]]
    assert report.auc_ovr is not None and 0.5 < report.auc_ovr <= 1.0
    with pytest.raises(ValueError, match="probabilities"):
        classification_report(labels, probabilities[:, :2], class_names=["A", "B", "C"])


def test_pearson() -> None:
    assert pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        pearson_r([1, 1, 1], [1, 2, 3])


def test_dice_iou_per_class() -> None:
    truth = np.array([[0, 1], [2, 2]])
    predicted = np.array([[0, 1], [2, 3]])
    result = dice_iou(predicted, truth)
    assert result[0] == (1.0, 1.0)
    assert result[2] == pytest.approx((2 / 3, 0.5))
    assert result[3] == (0.0, 0.0)


def test_lpips_with_a_random_backbone_says_so_and_orders_distances() -> None:
    metric = PerceptualMetric()
    assert "RANDOM backbone" in metric.provenance
    image = _image()
    near = np.clip(image + 0.01, 0, 1)
    far = _image(5)
    assert metric.distance(image, image) == pytest.approx(0.0, abs=1e-6)
    assert metric.distance(image, near) < metric.distance(image, far)
    assert PerceptualMetric().distance(image, far) == pytest.approx(metric.distance(image, far))


def test_lpips_loads_a_configured_backbone(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(3)
    weights = tmp_path / "alexnet.pth"
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, weights)
    metric = PerceptualMetric(backbone_weights=weights)
    assert str(weights) in metric.provenance
    first_conv = dict(metric._model.net.named_parameters())["slice1.0.weight"]
    assert torch.equal(first_conv, state["features.0.weight"])
    with pytest.raises(FileNotFoundError, match="not found"):
        PerceptualMetric(backbone_weights=tmp_path / "missing.pth")
