"""``stainless dataset``: snapshot reviewed cells, import crops or annotated fields, show one.

Every command works on the configured database and object store (``STAINLESS_*``
settings). A command that writes a snapshot prints its key on stdout (the only
line there, so scripts can capture it) and its summary on stderr. Bad input exits 2
with a one-line reason.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stainless.cli.output import progress

if TYPE_CHECKING:
    from stainless.core.config import Settings
    from stainless.core.storage import ObjectStore
    from stainless.datasets.detection import DetectionImportReport, DetectionManifest
    from stainless.datasets.importers import ImportReportBase
    from stainless.datasets.manifest import DatasetManifest

dataset_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Dataset snapshots for retraining: from reviewed cells, imported crops or phantoms.",
    no_args_is_help=True,
)
import_app = typer.Typer(
    pretty_exceptions_enable=False,
    help=(
        "Import crops from folders or a phantom set as a dataset snapshot, or annotated "
        "fields (COCO, YOLO) as a detection dataset."
    ),
    no_args_is_help=True,
)
dataset_app.add_typer(import_app, name="import")

err = Console(stderr=True)
out = Console()
EXIT_BAD_INPUT = 2

Name = Annotated[
    str, typer.Option("--name", "-n", help="Dataset name (A-Za-z0-9._-), the key's folder.")
]
FieldModality = Annotated[
    Literal["bf", "dic"],
    typer.Option(help="The fields' modality: bf (brightfield RGB) or dic (DIC grayscale)."),
]
SkipEmpty = Annotated[
    bool,
    typer.Option(
        "--skip-empty", help="Leave out fields without a white cell (default: negatives)."
    ),
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(EXIT_BAD_INPUT)


def _settings() -> Settings:
    from stainless.core.config import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _store(settings: Settings) -> ObjectStore:
    from stainless.core.storage import create_store

    return create_store(settings.store)


@dataset_app.command("snapshot")
def snapshot(
    name: Name,
    slides: Annotated[
        list[str] | None,
        typer.Option("--slide", "-s", help="Only this slide (repeat for several)."),
    ] = None,
    include_unreviewed: Annotated[
        bool,
        typer.Option(
            "--include-unreviewed", help="Also predicted cells nobody reviewed (source prediction)."
        ),
    ] = False,
    description: Annotated[str, typer.Option(help="Free text stored in the snapshot.")] = "",
) -> None:
    """Snapshot the reviewed cells (labels from the reviews; poor quality left out)."""
    from stainless.core.db.engine import create_db_engine
    from stainless.core.db.migrate import upgrade
    from stainless.datasets.manifest import DatasetError
    from stainless.datasets.snapshot import SkippedCell, build_snapshot

    settings = _settings()
    skipped: list[SkippedCell] = []
    try:
        upgrade(settings.database.url)
        key, manifest = build_snapshot(
            create_db_engine(settings.database),
            _store(settings),
            name=name,
            slide_ids=slides or None,
            include_unreviewed=include_unreviewed,
            description=description,
            on_skip=skipped.append,
        )
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    for cell in skipped:
        err.print(f"[yellow]skipped[/yellow] cell {cell.cell_id}: {cell.reason}", highlight=False)
    err.print(f"snapshot of {len(manifest.items)} cells ({len(skipped)} skipped)", highlight=False)
    typer.echo(key)


def _report(report: ImportReportBase, line: str | None = None) -> None:
    if report.skipped:
        table = Table(title=f"{len(report.skipped)} skipped", title_justify="left")
        table.add_column("file")
        table.add_column("reason")
        for skipped in report.skipped:
            table.add_row(skipped.path, skipped.reason)
        err.print(table)
    err.print(line or f"imported {report.imported} cells", highlight=False)
    typer.echo(report.key)


Report = TypeVar("Report", bound="ImportReportBase")


def _run_import(description: str, run: Callable[[Callable[[int, int], None]], Report]) -> Report:
    from stainless.datasets.manifest import DatasetError

    try:
        with progress(description, None, transient=True) as update:
            return run(update)
    except DatasetError as exc:
        raise _fail(str(exc)) from None


def _import(
    description: str, run: Callable[[Callable[[int, int], None]], ImportReportBase]
) -> None:
    _report(_run_import(description, run))


def _import_fields(run: Callable[[Callable[[int, int], None]], DetectionImportReport]) -> None:
    report = _run_import("fields", run)
    negatives = f", {report.negatives} without a white cell" if report.negatives else ""
    _report(
        report, f"imported {report.imported} fields: {report.boxes} white-cell boxes{negatives}"
    )


@import_app.command("folder")
def import_folder(
    src: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Folder with one sub-folder of crops per class."
        ),
    ],
    name: Name,
) -> None:
    """Grayscale DIC crops in a folder per class (LY/, neutrophil/ …), PNG/TIFF/JPEG."""
    from stainless.datasets.importers import import_folder_per_class

    store = _store(_settings())
    _import(
        "crops",
        lambda update: import_folder_per_class(src, store, name=name, progress=update),
    )


@import_app.command("paired")
def import_paired(
    dic_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Folder of DIC crops.")
    ],
    bf_dir: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Folder of registered brightfield crops."
        ),
    ],
    name: Name,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", exists=True, dir_okay=False, help="CSV with stem and label columns."
        ),
    ] = None,
) -> None:
    """DIC crops and their registered brightfield crops, matched by file stem."""
    from stainless.datasets.importers import import_paired_folders

    store = _store(_settings())
    _import(
        "pairs",
        lambda update: import_paired_folders(
            dic_dir, bf_dir, store, name=name, labels_csv=labels, progress=update
        ),
    )


@import_app.command("phantom")
def import_phantom_set(
    src: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="Output folder of `stainless phantom`."),
    ],
    name: Name,
    crop_size: Annotated[int, typer.Option(min=1, help="Crop side in pixels.")] = 256,
    include_border: Annotated[
        bool, typer.Option("--include-border", help="Also cells at the field border.")
    ] = False,
) -> None:
    """Every white cell of a phantom set: DIC, registered brightfield and mask crops."""
    from stainless.datasets.importers import import_phantom

    store = _store(_settings())
    _import(
        "phantom fields",
        lambda update: import_phantom(
            src,
            store,
            name=name,
            crop_size=crop_size,
            include_border=include_border,
            progress=update,
        ),
    )


@import_app.command("coco")
def import_coco_fields(
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            exists=True,
            dir_okay=False,
            help="COCO JSON: images, annotations (bbox: x, y, width, height), categories.",
        ),
    ],
    name: Name,
    modality: FieldModality,
    pixel_um: Annotated[
        float | None,
        typer.Option(
            "--pixel-um",
            help="Pixel size in µm (an image entry's own pixel_um wins); needed unless "
            "every image entry has one.",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            file_okay=False,
            help="Folder the file names are relative to (default: the JSON's folder).",
        ),
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            help="A category that is a white cell (repeat for several; default: all).",
        ),
    ] = None,
    skip_empty: SkipEmpty = False,
) -> None:
    """Annotated whole fields from a COCO JSON as a detection dataset (white-cell boxes)."""
    from stainless.datasets.detection import import_coco

    store = _store(_settings())
    _import_fields(
        lambda update: import_coco(
            annotations,
            store,
            name=name,
            modality=modality,
            pixel_um=pixel_um,
            images=images,
            categories=category or None,
            skip_empty=skip_empty,
            progress=update,
        )
    )


def _class_ids(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--classes takes class ids separated by commas (0,1), got {text!r}") from None
    if any(i < 0 for i in ids):
        raise _fail(f"--classes takes non-negative class ids, got {text!r}")
    return ids or None


@import_app.command("yolo")
def import_yolo_fields(
    images: Annotated[
        Path,
        typer.Option("--images", exists=True, file_okay=False, help="Folder of field images."),
    ],
    name: Name,
    modality: FieldModality,
    pixel_um: Annotated[float, typer.Option("--pixel-um", help="Pixel size in µm.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            file_okay=False,
            help="Folder of YOLO .txt labels, one per image stem (default: IMAGES/labels, "
            "else IMAGES/../labels).",
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Class ids that are white cells, e.g. 0,1 (default: all)."),
    ] = None,
    skip_empty: SkipEmpty = False,
) -> None:
    """Annotated whole fields with YOLO labels as a detection dataset (white-cell boxes)."""
    from stainless.datasets.detection import import_yolo

    ids = _class_ids(classes)
    store = _store(_settings())
    _import_fields(
        lambda update: import_yolo(
            images,
            store,
            name=name,
            modality=modality,
            pixel_um=pixel_um,
            labels=labels,
            classes=ids,
            skip_empty=skip_empty,
            progress=update,
        )
    )


def summary(key: str, manifest: DatasetManifest) -> dict[str, Any]:
    """Counts of a snapshot: per class (``none`` = unlabelled), per source, pairs, masks."""
    labels = Counter(item.label or "none" for item in manifest.items)
    return {
        "key": key,
        "name": manifest.name,
        "created_at": manifest.created_at.isoformat(),
        "description": manifest.description,
        "items": len(manifest.items),
        "classes": {code: labels[code] for code in (*manifest.classes, "none") if labels.get(code)},
        "sources": dict(sorted(Counter(item.source for item in manifest.items).items())),
        "slides": len({item.slide_id for item in manifest.items if item.slide_id}),
        "pairs": sum(item.bf is not None for item in manifest.items),
        "masks": sum(item.mask is not None for item in manifest.items),
    }


def detection_summary(key: str, manifest: DetectionManifest) -> dict[str, Any]:
    """Counts of a detection dataset: fields, boxes, negatives, pixel sizes, box size."""
    sides = [
        math.sqrt((x1 - x0) * (y1 - y0)) * item.pixel_um
        for item in manifest.items
        for x0, y0, x1, y1 in item.boxes
    ]
    pixel_sizes = Counter(item.pixel_um for item in manifest.items)
    return {
        "key": key,
        "kind": manifest.kind,
        "name": manifest.name,
        "created_at": manifest.created_at.isoformat(),
        "description": manifest.description,
        "modality": manifest.modality,
        "fields": len(manifest.items),
        "boxes": manifest.boxes,
        "negatives": manifest.negatives,
        "pixel_um": {f"{um:g}": pixel_sizes[um] for um in sorted(pixel_sizes)},
        "median_box_um": round(median(sides), 2) if sides else None,
        "sources": dict(sorted(Counter(item.source for item in manifest.items).items())),
    }


def _table(title: str, key: str, info: dict[str, Any]) -> Table:
    """A dataset's counts table, opening with its key, date and description."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("key", key)
    table.add_row("created", info["created_at"])
    if info["description"]:
        table.add_row("description", info["description"])
    return table


def _show_detection(key: str, manifest: DetectionManifest, as_json: bool) -> None:
    info = detection_summary(key, manifest)
    if as_json:
        typer.echo(json.dumps(info, sort_keys=True))
        return
    table = _table(f"detection dataset {manifest.name}", key, info)
    table.add_row("modality", info["modality"])
    table.add_row("fields", str(info["fields"]))
    table.add_row("white-cell boxes", str(info["boxes"]))
    table.add_row("negatives (no white cell)", str(info["negatives"]))
    for um, count in info["pixel_um"].items():
        table.add_row(f"fields at {um} µm/px", str(count))
    if info["median_box_um"] is not None:
        table.add_row("median box side (µm)", f"{info['median_box_um']:g}")
    for source, count in info["sources"].items():
        table.add_row(f"source {source}", str(count))
    out.print(table)


@dataset_app.command("show")
def show(
    key: Annotated[str, typer.Argument(help="Dataset key: datasets/<name>/<sha256>.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of a dataset (hash verified): per class, source, pairs, masks; or fields, boxes."""
    from stainless.core.storage import InvalidKeyError
    from stainless.datasets.detection import DetectionManifest, read_any_manifest
    from stainless.datasets.manifest import DatasetError

    store = _store(_settings())
    try:
        manifest = read_any_manifest(store, key)
    except (DatasetError, InvalidKeyError) as exc:
        raise _fail(str(exc)) from None
    if isinstance(manifest, DetectionManifest):
        _show_detection(key, manifest, as_json)
        return
    info = summary(key, manifest)
    if as_json:
        typer.echo(json.dumps(info, sort_keys=True))
        return
    table = _table(f"dataset {manifest.name}", key, info)
    table.add_row("cells", str(info["items"]))
    for code, count in info["classes"].items():
        table.add_row(f"class {code}", str(count))
    for source, count in info["sources"].items():
        table.add_row(f"source {source}", str(count))
    table.add_row("slides", str(info["slides"]))
    table.add_row("with brightfield pair", str(info["pairs"]))
    table.add_row("with mask", str(info["masks"]))
    out.print(table)
