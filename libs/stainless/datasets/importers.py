"""Bring outside crops into the store as a dataset snapshot.

Three layouts:

- :func:`import_folder_per_class`: one folder per class (``LY/``, ``neutrophil/`` …),
  grayscale DIC crops inside, as public white-cell sets ship (PNG, TIFF, JPEG);
- :func:`import_paired_folders`: DIC crops and their registered brightfield crops in
  two folders, matched by file stem, labels from an optional CSV (``stem,label``);
- :func:`import_phantom`: a ``stainless phantom`` set; every white cell is cut with
  its registered brightfield and its mask by the :class:`Cropper` training uses.

Crops are stored under ``datasets/<name>/objects/`` as PNG (DIC 16-bit grayscale,
brightfield 8-bit RGB, masks 8-bit), then the manifest is written last: an import
that fails leaves no manifest and removes the objects it wrote. Bad files
(undecodable, wrong channel count, empty …) are skipped and reported by name.
Annotated whole fields (COCO, YOLO) are imported by ``stainless.datasets.detection``
with the same writer, report and rollback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tifffile

from stainless.core.db.models import utcnow
from stainless.core.storage import ObjectStore
from stainless.datasets.images import BadImage, decode_image, to_bf, to_dic, to_mask
from stainless.datasets.manifest import (
    CLASSES,
    DatasetError,
    DatasetItem,
    DatasetManifest,
    dataset_prefix,
    write_manifest,
)
from stainless.imaging.codecs import encode_png
from stainless.imaging.cropping import Cropper, box_centre

__all__ = [
    "IMAGE_SUFFIXES",
    "SOURCE_FOLDER",
    "SOURCE_PAIRED",
    "SOURCE_PHANTOM",
    "ImportReport",
    "ImportReportBase",
    "Progress",
    "SkippedFile",
    "class_code",
    "import_folder_per_class",
    "import_paired_folders",
    "import_phantom",
]

SOURCE_FOLDER = "import:folder"
SOURCE_PAIRED = "import:paired"
SOURCE_PHANTOM = "phantom"
IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg"})

Progress = Callable[[int, int], None]
"""Called with ``(done, total)`` as an import goes."""

_NAMES = {
    "art": "ART",
    "artifact": "ART",
    "artefact": "ART",
    "debris": "ART",
    "ba": "BA",
    "basophil": "BA",
    "eo": "EO",
    "eosinophil": "EO",
    "ly": "LY",
    "lymphocyte": "LY",
    "mo": "MO",
    "monocyte": "MO",
    "sne": "SNE",
    "neutrophil": "SNE",
    "segmented neutrophil": "SNE",
    "neutrophil segmented": "SNE",
    "smu": "SMU",
    "smudge": "SMU",
    "smudge cell": "SMU",
}


def class_code(name: str) -> str | None:
    """The :class:`CellClass` code a folder or label names, case-insensitively; None if none.

    Codes (``ly``, ``SNE``) and common names, singular or plural (``Neutrophils``,
    ``lymphocyte``, ``smudge_cells``) are understood.
    """
    words = re.sub(r"[\s_\-]+", " ", name.strip().lower()).strip()
    if words.upper() in CLASSES:
        return words.upper()
    for candidate in (words, words.removesuffix("s")):
        if candidate in _NAMES:
            return _NAMES[candidate]
    singular = " ".join(w.removesuffix("s") for w in words.split())
    return _NAMES.get(singular)


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class ImportReportBase:
    """What any import wrote: the manifest's key, how many items, every file it skipped."""

    key: str | None = None
    imported: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append(SkippedFile(str(path), reason))


@dataclass
class ImportReport(ImportReportBase):
    """What a crop import wrote: the snapshot's key and manifest, and every file it skipped."""

    manifest: DatasetManifest | None = None


Report = TypeVar("Report", bound=ImportReportBase)


class _Writer:
    """Objects of one import; all removed again if the import does not reach its manifest."""

    def __init__(self, store: ObjectStore, name: str) -> None:
        self.store = store
        self.name = name
        self.prefix = f"{dataset_prefix(name)}objects/"
        self.written: list[str] = []

    def key(self, item_id: str, part: str) -> str:
        digest = hashlib.sha256(item_id.encode()).hexdigest()[:24]
        return f"{self.prefix}{digest[:2]}/{digest}_{part}.png"

    def put_png(self, key: str, image: np.ndarray) -> str:
        self.store.put(key, encode_png(image), content_type="image/png")
        self.written.append(key)
        return key

    def rollback(self) -> None:
        for key in self.written:
            self.store.delete(key)


def _finish(
    writer: _Writer,
    report: ImportReport,
    items: list[DatasetItem],
    *,
    description: str,
) -> ImportReport:
    if not items:
        reasons = f" ({len(report.skipped)} files skipped)" if report.skipped else ""
        raise DatasetError(f"nothing to import into {writer.name!r}{reasons}")
    manifest = DatasetManifest(
        name=writer.name,
        created_at=utcnow(),
        items=tuple(sorted(items, key=lambda item: item.id)),
        description=description,
    )
    report.key = write_manifest(writer.store, manifest)
    report.manifest = manifest
    report.imported = len(items)
    return report


def _run(store: ObjectStore, name: str, build: Callable[[_Writer], Report]) -> Report:
    writer = _Writer(store, name)
    try:
        return build(writer)
    except BaseException:
        writer.rollback()
        raise


def _images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` (recursively), in path order; hidden ones left out."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


def _read(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from None
    return decode_image(data)


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} {path} is not a folder")
    return path


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def import_folder_per_class(
    src: Path,
    store: ObjectStore,
    *,
    name: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Import ``src/<class>/*.{png,tif,tiff,jpg,jpeg}`` grayscale DIC crops with their class.

    Class folders are matched to :class:`CellClass` codes or common names, case
    insensitively (``neutrophil`` → SNE); other folders, loose files, files that are
    not images or not grayscale are reported and skipped. 8-bit crops are widened to
    the 16-bit DIC range (see :data:`stainless.datasets.images.U8_TO_DIC`).

    Raises:
        DatasetError: ``src`` is not a folder, a bad name, or nothing importable.
    """
    src = _check_dir(Path(src), "source")
    dataset_prefix(name)
    report = ImportReport()
    jobs: list[tuple[Path, str]] = []
    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report.skip(entry.relative_to(src), "not in a class folder")
            continue
        code = class_code(entry.name)
        if code is None:
            report.skip(
                entry.relative_to(src),
                f"unknown class folder (expected one of {', '.join(CLASSES)} or a common name)",
            )
            continue
        jobs += [(path, code) for path in _images(entry)]

    def build(writer: _Writer) -> ImportReport:
        items: list[DatasetItem] = []
        for done, (path, code) in enumerate(jobs, start=1):
            rel = path.relative_to(src).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                report.skip(rel, f"not an image file ({path.suffix or 'no suffix'})")
            else:
                try:
                    dic = to_dic(_read(path))
                except BadImage as exc:
                    report.skip(rel, str(exc))
                else:
                    items.append(
                        DatasetItem(
                            id=rel,
                            dic=writer.put_png(writer.key(rel, "dic"), dic),
                            label=code,
                            source=SOURCE_FOLDER,
                        )
                    )
            _tick(progress, done, len(jobs))
        return _finish(writer, report, items, description=f"folder per class from {src.name}")

    return _run(store, name, build)


def _read_labels(labels_csv: Path, report: ImportReport) -> dict[str, str]:
    """``stem → class code`` from a CSV with ``stem`` (or ``file``) and ``label`` columns."""
    try:
        text = labels_csv.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read labels {labels_csv}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    stem_col = columns.get("stem") or columns.get("file") or columns.get("filename")
    label_col = columns.get("label") or columns.get("class")
    if stem_col is None or label_col is None:
        raise DatasetError(
            f"labels {labels_csv} needs a header with stem (or file) and label (or class) columns"
        )
    labels: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        stem = Path((row.get(stem_col) or "").strip()).stem
        value = (row.get(label_col) or "").strip()
        if not stem:
            continue
        code = class_code(value) if value else None
        if value and code is None:
            report.skip(f"{labels_csv.name}:{line}", f"unknown label {value!r} for {stem!r}")
            continue
        if code is not None:
            labels[stem] = code
    return labels


def _by_stem(folder: Path, report: ImportReport, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        rel = f"{what}/{path.name}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.skip(rel, f"not an image file ({path.suffix or 'no suffix'})")
        elif path.stem in found:
            report.skip(rel, f"another {what} file has the stem {path.stem!r}")
        else:
            found[path.stem] = path
    return found


def import_paired_folders(
    dic_dir: Path,
    bf_dir: Path,
    store: ObjectStore,
    *,
    name: str,
    labels_csv: Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import DIC crops and their registered brightfield crops, matched by file stem.

    A DIC crop without a brightfield file of the same stem is imported without a
    pair (``bf`` empty); a brightfield file without its DIC crop is skipped, and so
    is a pair whose sizes differ. Labels come from ``labels_csv`` (``stem,label``; a
    stem missing there has no label).

    Raises:
        DatasetError: a folder that is not one, an unreadable labels file, a bad
            name, or nothing importable.
    """
    dic_dir = _check_dir(Path(dic_dir), "DIC folder")
    bf_dir = _check_dir(Path(bf_dir), "brightfield folder")
    dataset_prefix(name)
    report = ImportReport()
    labels = _read_labels(Path(labels_csv), report) if labels_csv is not None else {}
    dics = _by_stem(dic_dir, report, "dic")
    bfs = _by_stem(bf_dir, report, "bf")
    for stem in sorted(set(bfs) - set(dics)):
        report.skip(f"bf/{bfs[stem].name}", "no DIC crop with this stem")
    stems = sorted(dics)

    def build(writer: _Writer) -> ImportReport:
        items: list[DatasetItem] = []
        for done, stem in enumerate(stems, start=1):
            item = _paired_item(writer, report, stem, dics[stem], bfs.get(stem), labels.get(stem))
            if item is not None:
                items.append(item)
            _tick(progress, done, len(stems))
        return _finish(
            writer, report, items, description=f"paired from {dic_dir.name} and {bf_dir.name}"
        )

    return _run(store, name, build)


def _paired_item(
    writer: _Writer,
    report: ImportReport,
    stem: str,
    dic_path: Path,
    bf_path: Path | None,
    label: str | None,
) -> DatasetItem | None:
    try:
        dic = to_dic(_read(dic_path))
    except BadImage as exc:
        report.skip(f"dic/{dic_path.name}", str(exc))
        return None
    bf = None
    if bf_path is not None:
        try:
            bf = to_bf(_read(bf_path))
        except BadImage as exc:
            report.skip(f"bf/{bf_path.name}", str(exc))
            return None
        if bf.shape[:2] != dic.shape:
            report.skip(
                f"bf/{bf_path.name}",
                f"brightfield is {bf.shape[1]}x{bf.shape[0]} but its DIC crop is "
                f"{dic.shape[1]}x{dic.shape[0]}: not a registered pair",
            )
            return None
    return DatasetItem(
        id=stem,
        dic=writer.put_png(writer.key(stem, "dic"), dic),
        bf=None if bf is None else writer.put_png(writer.key(stem, "bf"), bf),
        label=label,
        source=SOURCE_PAIRED,
    )


def _load_field(src: Path, key: str) -> np.ndarray:
    path = src / key
    if not path.is_file():
        raise BadImage("missing file")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            return np.asarray(tifffile.imread(path))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise BadImage(f"undecodable TIFF: {exc}") from None
    return _read(path)


def _phantom_fields(src: Path) -> list[tuple[str, dict[str, Any]]]:
    path = src / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        return [
            (str(slide["slide"]), field_entry)
            for slide in manifest["slides"]
            for field_entry in slide["fields"]
        ]
    except FileNotFoundError:
        raise DatasetError(f"{src} holds no phantom set (no manifest.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a phantom manifest: {exc!r}") from None


def import_phantom(
    src: Path,
    store: ObjectStore,
    *,
    name: str,
    crop_size: int = 256,
    include_border: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every white cell of a ``stainless phantom`` set: DIC, registered brightfield, mask.

    Crops are cut as training cuts them (``Cropper.crop`` for DIC and mask,
    ``Cropper.crop_registered`` through the field's brightfield→DIC affine for the
    brightfield), centred on the cell's DIC box. Cells at the field border are left
    out unless ``include_border`` (training leaves them out too).

    Raises:
        DatasetError: no phantom set in ``src``, a bad crop size or name, or no cell.
    """
    src = _check_dir(Path(src), "phantom folder")
    dataset_prefix(name)
    if crop_size < 1:
        raise DatasetError(f"crop size must be positive, got {crop_size}")
    fields = _phantom_fields(src)
    report = ImportReport()
    cropper = Cropper(sizes=(crop_size,))

    def build(writer: _Writer) -> ImportReport:
        items: list[DatasetItem] = []
        for done, (slide, entry) in enumerate(fields, start=1):
            items += _phantom_cells(
                writer, report, cropper, src, slide, entry, crop_size, include_border
            )
            _tick(progress, done, len(fields))
        return _finish(writer, report, items, description=f"phantom set {src.name}")

    return _run(store, name, build)


def _phantom_cells(
    writer: _Writer,
    report: ImportReport,
    cropper: Cropper,
    src: Path,
    slide: str,
    entry: dict[str, Any],
    crop_size: int,
    include_border: bool,
) -> Iterable[DatasetItem]:
    images: dict[str, np.ndarray] = {}
    checks: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "dic": to_dic,
        "bf": to_bf,
        "mask": to_mask,
    }
    for part, check in checks.items():
        key = str(entry[part])
        try:
            images[part] = check(_load_field(src, key))
        except BadImage as exc:
            report.skip(key, f"{exc}; its field's cells are skipped")
            return []
    affine = np.asarray(entry["affine_bf_to_dic"], dtype=np.float64)
    items = []
    for index, cell in enumerate(entry["cells"]):
        item_id = f"{slide}/field_{int(entry['index']):03d}/cell_{index:02d}"
        if cell.get("at_border") and not include_border:
            report.skip(item_id, "at the field border (training leaves these out)")
            continue
        code = str(cell["class"])
        if code not in CLASSES:
            report.skip(item_id, f"unknown class {code!r}")
            continue
        centre = box_centre(cell["box_dic"])
        dic = cropper.crop(images["dic"], centre, crop_size).image
        bf = cropper.crop_registered(images["bf"], affine, centre, crop_size).image
        mask = cropper.crop(images["mask"], centre, crop_size).image
        items.append(
            DatasetItem(
                id=item_id,
                dic=writer.put_png(writer.key(item_id, "dic"), dic),
                bf=writer.put_png(writer.key(item_id, "bf"), bf),
                mask=writer.put_png(writer.key(item_id, "mask"), mask),
                label=code,
                source=SOURCE_PHANTOM,
                slide_id=slide,
            )
        )
    return items
