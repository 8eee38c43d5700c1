"""Imaging commands: ``stainless register`` and the ``stainless bench`` group.

``bench_app`` is open: other modules add their own benchmarks to it (``bench ingest``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stainless.cli.output import emit, err, out, progress

bench_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Benchmarks on phantom data; --json prints one JSON object as the last line.",
    no_args_is_help=True,
)

EXIT_REJECTED = 3
EXIT_BAD_INPUT = 2


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(EXIT_BAD_INPUT)


@bench_app.command("registration")
def bench_registration(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    pairs: Annotated[int, typer.Option(min=1, help="Phantom field pairs.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Phantom seed.")] = 0,
    width: Annotated[int | None, typer.Option(help="Field width (default 2064).")] = None,
    height: Annotated[int | None, typer.Option(help="Field height (default 1544).")] = None,
    baseline: Annotated[
        str, typer.Option(help="Baseline representation: pseudo-dic or naive.")
    ] = "pseudo-dic",
) -> None:
    """Registration accuracy and speed against plain full-resolution ECC."""
    from stainless.bench.registration import run_registration_bench

    if baseline not in ("pseudo-dic", "naive"):
        raise _fail(f"--baseline must be pseudo-dic or naive, got {baseline!r}")
    try:
        with progress("registration pairs", pairs) as advance:
            result = run_registration_bench(
                pairs,
                seed,
                width=width,
                height=height,
                baseline_representation=baseline,
                progress=advance,
            )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    emit("registration", result, as_json)


@bench_app.command("detection")
def bench_detection(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    fields: Annotated[int, typer.Option(min=1, help="Phantom fields.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Phantom seed.")] = 0,
    width: Annotated[int | None, typer.Option(help="Field width (default 2064).")] = None,
    height: Annotated[int | None, typer.Option(help="Field height (default 1544).")] = None,
) -> None:
    """Precision and recall (IoU 0.5) of the brightfield and DIC detectors."""
    from stainless.bench.detection import run_detection_bench

    try:
        with progress("detection fields", fields) as advance:
            result = run_detection_bench(fields, seed, width=width, height=height, progress=advance)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    emit("detection", result, as_json)


def _robustness_table(result: dict[str, Any], detector: str) -> Table:
    """One row per grid cell of one detector; missed targets in red."""
    from stainless.bench.robustness import TABLE_COLUMNS, TARGETS, robustness_verdict

    targets = {t.metric: t for t in TARGETS}
    report = result["detectors"][detector]
    verdict = robustness_verdict(report)
    table = Table(
        title=f"robustness ({detector}, seed {result['seed']}, "
        f"{result['fields_per_cell']} field(s) per cell): {verdict}"
    )
    table.add_column("grid cell", no_wrap=True)
    table.add_column("axis")
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    for cell in report["cells"]:
        shown = []
        for metric, _, fmt in TABLE_COLUMNS:
            value = cell[metric]
            text = "-" if value is None else fmt.format(value)
            shown.append(text if targets[metric].met(value) else f"[red]{text}[/red]")
        table.add_row(cell["name"], cell["axis"], *shown)
    return table


@bench_app.command("robustness")
def bench_robustness(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    fields: Annotated[int, typer.Option(min=1, help="Phantom fields per grid cell.")] = 3,
    seed: Annotated[int, typer.Option(min=0, help="Phantom seed.")] = 2026,
    width: Annotated[int | None, typer.Option(help="Field width (default 2064).")] = None,
    height: Annotated[int | None, typer.Option(help="Field height (default 1544).")] = None,
    preset: Annotated[
        list[str] | None,
        typer.Option(help="Acquisition preset to include (repeatable; default: all)."),
    ] = None,
    mixtures: Annotated[
        int, typer.Option(min=0, help="Random acquisitions varying every axis at once.")
    ] = 4,
    png: Annotated[
        Path | None,
        typer.Option(
            help="Write the table as a PNG (green: target met); other detectors beside it "
            "as NAME-DETECTOR.png."
        ),
    ] = None,
    learned_bf: Annotated[
        Path | None, typer.Option(help="Also measure the learned detector: its BF checkpoint.")
    ] = None,
    learned_dic: Annotated[
        Path | None, typer.Option(help="The learned detector's DIC checkpoint.")
    ] = None,
) -> None:
    """Detection and registration across the phantom's acquisition variability grid."""
    from stainless.bench.robustness import (
        DETECTORS,
        learned_detectors,
        render_robustness_table,
        robustness_grid,
        run_robustness_bench,
    )

    detectors = dict(DETECTORS)
    if (learned_bf is None) != (learned_dic is None):
        raise _fail("--learned-bf and --learned-dic go together")
    try:
        if learned_bf is not None and learned_dic is not None:
            detectors["learned"] = learned_detectors(learned_bf, learned_dic)
        cells = len(robustness_grid(seed, preset or None, mixtures))
        with progress("robustness fields", cells * fields) as advance:
            result = run_robustness_bench(
                fields,
                seed,
                width=width,
                height=height,
                presets=preset or None,
                mixtures=mixtures,
                detectors=detectors,
                progress=advance,
            )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if png is not None:
        for index, name in enumerate(result["detectors"]):
            path = png if index == 0 else png.with_name(f"{png.stem}-{name}{png.suffix}")
            try:
                path.write_bytes(render_robustness_table(result, name))
            except OSError as exc:
                raise _fail(f"cannot write {path}: {exc}") from None
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        for name in result["detectors"]:
            out.print(_robustness_table(result, name))


def _read(path: Path, what: str) -> Any:
    """An image as stored (``cv2.IMREAD_UNCHANGED``), or a clear exit 2."""
    import cv2
    import numpy as np

    if not path.is_file():
        raise _fail(f"{what} {path} does not exist or is not a file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None and path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            image = tifffile.imread(path)
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read {what} {path}: {exc}") from None
    if image is None:
        raise _fail(f"cannot read {what} {path}: not an image OpenCV can decode")
    return np.asarray(image)


def register_command(
    field_dic: Annotated[Path, typer.Argument(help="DIC field (TIFF/PNG, grayscale).")],
    field_bf: Annotated[Path, typer.Argument(help="Brightfield field (PNG/TIFF, colour).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Register a brightfield field onto its DIC field and list the white cells (DIC boxes).

    The microscope's optics (pixel size, shear angle) come from the settings
    (``STAINLESS_REGISTRATION__OPTICS__*``); stain, light and camera from the field.

    Exit status: 0 accepted, 3 rejected (the reason is printed), 2 unreadable input.
    Cells are found on the brightfield and carried into the DIC frame; a rejected pair
    lists none.
    """
    import cv2

    from stainless.imaging.detection import (
        BrightfieldDetector,
        UnreliableFieldError,
        boxes_to_dic,
    )
    from stainless.imaging.registration import Registrar

    dic = _read(field_dic, "DIC field")
    bf = _read(field_bf, "brightfield field")
    if dic.ndim == 3:  # a grey image saved with colour channels
        dic = cv2.cvtColor(dic, cv2.COLOR_BGRA2GRAY if dic.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if bf.ndim != 3 or bf.shape[2] not in (3, 4):
        raise _fail(f"brightfield field {field_bf} must be a colour image, got shape {bf.shape}")
    bf = cv2.cvtColor(bf, cv2.COLOR_BGRA2RGB if bf.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    from stainless.core.config import SettingsError, load_settings

    try:
        optics = load_settings().registration.optics
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    try:
        result = Registrar(shear_angle_deg=optics.shear_angle_deg).register(dic, bf)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    cells = []
    if result.accepted:
        height, width = dic.shape[:2]
        try:
            detected = BrightfieldDetector(pixel_um=optics.pixel_um).detect(bf)
        except UnreliableFieldError as exc:
            err.print(f"[red]rejected:[/red] detection unreliable: {exc}")
            raise typer.Exit(EXIT_REJECTED) from None
        found = boxes_to_dic(detected, result.affine_bf_to_dic, width, height)
        cells = [{"box": list(d.box), "score": d.score} for d in found]
    report = {
        "affine_bf_to_dic": [[float(v) for v in row] for row in result.affine_bf_to_dic],
        "ecc": result.ecc,
        "accepted": result.accepted,
        "reason": result.reason,
        "cells": cells,
        "seconds": result.seconds,
    }
    if as_json:
        typer.echo(json.dumps(report))
    else:
        status = "accepted" if result.accepted else f"rejected: {result.reason}"
        out.print(f"ECC {result.ecc:.4f} — {status}")
        out.print("affine (brightfield -> DIC):")
        for row in result.affine_bf_to_dic:
            out.print("  " + "  ".join(f"{v:12.6f}" for v in row))
        out.print(f"{len(cells)} white cells (DIC boxes x0 y0 x1 y1):")
        for cell in cells:
            out.print(f"  {cell['box']}  score {cell['score']:.3f}")
    if not result.accepted:
        raise typer.Exit(EXIT_REJECTED)
