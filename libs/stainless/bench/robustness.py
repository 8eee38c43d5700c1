"""Robustness benchmark: detection and registration across the acquisition variability grid.

The grid has one cell per named preset of ``stainless.imaging.acquisition.PRESETS`` (each
varies one axis alone: stain, illumination, camera, optics or smear; ``reference`` is the
default lab) and ``mixtures`` cells ``mixture-0``, ``mixture-1``, ... whose acquisition is
``random_acquisition(np.random.default_rng([seed, 7919, k]))``: every axis varied at once.
Field ``i`` of grid cell ``c`` (its position in the grid) is ``generate_field`` with the
generator of ``field_rng(seed, c, i)``; the default seed (2026) keeps these fields apart
from the ones the algorithms were tuned on (seeds 0-100).

Each detector and the registrar is given the scanner's known optics from the field's
configuration (pixel size, DIC shear angle and distance, bias, wavelength), never the prism
sign, stain, illumination or camera: those are estimated from each field.

Scoring is ``stainless.imaging.scoring.score_field``: boxes matched greedily at IoU 0.5; a
cell counts in a modality only when at least half of it lies in that modality's field (a
sliver cut by the edge is neither a miss nor, when found, a false positive).
``bf_non_cells`` and ``dic_non_cells`` count the detections that overlap a platelet, a
platelet clump, debris or stain precipitate (IoU >= 0.3): never a white cell. A field on
which a detector raises ``UnreliableFieldError`` is counted as rejected for that detector,
and its cells as misses. Registration error is ``corner_error_px`` against the phantom's
true affine, over the accepted pairs (as in ``stainless.bench.registration``).

Detectors are pluggable: ``DETECTORS`` maps a name to a factory building the brightfield
and DIC detectors for a configuration; results are reported per detector under
``detectors``, and the top-level summary is that of the first one (``detector``).
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from stainless.bench.detection import detection_metrics
from stainless.core.config import OpticsSettings
from stainless.imaging.acquisition import PRESETS, merge, random_acquisition
from stainless.imaging.detection import (
    UnreliableFieldError,
    WbcDetector,
    box_iou,
)
from stainless.imaging.phantom import (
    PhantomCell,
    PhantomConfig,
    PhantomField,
    SmearObject,
    generate_field,
)
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.imaging.registration import Registrar, corner_error_px
from stainless.imaging.scoring import score_field
from stainless.stages.registration.detectors import classical_detectors_for

Progress = Callable[[], None]

MIXTURE_STREAM = 7919
"""Second entry of the seed sequence of the mixtures' acquisitions (a prime, apart from
the grid-cell indices that ``field_rng`` uses)."""


@dataclass(frozen=True)
class Target:
    """A goal on one per-cell metric: ``metric op threshold`` (``op`` is >=, <= or <)."""

    metric: str
    op: str
    threshold: float

    def met(self, value: object) -> bool:
        """Whether ``value`` reaches the target; a missing value (None) does not."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        return value < self.threshold

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


TARGETS: tuple[Target, ...] = (
    Target("bf_precision", ">=", 0.95),
    Target("bf_recall", ">=", 0.95),
    Target("dic_precision", ">=", 0.90),
    Target("dic_recall", ">=", 0.90),
    Target("registration_median_px", "<=", 0.3),
    Target("registration_p95_px", "<=", 1.0),
    Target("registration_rejected_fraction", "<", 0.02),
    Target("bf_non_cells", "<=", 0),
    Target("dic_non_cells", "<=", 0),
)


@dataclass(frozen=True)
class DetectorPair:
    """The brightfield and the DIC detector of one method."""

    bf: WbcDetector
    dic: WbcDetector


DetectorFactory = Callable[[PhantomConfig], DetectorPair]


def scanner_optics(config: PhantomConfig) -> OpticsSettings:
    """What a scanner's settings would say of a phantom configuration's microscope."""
    return OpticsSettings(
        pixel_um=config.pixel_um,
        shear_angle_deg=config.shear_angle_deg,
        shear_um=config.shear_um,
        bias_rad=config.dic_bias_rad,
        wavelength_um=config.wavelength_um,
    )


def classical_detectors(config: PhantomConfig) -> DetectorPair:
    """The pipeline's classical detectors, given the scanner's known optics of ``config``."""
    bf, dic = classical_detectors_for(scanner_optics(config))
    return DetectorPair(bf=bf, dic=dic)


DETECTORS: Mapping[str, DetectorFactory] = MappingProxyType({"classical": classical_detectors})


def learned_detectors(bf_checkpoint: Path, dic_checkpoint: Path) -> DetectorFactory:
    """A factory of the learned detectors (``stainless.ml.models.detector``) of two checkpoints,
    each at its own score threshold (``stainless-train calibrate-detector``; 0.3 uncalibrated).

    Raises:
        FileNotFoundError: a checkpoint is missing (the message names it).
        ValueError: a file is not a detector checkpoint.
    """
    from stainless.ml.models.detector import LearnedDetector

    for path in (bf_checkpoint, dic_checkpoint):  # fail before the grid runs
        LearnedDetector.load(path, pixel_um=0.075)

    def build(config: PhantomConfig) -> DetectorPair:
        return DetectorPair(
            bf=LearnedDetector.load(bf_checkpoint, pixel_um=config.pixel_um),
            dic=LearnedDetector.load(dic_checkpoint, pixel_um=config.pixel_um),
        )

    return build


@dataclass(frozen=True)
class GridCell:
    """One acquisition of the grid."""

    name: str
    axis: str
    description: str
    overrides: Mapping[str, Any]


def _describe_mixture(overrides: Mapping[str, Any]) -> str:
    """A one-line summary of a random acquisition's main settings."""
    stain = overrides.get("stain", {})
    lamp = overrides.get("illumination", {})
    camera = overrides.get("camera", {})
    bits = f"{camera.get('bf_bit_depth', 8)}-bit"
    if camera.get("jpeg_quality") is not None:
        bits += f" JPEG q{camera['jpeg_quality']}"
    parts = [
        f"{stain.get('protocol', 'mgg')} x{stain.get('strength', 1.0):g}",
        f"{lamp.get('colour_temperature_k', 5500):g} K",
        f"exposure {lamp.get('exposure', 1.0):g}",
        bits,
        f"gain {camera.get('gain', 1.0):g}",
        f"{overrides.get('pixel_um', 0.075):g} µm/px",
        f"shear {overrides.get('shear_angle_deg', 45.0):g}°",
        f"prism {overrides.get('prism_sign', 1):+d}",
        f"coverage {overrides.get('rbc_coverage', 0.3):g}",
    ]
    return ", ".join(parts)


def robustness_grid(
    seed: int = 2026, presets: Sequence[str] | None = None, mixtures: int = 4
) -> list[GridCell]:
    """The grid: the named presets (all by default, in ``PRESETS`` order) then the mixtures.

    Raises:
        ValueError: an unknown or repeated preset name, a negative ``mixtures``, or an
            empty grid.
    """
    if mixtures < 0:
        raise ValueError(f"mixtures must be at least 0, got {mixtures}")
    names = list(PRESETS) if presets is None else list(presets)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"presets must not repeat, got {names}")
    grid = [
        GridCell(n, PRESETS[n].axis, PRESETS[n].description, merge({}, PRESETS[n].overrides))
        for n in names
    ]
    for k in range(mixtures):
        overrides = random_acquisition(np.random.default_rng([seed, MIXTURE_STREAM, k]))
        grid.append(GridCell(f"mixture-{k}", "mixture", _describe_mixture(overrides), overrides))
    if not grid:
        raise ValueError("the grid is empty: give at least one preset or mixture")
    return grid


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _jsonable(value: Any) -> Any:
    """Overrides as plain JSON types (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


_NON_CELL_IOU = 0.3
"""A detection overlapping a platelet, a platelet clump or debris this much reports it."""


def _box(item: PhantomCell | SmearObject, modality: str) -> tuple[int, int, int, int]:
    return item.box_bf if modality == "bf" else item.box_dic


def _nonempty(box: tuple[int, int, int, int]) -> bool:
    return box[2] > box[0] and box[3] > box[1]


class _Scores:
    """Counts of one detector on one grid cell."""

    def __init__(self) -> None:
        self.bf = Counter[str]()
        self.dic = Counter[str]()
        self.rejected = Counter[str]()  # fields a detector found unreliable
        self.non_cells = Counter[str]()
        self.seconds = 0.0

    def score(self, pair: DetectorPair, field: PhantomField, iou: float) -> None:
        started = time.perf_counter()
        for modality, detector, image, counts in (
            ("bf", pair.bf, field.bf, self.bf),
            ("dic", pair.dic, field.dic, self.dic),
        ):
            try:
                found = detector.detect(image)
            except UnreliableFieldError:
                self.rejected[modality] += 1
                found = []
            tp, fp, fn = score_field(found, field.cells, modality, iou)
            counts.update(tp=tp, fp=fp, fn=fn)
            objects = [_box(o, modality) for o in field.smear_objects]
            self.non_cells[modality] += sum(
                any(box_iou(d.box, box) >= _NON_CELL_IOU for box in objects if _nonempty(box))
                for d in found
            )
        self.seconds += time.perf_counter() - started

    def report(self) -> dict[str, Any]:
        return {
            **detection_metrics(self.bf, self.dic),
            "bf_rejected_fields": self.rejected["bf"],
            "dic_rejected_fields": self.rejected["dic"],
            "bf_non_cells": self.non_cells["bf"],
            "dic_non_cells": self.non_cells["dic"],
            "detection_seconds": self.seconds,
        }


def _summary(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The cells missing each target; and, for the proportions, those whose 95% interval
    lies wholly below it (a miss that more fields would not turn into a pass)."""
    failing = {t.metric: [c["name"] for c in cells if not t.met(c[t.metric])] for t in TARGETS}
    surely = {
        t.metric: [c["name"] for c in cells if not t.met(c[f"{t.metric}_ci"][1])]
        for t in TARGETS
        if t.op == ">=" and all(f"{t.metric}_ci" in c for c in cells)
    }
    return {
        "failing": failing,
        "failing_beyond_doubt": surely,
        "all_targets_met": not any(failing.values()),
    }


def robustness_verdict(report: Mapping[str, Any]) -> str:
    """One detector's outcome in words: met, or how many cells miss a target and how many
    of those misses lie beyond the 95% interval."""
    if report["all_targets_met"]:
        return "all targets met"
    missed = {name for names in report["failing"].values() for name in names}
    surely = {name for names in report["failing_beyond_doubt"].values() for name in names}
    return f"targets missed in {len(missed)} cells ({len(surely)} beyond the 95% interval)"


def run_robustness_bench(
    fields: int = 3,
    seed: int = 2026,
    *,
    width: int | None = None,
    height: int | None = None,
    presets: Sequence[str] | None = None,
    mixtures: int = 4,
    detectors: Mapping[str, DetectorFactory] | None = None,
    registrar: Callable[[PhantomConfig], Registrar] | None = None,
    iou: float = 0.5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Detect and register ``fields`` phantom fields in every cell of the variability grid.

    Args:
        fields: fields per grid cell.
        seed: phantom seed (field ``i`` of grid cell ``c`` uses ``field_rng(seed, c, i)``;
            mixture ``k`` draws its acquisition from ``[seed, 7919, k]``).
        width: field width (default 2064).
        height: field height (default 1544).
        presets: the presets to include, in order (default: all of ``PRESETS``).
        mixtures: random acquisitions varying every axis at once.
        detectors: name -> factory of the detectors to measure (default ``DETECTORS``).
        registrar: factory of the registrar for a configuration (default: ``Registrar``
            with the configuration's shear angle).
        iou: IoU a detection needs to match a true box.
        progress: called after each field.

    Returns:
        ``seed, fields_per_cell, width, height, iou, targets, detector, detectors,
        failing, failing_beyond_doubt, all_targets_met, seconds``.
        ``detectors[name]`` holds ``cells`` (one dict per grid cell, in grid order:
        ``name, axis, description, overrides, fields, wbcs``, the detection metrics,
        their 95% Wilson intervals and counts, ``bf_rejected_fields``, registration
        ``registration_median_px``, ``registration_p95_px`` (None when no pair was
        accepted), ``registration_rejected``, ``registration_rejected_fraction`` and
        ``seconds``, the cell's wall time) with its ``failing`` (target metric -> failing
        cell names), ``failing_beyond_doubt`` (of the proportions, the cells whose 95%
        interval, ``<metric>_ci``, lies wholly below the target) and
        ``all_targets_met``; the top-level ``failing``, ``failing_beyond_doubt`` and
        ``all_targets_met`` are those of ``detector``, the first detector.

    Raises:
        ValueError: a bad argument or phantom configuration.
    """
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields}")
    factories = dict(DETECTORS if detectors is None else detectors)
    if not factories:
        raise ValueError("at least one detector is needed")
    grid = robustness_grid(seed, presets, mixtures)
    make_registrar = registrar or (lambda c: Registrar(shear_angle_deg=c.shear_angle_deg))
    configs = [phantom_config(width=width, height=height, acquisition=g.overrides) for g in grid]
    started_all = time.perf_counter()
    per_detector: dict[str, list[dict[str, Any]]] = {name: [] for name in factories}
    for index, (cell, config) in enumerate(zip(grid, configs, strict=True)):
        started = time.perf_counter()
        pairs = {name: factory(config) for name, factory in factories.items()}
        scores = {name: _Scores() for name in factories}
        reg = make_registrar(config)
        errors: list[float] = []
        rejected = wbcs = 0
        for i in range(fields):
            field = generate_field(config, field_rng(seed, index, i))
            wbcs += len(field.cells)
            for name, pair in pairs.items():
                scores[name].score(pair, field, iou)
            result = reg.register(field.dic, field.bf)
            if result.accepted:
                errors.append(
                    corner_error_px(
                        result.affine_bf_to_dic, field.affine_bf_to_dic, config.width, config.height
                    )
                )
            else:
                rejected += 1
            if progress is not None:
                progress()
        seconds = time.perf_counter() - started
        common = {
            "name": cell.name,
            "axis": cell.axis,
            "description": cell.description,
            "overrides": _jsonable(cell.overrides),
            "fields": fields,
            "wbcs": wbcs,
        }
        registration = {
            "registration_median_px": _percentile(errors, 50),
            "registration_p95_px": _percentile(errors, 95),
            "registration_max_px": max(errors) if errors else None,
            "registration_rejected": rejected,
            "registration_rejected_fraction": rejected / fields,
        }
        for name in factories:
            per_detector[name].append(
                {**common, **scores[name].report(), **registration, "seconds": seconds}
            )
    reports = {name: {"cells": cells, **_summary(cells)} for name, cells in per_detector.items()}
    primary = next(iter(factories))
    return {
        "bench": "robustness",
        "seed": seed,
        "fields_per_cell": fields,
        "mixtures": mixtures,
        "width": configs[0].width,
        "height": configs[0].height,
        "iou": iou,
        "targets": {t.metric: {"op": t.op, "threshold": t.threshold} for t in TARGETS},
        "detector": primary,
        "detectors": reports,
        "failing": reports[primary]["failing"],
        "failing_beyond_doubt": reports[primary]["failing_beyond_doubt"],
        "all_targets_met": reports[primary]["all_targets_met"],
        "seconds": time.perf_counter() - started_all,
    }


# ----------------------------------------------------------------------------- table

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (metric, short header, value format): one column per target
    ("bf_precision", "BF P", "{:.3f}"),
    ("bf_recall", "BF R", "{:.3f}"),
    ("dic_precision", "DIC P", "{:.3f}"),
    ("dic_recall", "DIC R", "{:.3f}"),
    ("registration_median_px", "reg median px", "{:.3f}"),
    ("registration_p95_px", "reg p95 px", "{:.3f}"),
    ("registration_rejected_fraction", "reg rejected", "{:.0%}"),
    ("bf_non_cells", "BF non-cells", "{:d}"),
    ("dic_non_cells", "DIC non-cells", "{:d}"),
)
_GREEN = "#c7ecc7"
_RED = "#f4b6b6"
_PLAIN = "#ffffff"


def render_robustness_table(
    result: Mapping[str, Any], detector: str | None = None, *, dpi: int = 110
) -> bytes:
    """PNG table of one detector's grid: a row per grid cell, a column per metric.

    A metric cell is green where its target is met, red where not (a missing value shows
    as "-" and fails). The title gives the detector, seed and fields per cell.

    Raises:
        ValueError: ``detector`` is not in the result.
    """
    name = detector or str(result["detector"])
    if name not in result["detectors"]:
        raise ValueError(f"no detector {name!r} in the result: {', '.join(result['detectors'])}")
    report = result["detectors"][name]
    cells: list[dict[str, Any]] = report["cells"]
    targets = {t.metric: t for t in TARGETS}
    text: list[list[str]] = []
    colours: list[list[str]] = []
    for cell in cells:
        row, shades = [cell["name"], cell["axis"]], [_PLAIN, _PLAIN]
        for metric, _, fmt in TABLE_COLUMNS:
            value = cell[metric]
            row.append("-" if value is None else fmt.format(value))
            shades.append(_GREEN if targets[metric].met(value) else _RED)
        text.append(row)
        colours.append(shades)
    headers = ["grid cell", "axis"]
    for metric, header, fmt in TABLE_COLUMNS:
        target = targets[metric]
        bound = fmt.format(target.threshold) if "%" in fmt else f"{target.threshold:g}"
        headers.append(f"{header}\n{target.op} {bound}")
    figure = Figure(figsize=(12.0, 0.5 + 0.25 * (len(cells) + 2)), dpi=dpi)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0.01, 0.01, 0.98, 0.98 - 0.4 / figure.get_figheight()))
    axis.set_axis_off()
    table = axis.table(
        cellText=text,
        cellColours=colours,
        colLabels=headers,
        colColours=["#dddddd"] * len(headers),
        cellLoc="center",
        bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 1.0),
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (line, _), table_cell in table.get_celld().items():
        if line == 0:  # two-line headers; the bbox keeps the rows' proportions
            table_cell.set_height(2 * table_cell.get_height())
    verdict = robustness_verdict(report)
    figure.suptitle(
        f"Robustness, {name} detectors: seed {result['seed']}, "
        f"{result['fields_per_cell']} field(s) per cell, "
        f"{result['width']}x{result['height']} px — {verdict}",
        fontsize=10,
        y=1.0 - 0.08 / figure.get_figheight(),
        va="top",
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
