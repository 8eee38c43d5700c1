"""The detectors the settings select: classical by default, learned from the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stainless.core.config import (
    DetectorKind,
    DetectorSettings,
    InferenceBackend,
    OpticsSettings,
    RegistrationSettings,
)
from stainless.imaging.detection import BrightfieldDetector, DicDetector
from stainless.ml.models.detector import LearnedDetector, Modality
from stainless.stages.registration.detectors import (
    DetectorUnavailable,
    build_detectors,
    check_detectors,
    describe_detectors,
    learned_detector,
)

LEARNED = DetectorKind.LEARNED


def _settings(repo: Path, **detector: object) -> RegistrationSettings:
    return RegistrationSettings(
        optics=OpticsSettings(pixel_um=0.15),
        detector=DetectorSettings(model_repository=str(repo), **detector),  # type: ignore[arg-type]
    )


def test_the_classical_detectors_by_default(tmp_path: Path) -> None:
    detectors = build_detectors(_settings(tmp_path))  # nothing exported: nothing needed
    assert isinstance(detectors.brightfield, BrightfieldDetector)
    assert isinstance(detectors.dic, DicDetector)
    assert describe_detectors(DetectorSettings()) == "brightfield classical, dic classical"
    check_detectors(_settings(tmp_path))


def test_a_learned_detector_runs_the_exported_network(exported_repo: Path) -> None:
    settings = _settings(exported_repo, brightfield=LEARNED)
    detectors = build_detectors(settings)
    assert isinstance(detectors.brightfield, LearnedDetector)
    assert isinstance(detectors.dic, DicDetector)
    assert describe_detectors(settings.detector) == "brightfield learned (local), dic classical"
    detector = detectors.brightfield
    assert detector.threshold == 0.0  # the exported detector's own threshold
    assert detector.pixel_um == 0.15  # the scanner's optics
    image = np.random.default_rng(0).integers(120, 230, (180, 220, 3), dtype=np.uint8)
    found = detector.detect(image)
    assert 0 < len(found) <= detector.max_detections
    for det in found:
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 < x1 <= 220 and 0 <= y0 < y1 <= 180


def test_the_threshold_setting_overrides_the_exported_one(exported_repo: Path) -> None:
    settings = DetectorSettings(model_repository=str(exported_repo), threshold=1.0)
    detector = learned_detector(settings, "dic", pixel_um=0.1)
    assert isinstance(detector, LearnedDetector)
    assert detector.config.modality is Modality.DIC and detector.threshold == 1.0
    image = np.random.default_rng(1).random((160, 160), dtype=np.float32)
    assert detector.detect(image) == []  # no centre score reaches 1 after the sigmoid


@pytest.mark.parametrize("modality", ["brightfield", "dic"])
def test_a_learned_detector_that_is_not_exported_says_how_to_export_one(
    tmp_path: Path, modality: str
) -> None:
    settings = _settings(tmp_path, **{modality: LEARNED})
    with pytest.raises(DetectorUnavailable, match="stainless export-detector"):
        check_detectors(settings)
    with pytest.raises(DetectorUnavailable, match="stainless export-detector"):
        build_detectors(settings)


def test_an_exported_detector_whose_network_is_gone_is_unavailable(
    tmp_path: Path, exported_repo: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(exported_repo / "wbc_detector_bf", repo / "wbc_detector_bf")
    shutil.rmtree(repo / "wbc_detector_bf" / "1")
    with pytest.raises(DetectorUnavailable, match="cannot be loaded"):
        learned_detector(DetectorSettings(model_repository=str(repo)), "bf", pixel_um=0.1)


def test_the_settings_name_the_triton_backend_for_detectors() -> None:
    settings = RegistrationSettings.model_validate(
        {"detector": {"brightfield": "learned", "backend": "triton", "url": "triton:8001"}}
    )
    assert settings.detector.backend is InferenceBackend.TRITON
    assert settings.detector.brightfield is LEARNED and settings.detector.dic.value == "classical"
