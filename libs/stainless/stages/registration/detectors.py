"""The registration stage's white-cell detectors, as the settings choose them.

Each modality has a classical detector (image analysis whose parameters come from the
field and the scanner's optics) and, where one is exported to the model repository, a
learned one (``wbc_detector_bf`` / ``wbc_detector_dic``, see
:mod:`stainless.ml.export.detector`). A learned detector's network runs in this process
from the repository (``backend=local``) or on the inference server (``backend=triton``);
either way its ``detector.json`` in the repository gives the preparation, the decoding
and the score threshold, so both backends report the same cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from stainless.core.config import (
    DetectorKind,
    DetectorSettings,
    InferenceBackend,
    OpticsSettings,
    RegistrationSettings,
)
from stainless.core.inference.port import InferenceUnavailable
from stainless.core.inference.triton import TritonClient
from stainless.imaging.detection import BrightfieldDetector, DicDetector, WbcDetector

if TYPE_CHECKING:
    from stainless.ml.export.detector import ServedDetector

__all__ = [
    "DetectorUnavailable",
    "Detectors",
    "build_detectors",
    "check_detectors",
    "classical_detectors_for",
    "describe_detectors",
    "learned_detector",
]

UNAVAILABLE = Counter(
    "stainless_detector_unavailable_total",
    "Fields whose learned detector's inference server could not answer (retried later)",
    ["model"],
)


class DetectorUnavailable(RuntimeError):
    """A learned detector is selected but cannot be built; the message says what to do."""


def classical_detectors_for(optics: OpticsSettings) -> tuple[BrightfieldDetector, DicDetector]:
    """The classical brightfield and DIC detectors for a scanner's optics."""
    return BrightfieldDetector(pixel_um=optics.pixel_um), DicDetector(
        pixel_um=optics.pixel_um,
        shear_angle_deg=optics.shear_angle_deg,
        shear_um=optics.shear_um,
        bias_rad=optics.bias_rad,
        wavelength_um=optics.wavelength_um,
    )


def learned_detector(
    settings: DetectorSettings,
    modality: str,
    *,
    pixel_um: float,
    client: TritonClient | None = None,
) -> WbcDetector:
    """The learned detector of ``modality`` (``bf`` or ``dic``) in the settings' repository.

    Args:
        settings: backend, repository and server.
        modality: ``bf`` or ``dic``.
        pixel_um: pixel size of the fields it will get.
        client: the server to run it on (``backend=triton``); one is made from the
            settings when none is given.

    Raises:
        DetectorUnavailable: nothing exported for ``modality`` in the repository, or the
            exported network cannot be loaded.
    """
    from stainless.ml.models.detector import LearnedDetector, MapsFunction

    repo = Path(settings.model_repository)
    served = _served(repo, modality)
    maps: MapsFunction
    if settings.backend is InferenceBackend.LOCAL:
        import torch

        from stainless.ml.export.triton import load_served

        try:
            model = load_served(repo, served.name, served.version)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            raise DetectorUnavailable(
                f"{served.name} version {served.version} in {repo} cannot be loaded: {exc}"
            ) from exc

        def maps(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.generic]:
            with torch.no_grad():
                out = model(torch.from_numpy(batch))
            return np.asarray(out[0] if isinstance(out, tuple) else out)

    else:
        triton = client or _client(settings)
        name, version = served.name, str(served.version)

        def maps(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.generic]:
            try:
                return triton.infer(name, version, batch, ["OUTPUT__0"])[0]
            except InferenceUnavailable:
                UNAVAILABLE.labels(name).inc()
                raise

    return LearnedDetector(
        maps=maps,
        config=served.config,
        pixel_um=pixel_um,
        threshold=served.threshold if settings.threshold is None else settings.threshold,
        max_detections=served.max_detections,
    )


def _served(repo: Path, modality: str) -> ServedDetector:
    """What the repository says of the modality's learned detector (imported here: the
    export code needs torch, which classical detectors do not)."""
    from stainless.ml.export.detector import DetectorExportError, read_detector

    try:
        return read_detector(repo, modality)
    except DetectorExportError as exc:
        raise DetectorUnavailable(str(exc)) from None


def _client(settings: DetectorSettings) -> TritonClient:
    return TritonClient(settings.url, protocol=settings.protocol, timeout_s=settings.timeout_s)


@dataclass(frozen=True)
class Detectors:
    """The detector of each modality."""

    brightfield: WbcDetector
    dic: WbcDetector


def describe_detectors(settings: DetectorSettings) -> str:
    """Which detectors the settings select, for people: ``brightfield learned (triton), dic
    classical``."""
    return ", ".join(
        f"{modality} {kind.value}"
        + (f" ({settings.backend.value})" if kind is DetectorKind.LEARNED else "")
        for modality, kind in (("brightfield", settings.brightfield), ("dic", settings.dic))
    )


def check_detectors(settings: RegistrationSettings) -> None:
    """Refuse early (a service's start) when a selected learned detector is not exported.

    Raises:
        DetectorUnavailable: the message names the missing model and how to export it.
    """
    chosen = settings.detector
    for modality, kind in (("bf", chosen.brightfield), ("dic", chosen.dic)):
        if kind is DetectorKind.LEARNED:
            _served(Path(chosen.model_repository), modality)


def build_detectors(settings: RegistrationSettings) -> Detectors:
    """Both modalities' detectors as ``settings.detector`` selects them.

    Raises:
        DetectorUnavailable: a learned detector is selected and none is exported.
    """
    chosen = settings.detector
    optics = settings.optics
    bf, dic = classical_detectors_for(optics)
    client = None
    if chosen.backend is InferenceBackend.TRITON and DetectorKind.LEARNED in (
        chosen.brightfield,
        chosen.dic,
    ):
        client = _client(chosen)
    detectors: dict[str, WbcDetector] = {"bf": bf, "dic": dic}
    for modality, kind in (("bf", chosen.brightfield), ("dic", chosen.dic)):
        if kind is DetectorKind.LEARNED:
            detectors[modality] = learned_detector(
                chosen, modality, pixel_um=optics.pixel_um, client=client
            )
    return Detectors(brightfield=detectors["bf"], dic=detectors["dic"])
