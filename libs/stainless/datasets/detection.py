"""Detection datasets: a lab's annotated whole fields, white-cell boxes, for the learned detector.

A detection dataset is JSON at ``datasets/<name>/<content_hash>.json``, the layout of the
crop snapshots (``stainless.datasets.manifest``), with ``"kind": "detection"``. Each item
is one field:

- ``image``: the field's object key, a PNG under ``datasets/<name>/objects/``, as the
  detector takes it for the dataset's ``modality``: brightfield 8-bit RGB ``HxWx3``
  (``to_bf``) or DIC 16-bit grayscale ``HxW`` (``to_dic``);
- ``width``, ``height``: the image's size in pixels;
- ``pixel_um``: its pixel size in the specimen (µm), which ``prepare`` needs to bring the
  field to the detector's working pixel size;
- ``boxes``: its white cells as ``(x0, y0, x1, y1)`` in the image's pixels, exclusive ends
  (pixel ``i`` covers ``[i, i + 1)``, as ``stainless.ml.models.detector``), inside the image
  and not empty. A field without boxes is a negative: a field known to hold no white cell.

The content hash is the SHA-256 of the canonical JSON of ``kind``, ``modality`` and
``items``: name, date and description do not enter it, and any edit to a field shows as
a hash that no longer matches the key. :func:`read_detection_manifest` checks exactly that.

Two importers bring annotated fields in, skipping bad files with a reason each as the
crop importers do (an import that fails leaves no manifest and removes what it wrote):

- :func:`import_coco`: a COCO JSON (``images``, ``annotations`` with ``bbox`` ``[x, y, w,
  h]``, ``categories``);
- :func:`import_yolo`: a folder of images and a folder of YOLO ``.txt`` labels (``class
  cx cy w h`` normalised to ``[0, 1]``), one per image stem.

A field any of whose boxes cannot be read or placed is skipped whole, never imported
without that box: a white cell missing from a field's boxes would teach the detector
that it is background. Boxes that overshoot the image by up to :data:`EDGE_TOLERANCE_PX`
(rounding in annotation tools) are clipped to it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from stainless.core.db.models import utcnow
from stainless.core.storage import ObjectNotFoundError, ObjectStore, validate_key
from stainless.datasets.images import BadImage, read_crop, to_bf, to_dic
from stainless.datasets.importers import (
    IMAGE_SUFFIXES,
    ImportReportBase,
    Progress,
    _check_dir,
    _images,
    _read,
    _run,
    _tick,
    _Writer,
)
from stainless.datasets.manifest import (
    DatasetError,
    DatasetManifest,
    DatasetName,
    canonical_hash,
    check_manifest_key,
    dataset_prefix,
    load_manifest_json,
    manifest_key,
    parse_manifest,
    put_manifest_json,
    validation_reasons,
)

__all__ = [
    "DETECTION_KIND",
    "DETECTION_VERSION",
    "EDGE_TOLERANCE_PX",
    "MIN_FIELD_PX",
    "MODALITIES",
    "SOURCE_COCO",
    "SOURCE_YOLO",
    "AnnotatedField",
    "Box",
    "DetectionField",
    "DetectionImportReport",
    "DetectionManifest",
    "FieldModality",
    "detection_content_hash",
    "detection_dataset_key",
    "import_coco",
    "import_yolo",
    "load_annotated_fields",
    "read_any_manifest",
    "read_detection_manifest",
    "write_detection_manifest",
]

DETECTION_VERSION = 1
DETECTION_KIND: Final = "detection"
SOURCE_COCO = "import:coco"
SOURCE_YOLO = "import:yolo"

FieldModality = Literal["bf", "dic"]
MODALITIES: tuple[str, ...] = ("bf", "dic")
"""``stainless.ml.models.detector.Modality`` values, repeated so that importing needs no torch
(a unit test keeps the two equal)."""

MIN_FIELD_PX = 16
"""The detector's smallest field side (``prepare`` refuses smaller; a unit test checks)."""

EDGE_TOLERANCE_PX = 0.5
"""A box may overshoot the image by this much (annotation tools' rounding); it is clipped."""

_DECIMALS = 4  # box coordinates are stored rounded to 1e-4 px: a stable hash, no float noise

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------- manifest


class DetectionField(BaseModel):
    """One annotated field: its image's key and size, pixel size, white-cell boxes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    image: str
    width: int
    height: int
    pixel_um: float
    boxes: tuple[Box, ...] = ()
    source: str

    @field_validator("id", "source")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("image")
    @classmethod
    def _key(cls, value: str) -> str:
        return validate_key(value)

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive number of pixels, got {value}")
        return value

    @field_validator("pixel_um")
    @classmethod
    def _pixel_um(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a finite pixel size > 0 µm, got {value}")
        return value

    @model_validator(mode="after")
    def _boxes_inside(self) -> DetectionField:
        for index, box in enumerate(self.boxes):
            x0, y0, x1, y1 = box
            if not all(math.isfinite(v) for v in box):
                raise ValueError(f"box {index} {box} is not finite")
            if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
                raise ValueError(
                    f"box {index} {box} is empty or not inside the {self.width}x{self.height} image"
                )
        return self


class DetectionManifest(BaseModel):
    """A detection dataset: name, date, modality and fields (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = DETECTION_VERSION
    kind: Literal["detection"] = DETECTION_KIND
    name: DatasetName
    created_at: datetime
    modality: FieldModality
    items: tuple[DetectionField, ...]
    description: str = ""

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != DETECTION_VERSION:
            raise ValueError(
                f"unsupported detection manifest version {value} "
                f"(this code reads {DETECTION_VERSION})"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> DetectionManifest:
        ids: set[str] = set()
        for item in self.items:
            if item.id in ids:
                raise ValueError(f"field id {item.id!r} appears twice")
            ids.add(item.id)
        return self

    @property
    def content_hash(self) -> str:
        """SHA-256 hex of the canonical JSON of ``kind``, ``modality`` and ``items``."""
        return detection_content_hash(self.modality, self.items)

    @property
    def key(self) -> str:
        """The object key this dataset is (or would be) stored under."""
        return detection_dataset_key(self.name, self.content_hash)

    @property
    def boxes(self) -> int:
        """White-cell boxes over all fields."""
        return sum(len(item.boxes) for item in self.items)

    @property
    def negatives(self) -> int:
        """Fields without a white cell."""
        return sum(not item.boxes for item in self.items)


def detection_content_hash(modality: str, items: Iterable[DetectionField]) -> str:
    payload = {
        "kind": DETECTION_KIND,
        "modality": modality,
        "items": [item.model_dump(mode="json") for item in items],
    }
    return canonical_hash(payload)


def detection_dataset_key(name: str, digest: str) -> str:
    """``datasets/<name>/<digest>.json``: the crop snapshots' layout."""
    return manifest_key(name, digest)


def write_detection_manifest(store: ObjectStore, manifest: DetectionManifest) -> str:
    """Store the dataset under ``datasets/<name>/<hash>.json`` and return that key.

    Raises:
        DatasetError: the dataset has no fields.
    """
    if not manifest.items:
        raise DatasetError(f"detection dataset {manifest.name!r} has no fields")
    return put_manifest_json(store, manifest.key, manifest)


def _parse_detection(key: str, data: dict[str, Any]) -> DetectionManifest:
    try:
        manifest = DetectionManifest.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(
            f"{key!r} is not a valid detection manifest: {validation_reasons(exc)}"
        ) from None
    check_manifest_key(key, name=manifest.name, digest=manifest.content_hash)
    return manifest


def read_detection_manifest(store: ObjectStore, key: str) -> DetectionManifest:
    """The detection dataset under ``key``, checked against the hash its key carries.

    Raises:
        DatasetError: nothing under the key, a key that is not a dataset's, a crop
            snapshot, an unreadable or empty manifest, or content that no longer
            matches its hash.
    """
    data = load_manifest_json(store, key)
    if data.get("kind") != DETECTION_KIND:
        raise DatasetError(f"{key!r} is a snapshot of cell crops, not a detection dataset")
    return _parse_detection(key, data)


def read_any_manifest(store: ObjectStore, key: str) -> DatasetManifest | DetectionManifest:
    """The crop snapshot or detection dataset under ``key`` (its ``kind`` says which)."""
    data = load_manifest_json(store, key)
    if data.get("kind") == DETECTION_KIND:
        return _parse_detection(key, data)
    return parse_manifest(key, data)


@dataclass(frozen=True)
class AnnotatedField:
    """A field as the detector takes it, its white cells and its pixel size.

    ``image`` is brightfield ``HxWx3`` uint8 RGB or DIC ``HxW`` uint16, what
    ``LearnedDetector.detect`` and ``prepare(image, pixel_um, modality)`` expect;
    ``boxes`` are ``(x0, y0, x1, y1)`` in its pixels, exclusive ends.
    """

    id: str
    image: np.ndarray
    boxes: tuple[Box, ...]
    pixel_um: float


def load_annotated_fields(
    store: ObjectStore, manifest: DetectionManifest
) -> Iterator[AnnotatedField]:
    """The dataset's fields, one decoded image at a time, in manifest order.

    Raises:
        DatasetError: a field's image is missing, undecodable, of the wrong kind for the
            modality or not of the size its manifest gives.
    """
    for item in manifest.items:
        try:
            image = read_crop(store, item.image, manifest.modality)
        except ObjectNotFoundError:
            raise DatasetError(f"field {item.id!r}: no image under {item.image!r}") from None
        except BadImage as exc:
            raise DatasetError(f"field {item.id!r}: image {item.image!r}: {exc}") from None
        height, width = image.shape[:2]
        if (width, height) != (item.width, item.height):
            raise DatasetError(
                f"field {item.id!r}: image {item.image!r} is {width}x{height}, "
                f"the manifest says {item.width}x{item.height}"
            )
        yield AnnotatedField(id=item.id, image=image, boxes=item.boxes, pixel_um=item.pixel_um)


# ----------------------------------------------------------------------------- import


@dataclass
class DetectionImportReport(ImportReportBase):
    """What a detection import wrote: key and manifest, fields, boxes, negatives, skips."""

    manifest: DetectionManifest | None = None
    boxes: int = 0
    negatives: int = 0


@dataclass(frozen=True)
class _Field:
    """A field to import: its image file and what the annotations say of it."""

    id: str  # the image's path relative to the images folder (POSIX)
    path: Path
    pixel_um: float
    boxes: tuple[Box, ...]  # in pixels, or in [0, 1] of the side when ``normalised``
    normalised: bool = False
    size: tuple[int, int] | None = None  # (width, height) the annotations give


def _check_modality(modality: str) -> FieldModality:
    if modality not in MODALITIES:
        raise DatasetError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return "bf" if modality == "bf" else "dic"


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _check_pixel_um(pixel_um: float | None) -> float | None:
    if pixel_um is not None and _positive(pixel_um) is None:
        raise DatasetError(f"pixel size must be a finite number > 0 µm, got {pixel_um}")
    return pixel_um


def _place(box: Box, width: int, height: int) -> Box | str:
    """The box clipped to the image, or why it cannot be."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box):
        return "is not finite"
    if x1 <= x0 or y1 <= y0:
        return "is degenerate (no width or no height)"
    tol = EDGE_TOLERANCE_PX
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        return f"lies outside the {width}x{height} image"
    placed = (
        round(max(x0, 0.0), _DECIMALS),
        round(max(y0, 0.0), _DECIMALS),
        round(min(x1, float(width)), _DECIMALS),
        round(min(y1, float(height)), _DECIMALS),
    )
    if placed[2] <= placed[0] or placed[3] <= placed[1]:
        return f"lies outside the {width}x{height} image"
    return placed


def _show(box: Box) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _field_item(
    writer: _Writer,
    report: DetectionImportReport,
    job: _Field,
    modality: str,
    source: str,
    skip_empty: bool,
) -> DetectionField | None:
    convert = to_bf if modality == "bf" else to_dic
    try:
        image = convert(_read(job.path))
    except BadImage as exc:
        report.skip(job.id, str(exc))
        return None
    height, width = image.shape[:2]
    if job.size is not None and job.size != (width, height):
        report.skip(
            job.id,
            f"image is {width}x{height} but the annotations say {job.size[0]}x{job.size[1]}",
        )
        return None
    if min(width, height) < MIN_FIELD_PX:
        report.skip(
            job.id,
            f"image is {width}x{height}: the detector needs {MIN_FIELD_PX} pixels a side",
        )
        return None
    boxes: list[Box] = []
    for index, raw in enumerate(job.boxes):
        box: Box = (
            (raw[0] * width, raw[1] * height, raw[2] * width, raw[3] * height)
            if job.normalised
            else raw
        )
        placed = _place(box, width, height)
        if isinstance(placed, str):
            report.skip(job.id, f"box {index} {_show(box)} {placed}; the field is skipped")
            return None
        boxes.append(placed)
    if not boxes and skip_empty:
        report.skip(job.id, "no white-cell box (--skip-empty)")
        return None
    return DetectionField(
        id=job.id,
        image=writer.put_png(writer.key(job.id, modality), image),
        width=width,
        height=height,
        pixel_um=job.pixel_um,
        boxes=tuple(boxes),
        source=source,
    )


def _import_fields(
    store: ObjectStore,
    report: DetectionImportReport,
    jobs: Sequence[_Field],
    *,
    name: str,
    modality: FieldModality,
    source: str,
    skip_empty: bool,
    description: str,
    progress: Progress | None,
) -> DetectionImportReport:
    def build(writer: _Writer) -> DetectionImportReport:
        items: list[DetectionField] = []
        for done, job in enumerate(jobs, start=1):
            item = _field_item(writer, report, job, modality, source, skip_empty)
            if item is not None:
                items.append(item)
            _tick(progress, done, len(jobs))
        skipped = f" ({len(report.skipped)} skipped)" if report.skipped else ""
        if not items:
            raise DatasetError(f"nothing to import into {name!r}: no usable field{skipped}")
        if not any(item.boxes for item in items):
            raise DatasetError(
                f"nothing to import into {name!r}: none of its {len(items)} fields has a "
                f"white-cell box{skipped}"
            )
        manifest = DetectionManifest(
            name=name,
            created_at=utcnow(),
            modality=modality,
            items=tuple(sorted(items, key=lambda item: item.id)),
            description=description,
        )
        report.key = write_detection_manifest(store, manifest)
        report.manifest = manifest
        report.imported = len(items)
        report.boxes = manifest.boxes
        report.negatives = manifest.negatives
        return report

    return _run(store, name, build)


# ----------------------------------------------------------------------------- COCO


def _load_coco(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read annotations {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"annotations {path} are not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotations {path} are not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"annotations {path} are not COCO: no list of images")
    for part in ("annotations", "categories"):
        if not isinstance(data.get(part, []), list):
            raise DatasetError(f"annotations {path} are not COCO: {part} is not a list")
    return data


def _coco_categories(
    data: dict[str, Any], path: Path, wanted: Sequence[str] | None
) -> tuple[set[Any] | None, set[Any]]:
    """The white-cell category ids (those named in ``wanted``; None: all) and every id."""
    names: dict[Any, str] = {}
    for entry in data.get("categories", []):
        if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
            raise DatasetError(f"annotations {path}: a category without id and name: {entry!r}")
        names[entry["id"]] = str(entry["name"])
    if not wanted:
        return None, set(names)
    unknown = sorted(set(wanted) - set(names.values()))
    if unknown:
        known = ", ".join(sorted(set(names.values()))) or "none"
        raise DatasetError(
            f"annotations {path} have no category {', '.join(map(repr, unknown))} "
            f"(categories: {known})"
        )
    return {cid for cid, name in names.items() if name in set(wanted)}, set(names)


def _relative(file_name: str) -> str | None:
    """``file_name`` as a POSIX path inside the images folder; None if it leaves it."""
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.as_posix() == ".":
        return None
    return rel.as_posix()


def _coco_bbox(bbox: object) -> Box | None:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return None
    values = [_number(v) for v in bbox]
    if any(v is None for v in values):
        return None
    x, y, w, h = (float(v) for v in values if v is not None)
    return (x, y, x + w, y + h)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _coco_image(
    entry: object, pixel_um: float | None
) -> tuple[Any, str, tuple[int, int], float] | str:
    """``(id, file name, (width, height), pixel_um)`` of an image entry, or why not."""
    if not isinstance(entry, dict):
        return "not an object"
    if "id" not in entry or not isinstance(entry["id"], int | str):
        return "no id"
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        return "no file_name"
    rel = _relative(file_name)
    if rel is None:
        return f"file_name {file_name!r} leaves the images folder"
    width, height = entry.get("width"), entry.get("height")
    if isinstance(width, bool) or isinstance(height, bool):
        return "width and height must be positive integers"
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return f"width and height must be positive integers, got {width!r} and {height!r}"
    if "pixel_um" in entry:
        own = _positive(entry["pixel_um"])
        if own is None:
            return f"pixel_um must be a number > 0, got {entry['pixel_um']!r}"
        return entry["id"], rel, (width, height), own
    if pixel_um is None:
        return "no pixel size: pass --pixel-um or give the image a pixel_um"
    return entry["id"], rel, (width, height), pixel_um


def _coco_jobs(
    data: dict[str, Any],
    path: Path,
    images_dir: Path,
    *,
    chosen: set[Any] | None,
    declared: set[Any],
    pixel_um: float | None,
    report: DetectionImportReport,
) -> list[_Field]:
    entries: dict[Any, tuple[str, tuple[int, int], float]] = {}
    seen: set[str] = set()
    left_out: set[Any] = set()  # ids of image entries skipped (reported once, there)
    for index, entry in enumerate(data["images"]):
        parsed = _coco_image(entry, pixel_um)
        label = (entry.get("file_name") if isinstance(entry, dict) else None) or f"images[{index}]"
        if isinstance(parsed, str):
            report.skip(str(label), f"image entry: {parsed}")
            if isinstance(entry, dict) and isinstance(entry.get("id"), int | str):
                left_out.add(entry["id"])
            continue
        image_id, rel, size, own = parsed
        if image_id in entries:
            report.skip(rel, f"image id {image_id!r} appears twice; the first is kept")
        elif rel in seen:
            report.skip(rel, "file_name appears twice; the first is kept")
        else:
            entries[image_id] = (rel, size, own)
            seen.add(rel)

    boxes: dict[Any, list[Box]] = {image_id: [] for image_id in entries}
    broken: dict[Any, str] = {}
    for index, ann in enumerate(data.get("annotations", [])):
        where = f"annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        if not isinstance(ann, dict) or "image_id" not in ann:
            report.skip(f"{path.name}: {where}", "no image_id")
            continue
        image_id = ann["image_id"]
        if not isinstance(image_id, int | str) or image_id not in entries:
            if image_id not in left_out:
                report.skip(f"{path.name}: {where}", f"unknown image id {image_id!r}")
            continue
        category = ann.get("category_id")
        if declared and category not in declared:
            broken.setdefault(image_id, f"{where}: unknown category id {category!r}; field skipped")
            continue
        if chosen is not None and category not in chosen:
            continue  # another object class (red cell, platelet …)
        box = _coco_bbox(ann.get("bbox"))
        if box is None:
            broken.setdefault(
                image_id, f"{where}: bbox is not [x, y, width, height] numbers; field skipped"
            )
            continue
        boxes[image_id].append(box)

    jobs: list[_Field] = []
    for image_id, (rel, size, own) in entries.items():
        if image_id in broken:
            report.skip(rel, broken[image_id])
            continue
        jobs.append(
            _Field(
                id=rel,
                path=images_dir / rel,
                pixel_um=own,
                boxes=tuple(boxes[image_id]),
                size=size,
            )
        )
    return jobs


def import_coco(
    annotations: Path,
    store: ObjectStore,
    *,
    name: str,
    modality: str,
    pixel_um: float | None = None,
    images: Path | None = None,
    categories: Sequence[str] | None = None,
    skip_empty: bool = False,
    progress: Progress | None = None,
) -> DetectionImportReport:
    """Import the fields of a COCO detection JSON and their white-cell boxes.

    Images are resolved relative to ``images`` (default: the JSON's folder); each is
    checked against its entry's ``width`` and ``height``. ``bbox`` is ``[x, y, w, h]``
    in pixels. The categories named in ``categories`` (default: every category) are
    white cells; other annotations are ignored. An image's own ``pixel_um`` entry wins
    over ``pixel_um``. Images without white-cell annotations are negatives, or skipped
    when ``skip_empty``.

    Raises:
        DatasetError: unreadable or non-COCO JSON, an unknown category, no pixel size
            at all, a bad name or modality, a missing images folder, or nothing
            importable (no field, or no white-cell box in any field).
    """
    annotations = Path(annotations)
    dataset_prefix(name)
    kind = _check_modality(modality)
    _check_pixel_um(pixel_um)
    images_dir = _check_dir(
        Path(images) if images is not None else annotations.parent, "images folder"
    )
    data = _load_coco(annotations)
    chosen, declared = _coco_categories(data, annotations, categories)
    has_own = any(isinstance(e, dict) and "pixel_um" in e for e in data["images"])
    if pixel_um is None and not has_own:
        raise DatasetError(
            f"no pixel size: pass --pixel-um (no image in {annotations.name} has a pixel_um)"
        )
    report = DetectionImportReport()
    jobs = _coco_jobs(
        data,
        annotations,
        images_dir,
        chosen=chosen,
        declared=declared,
        pixel_um=pixel_um,
        report=report,
    )
    return _import_fields(
        store,
        report,
        jobs,
        name=name,
        modality=kind,
        source=SOURCE_COCO,
        skip_empty=skip_empty,
        description=f"COCO from {annotations.name}",
        progress=progress,
    )


# ----------------------------------------------------------------------------- YOLO


def _yolo_labels_dir(images: Path, labels: Path | None) -> Path:
    if labels is not None:
        return _check_dir(Path(labels), "labels folder")
    for candidate in (images / "labels", images.parent / "labels"):
        if candidate.is_dir() and candidate.resolve() != images.resolve():
            return candidate
    raise DatasetError(
        f"no labels folder: neither {images / 'labels'} nor {images.parent / 'labels'}; "
        "pass --labels"
    )


def _yolo_boxes(path: Path, classes: set[int] | None) -> tuple[Box, ...] | str:
    """Normalised ``(x0, y0, x1, y1)`` of the selected classes in a label file, or why not."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        return f"unreadable label file: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return "label file is not UTF-8 text"
    boxes: list[Box] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        parsed = _yolo_line(tokens)
        if parsed is None:
            shown = line.strip()[:60]
            return f"line {number}: expected 'class cx cy w h', got {shown!r}"
        cls, (cx, cy, w, h) = parsed
        if classes is None or cls in classes:
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return tuple(boxes)


def _yolo_line(tokens: list[str]) -> tuple[int, tuple[float, float, float, float]] | None:
    if len(tokens) != 5:
        return None
    try:
        cls_value = float(tokens[0])
        cx, cy, w, h = (float(t) for t in tokens[1:])
    except ValueError:
        return None
    if not (cls_value.is_integer() and cls_value >= 0):
        return None
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        return None
    return int(cls_value), (cx, cy, w, h)


def _yolo_jobs(
    images: Path,
    labels: Path,
    *,
    classes: set[int] | None,
    pixel_um: float,
    report: DetectionImportReport,
) -> list[_Field]:
    inside = labels.resolve().is_relative_to(images.resolve())
    stems: dict[str, Path] = {}
    for path in _images(images):
        if inside and path.resolve().is_relative_to(labels.resolve()):
            continue
        rel = path.relative_to(images).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.skip(rel, f"not an image file ({path.suffix or 'no suffix'})")
            continue
        stem = path.relative_to(images).with_suffix("").as_posix()
        if stem in stems:
            report.skip(rel, f"another image has the stem {stem!r}")
            continue
        stems[stem] = path
    for path in sorted(labels.rglob("*.txt")):
        label_rel = path.relative_to(labels)
        if any(part.startswith(".") for part in label_rel.parts):
            continue
        stem = label_rel.with_suffix("").as_posix()
        if stem not in stems and stem != "classes":  # labelImg writes classes.txt there
            report.skip(f"{labels.name}/{label_rel.as_posix()}", "no image with this stem")

    jobs: list[_Field] = []
    for stem, path in stems.items():
        rel = path.relative_to(images).as_posix()
        label_file = labels / f"{stem}.txt"
        boxes: tuple[Box, ...] = ()
        if label_file.is_file():
            found = _yolo_boxes(label_file, classes)
            if isinstance(found, str):
                report.skip(rel, f"{labels.name}/{stem}.txt: {found}; field skipped")
                continue
            boxes = found
        jobs.append(_Field(id=rel, path=path, pixel_um=pixel_um, boxes=boxes, normalised=True))
    return jobs


def import_yolo(
    images: Path,
    store: ObjectStore,
    *,
    name: str,
    modality: str,
    pixel_um: float,
    labels: Path | None = None,
    classes: Sequence[int] | None = None,
    skip_empty: bool = False,
    progress: Progress | None = None,
) -> DetectionImportReport:
    """Import a folder of fields and their YOLO labels as white-cell boxes.

    Every image under ``images`` (sub-folders too) is a field; its labels are
    ``<labels>/<stem>.txt`` (the same sub-folders), one ``class cx cy w h`` line per
    object, normalised to the image's sides. ``labels`` defaults to ``images/labels``,
    else ``images/../labels`` (the Ultralytics layout). The classes in ``classes``
    (default: every class) are white cells; other lines are ignored. An image without
    a label file, or with no white-cell line, is a negative (skipped when
    ``skip_empty``).

    Raises:
        DatasetError: a missing images or labels folder, a bad pixel size, name or
            modality, or nothing importable (no field, or no box in any field).
    """
    images = _check_dir(Path(images), "images folder")
    dataset_prefix(name)
    kind = _check_modality(modality)
    if _check_pixel_um(pixel_um) is None:
        raise DatasetError("a YOLO import needs the pixel size: pass --pixel-um")
    if classes is not None and any(c < 0 for c in classes):
        raise DatasetError(f"class ids are non-negative integers, got {list(classes)}")
    labels_dir = _yolo_labels_dir(images, labels)
    report = DetectionImportReport()
    jobs = _yolo_jobs(
        images,
        labels_dir,
        classes=None if not classes else set(classes),
        pixel_um=pixel_um,
        report=report,
    )
    return _import_fields(
        store,
        report,
        jobs,
        name=name,
        modality=kind,
        source=SOURCE_YOLO,
        skip_empty=skip_empty,
        description=f"YOLO from {images.name}",
        progress=progress,
    )
