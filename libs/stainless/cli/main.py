"""``stainless``: phantom data, database migrations, settings, the demo."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from stainless.cli.datasets import dataset_app
from stainless.cli.dlq import dlq_app
from stainless.cli.imaging import bench_app, register_command
from stainless.cli.keys import keys_app
from stainless.cli.models import INSTANCE_HELP, models_app, promote, rollback
from stainless.cli.output import cli_settings, emit, err, progress
from stainless.cli.scanners import scanner_app
from stainless.cli.stack import announce_running_stack
from stainless.cli.store import store_app
from stainless.cli.study import study_app
from stainless.core.config import (
    SettingsError,
    StoreBackend,
    StoreSettings,
    iter_setting_fields,
)
from stainless.core.logs import configure_logging
from stainless.domain.served import InstanceKind

app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Stainless: digital staining of white blood cells.",
    no_args_is_help=True,
)
db_app = typer.Typer(
    pretty_exceptions_enable=False, help="Database migrations.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(scanner_app, name="scanner")
app.add_typer(keys_app, name="keys")
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")
app.add_typer(dataset_app, name="dataset")
app.add_typer(study_app, name="study")
app.add_typer(models_app, name="models")
app.add_typer(dlq_app, name="dlq")
app.command("promote")(promote)
app.command("rollback")(rollback)
app.command("register")(register_command)


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write the phantom set into.")],
    slides: Annotated[int, typer.Option(min=1, help="Number of slides.")] = 1,
    fields: Annotated[int, typer.Option(min=1, help="Fields per slide.")] = 3,
    seed: Annotated[int, typer.Option(min=0, help="Seed; the same seed gives the same bytes.")] = 0,
    width: Annotated[int | None, typer.Option(help="Field width in pixels (≥ 256).")] = None,
    height: Annotated[int | None, typer.Option(help="Field height in pixels (≥ 256).")] = None,
    acquisition: Annotated[
        str | None,
        typer.Option(
            help="How the lab acquires: a preset (reference, wright, giemsa, jpeg, 50x, "
            "platelets, …; see docs/acquisition.md) or a YAML file of phantom settings."
        ),
    ] = None,
    slide: Annotated[
        str | None,
        typer.Option(
            help="Which cells the smear holds: healthy (default), clinical-mix, "
            "clinical-balanced, blast-rich, left-shift, lymphoproliferative, reactive (see "
            "docs/clinical-classes.md)."
        ),
    ] = None,
) -> None:
    """Write synthetic paired DIC / brightfield slides with ground truth and a manifest."""
    from stainless.core.storage.local import LocalObjectStore
    from stainless.datasets.phantom import write_phantom_set
    from stainless.imaging.phantom_set import phantom_config

    try:
        config = phantom_config(width=width, height=height, acquisition=acquisition, slide=slide)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with progress("phantom fields", slides * fields) as step:
        manifest = write_phantom_set(
            LocalObjectStore(out),
            slides=slides,
            fields=fields,
            seed=seed,
            config=config,
            on_field=lambda _: step(),
        )
    cells = sum(len(f["cells"]) for s in manifest["slides"] for f in s["fields"])
    err.print(f"wrote {slides * fields} fields with {cells} white cells to {out}")


@app.command("phantom-grid")
def phantom_grid(
    out: Annotated[Path, typer.Argument(help="PNG to write.")],
    preset: Annotated[
        list[str] | None,
        typer.Option(help="Acquisition preset to show (repeatable; default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the one scene shown.")] = 5,
) -> None:
    """A picture of the same scene under several acquisitions (brightfield over DIC)."""
    from stainless.imaging.acquisition import PRESETS
    from stainless.imaging.phantom import generate_field
    from stainless.imaging.phantom_figure import render_acquisition_grid
    from stainless.imaging.phantom_set import field_rng, phantom_config

    names = preset or list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        err.print(
            f"[red]error:[/red] unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}"
        )
        raise typer.Exit(2)
    items = []
    with progress("acquisitions", len(names)) as step:
        for name in names:
            config = phantom_config(width=1024, height=768, acquisition=name)
            items.append((name, generate_field(config, field_rng(seed, 0, 0)), config.pixel_um))
            step()
    out.write_bytes(render_acquisition_grid(items))
    err.print(f"wrote {out}")


@app.command("phantom-classes")
def phantom_classes(
    out: Annotated[Path, typer.Argument(help="PNG to write.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the cells shown.")] = 0,
) -> None:
    """A picture of one phantom cell of every class it renders (DIC beside MGG)."""
    from stainless.imaging.phantom import PHANTOM_CLASSES, PhantomConfig, generate_field
    from stainless.imaging.phantom_figure import render_overview
    from stainless.imaging.phantom_set import field_rng

    fields = []
    with progress("classes", len(PHANTOM_CLASSES)) as step:
        for index, code in enumerate(PHANTOM_CLASSES):
            config = PhantomConfig(
                width=640,
                height=480,
                class_frequencies={code: 1.0},
                wbc_per_field=(1, 1),
                border_cell_probability=0.0,
            )
            fields.append(generate_field(config, field_rng(seed, 0, index)))
            step()
    out.write_bytes(render_overview(fields, pairs_per_row=4, panel_inches=2.0))
    err.print(f"wrote {out}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the configured database up to REVISION."""
    from stainless.core.db.migrate import upgrade

    upgrade(cli_settings().database.url, revision)


@app.command("settings")
def settings_table(
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
) -> None:
    """List every setting with its environment variable and default."""
    cli_settings()
    rows = [(env, "" if d is None else str(d), doc) for env, d, doc in iter_setting_fields()]
    if markdown:
        typer.echo("| variable | default | meaning |\n| --- | --- | --- |")
        for env, default, doc in rows:
            typer.echo(f"| `{env}` | `{default}` | {doc} |")
        return
    for env, default, doc in rows:
        typer.echo(f"{env}={default}  # {doc}")


@bench_app.command("ingest")
def bench_ingest(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    fields: Annotated[int, typer.Option(min=1, help="Fields to upload.")] = 20,
    endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint host:port (default: the configured S3 store).")
    ] = None,
) -> None:
    """Field uploads through the HTTP API (raw and form routes) into S3 beside plain minio puts
    of the same bytes."""
    from stainless.bench.ingest import run_ingest_bench

    store = cli_settings().store
    if endpoint is not None:
        try:
            store = StoreSettings(
                backend=StoreBackend.S3, endpoint=endpoint, bucket="stainless-bench"
            )
        except ValidationError:
            raise typer.BadParameter(
                f"{endpoint!r} is not host:port (no scheme, no path), e.g. 127.0.0.1:9000",
                param_hint="--endpoint",
            ) from None
    elif store.backend is not StoreBackend.S3:
        err.print(
            "[red]error:[/red] needs an S3 server: pass --endpoint or set "
            "STAINLESS_STORE__BACKEND=s3 (make infra-up starts one on 127.0.0.1:9000)"
        )
        raise typer.Exit(2)
    with progress("raw uploads beside plain puts, then form uploads", 3 * fields) as step:
        result = run_ingest_bench(store, fields=fields, on_step=step)
    emit("ingest", result, as_json)


@bench_app.command("confidence")
def bench_confidence(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    cells: Annotated[int, typer.Option(min=1, help="Cells per model size.")] = 4,
    k: Annotated[int, typer.Option(min=1, help="Corrupted latents per cell.")] = 10,
) -> None:
    """Stain + classify + confidence: batched decoding vs k+1 passes, tiny and thesis models."""
    from stainless.bench.confidence import run_confidence_bench

    with progress("cells (tiny, thesis; batched, naive)", 4 * cells) as step:
        result = run_confidence_bench(cells=cells, k=k, on_step=step)
    emit("confidence", result, as_json)


@bench_app.command("triton")
def bench_triton(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    cells: Annotated[int, typer.Option(min=1, help="Cells in each phase.")] = 64,
    clients: Annotated[int, typer.Option(min=2, help="Concurrent clients.")] = 8,
    model: Annotated[str | None, typer.Option(help="Served model (default: the setting).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Triton gRPC host:port (default: the setting).")
    ] = None,
) -> None:
    """Triton's dynamic batching: concurrent clients beside the same cells one by one."""
    from stainless.bench.triton import BenchSetupError, run_triton_bench
    from stainless.core.inference.manifest import read_manifest
    from stainless.core.inference.port import InferenceRejected, InferenceUnavailable
    from stainless.core.inference.triton import TritonClient
    from stainless.domain.served import ManifestError

    settings = cli_settings().inference
    name, repository = model or settings.model_name, Path(settings.model_repository)
    try:
        version = str(read_manifest(repository).version)
        client = TritonClient(url or settings.url, timeout_s=settings.timeout_s)
    except (ManifestError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not (repository / name / version).is_dir():
        version = ""  # not one of the manifest's models: the server's latest version
    try:
        with progress(f"{name}: cells one by one, then {clients} clients", 2 * cells) as step:
            result = run_triton_bench(
                client, model=name, version=version, cells=cells, clients=clients, on_step=step
            )
    except (BenchSetupError, InferenceUnavailable, InferenceRejected) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        client.close()
    emit("triton", result, as_json)


@bench_app.command("pipeline")
def bench_pipeline(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    fields: Annotated[int, typer.Option(min=1, help="Fields of the phantom slide.")] = 12,
    model: Annotated[Path | None, typer.Option(help="Checkpoint to export and serve.")] = None,
) -> None:
    """Cells/s through the whole pipeline (embedded) beside inference alone on the same cells."""
    from stainless.bench.pipeline import run_pipeline_bench

    err.print(f"one phantom slide of {fields} fields through the pipeline, then inference alone")
    result = run_pipeline_bench(checkpoint=model or _demo_checkpoint(), fields=fields)
    emit("pipeline", result, as_json)


@bench_app.command("fleet")
def bench_fleet(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    scanners: Annotated[int, typer.Option(min=1, help="Scanners uploading at once.")] = 3,
    slides: Annotated[int, typer.Option(min=1, help="Slides each scanner uploads.")] = 2,
    fields: Annotated[int, typer.Option(min=1, help="Field pairs of each slide.")] = 2,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the reports.")] = 600,
    plot: Annotated[Path, typer.Option(help="PNG of the consumer lag over time.")] = Path(
        "out/bench/fleet-lag.png"
    ),
    state: Annotated[Path, typer.Option(help="The stack's state folder.")] = Path("out/stack"),
) -> None:
    """Scanners uploading at once against the running stack (make up): slides per hour,
    time from the last upload to the FHIR report, each service's CPU and memory, consumer
    lag, and no lost or duplicated cell (exit 1 if any)."""
    from stainless.bench.fleet import FleetError, Stack, run_fleet_bench

    try:
        stack = Stack.from_state(state)
    except FleetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with progress("slides uploaded, then reported", 2 * scanners * slides) as step:
        result = run_fleet_bench(
            stack,
            scanners=scanners,
            slides=slides,
            fields=fields,
            timeout_s=timeout,
            plot=plot,
            on_step=step,
        )
    emit("fleet", result, as_json)
    if result["lost"] or result["duplicated"]:
        err.print(
            f"[red]error:[/red] {result['lost']} lost and {result['duplicated']} duplicated "
            f"records: {result['checks']}"
        )
        raise typer.Exit(1)


@app.command("export")
def export_command(
    checkpoint: Annotated[
        Path, typer.Option(help="Model-1, model-2 or model-3 training checkpoint (checkpoint.pt).")
    ],
    repo: Annotated[Path, typer.Option(help="Triton model repository to write into.")],
    version: Annotated[int, typer.Option(min=1, help="Version folder to write.")] = 1,
    instance: Annotated[InstanceKind, typer.Option(help=INSTANCE_HELP)] = InstanceKind.GPU,
    k: Annotated[
        int | None,
        typer.Option(
            min=1, help="Corrupted outputs per cell; default 10 (models 1 and 3), 20 (model 2)."
        ),
    ] = None,
    review_threshold: Annotated[
        float | None,
        typer.Option(
            min=0, help="δ review threshold; default: metrics.json beside the checkpoint."
        ),
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option(help="Model 2 only: the model-1 checkpoint that classifies its cells."),
    ] = None,
) -> None:
    """Write a checkpoint's served models as a Triton model repository: model 1's stain,
    classify, segment and stain_confidence (chapter-7 δ), model 2's stain_confidence
    (chapter-6 δ, Algorithm 2) with the classify of the model-1 ``--classifier``, or model
    3's stain, classify and stain_confidence (the whole latent, no mask). The class
    probabilities are served calibrated where metrics.json beside the checkpoint holds a
    calibration (stainless-evaluate)."""
    from stainless.ml.export.checkpoint import ExportError, export_checkpoint

    try:
        folders = export_checkpoint(
            checkpoint,
            repo,
            version=version,
            instance=instance,
            k=k,
            review_threshold=review_threshold,
            classifier=classifier,
        )
    except ExportError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    err.print("wrote " + ", ".join(str(f) for f in folders))


@app.command("export-detector")
def export_detector_command(
    checkpoint: Annotated[Path, typer.Option(help="Learned detector checkpoint (detector.pt).")],
    repo: Annotated[Path, typer.Option(help="Triton model repository to write into.")],
    version: Annotated[int, typer.Option(min=1, help="Version folder to write.")] = 1,
    instance: Annotated[InstanceKind, typer.Option(help=INSTANCE_HELP)] = InstanceKind.GPU,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0, max=1, help="Lowest centre score reported as a cell; default the checkpoint's."
        ),
    ] = None,
) -> None:
    """Write a learned white-cell detector (wbc_detector_bf or _dic) into a model repository."""
    from stainless.ml.export.detector import DetectorExportError, write_detector

    try:
        served = write_detector(
            checkpoint,
            repo,
            version=version,
            instance=instance,
            threshold=threshold,
        )
    except DetectorExportError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    err.print(
        f"wrote {repo / served.name} version {served.version} (threshold {served.threshold:g})"
    )


def _demo_checkpoint() -> Path:
    """The committed demo model, found from the source tree (``training/demo_model``)."""
    return Path(__file__).resolve().parents[3] / "training/demo_model/checkpoint.pt"


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/demo"),
    fields: Annotated[int, typer.Option(min=1, help="Fields of the phantom slide.")] = 3,
    clinical_fields: Annotated[
        int,
        typer.Option(
            min=0,
            help="Fields of a second slide holding the twelve clinical classes (0: none).",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(min=0)] = 7,
    model: Annotated[
        Path | None,
        typer.Option(help="Checkpoint exported when the model repository is empty."),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve the review page (no key needed) of the demo in --out, running it "
            "first only when --out holds none.",
        ),
    ] = False,
) -> None:
    """Run the pipeline on a phantom slide (and a clinical one) with embedded defaults.

    The service logs go to ``<out>/demo.log``; the console shows progress and where the
    results are."""
    summary_path = out / "summary.json"
    if serve and summary_path.is_file():
        slide_id = json.loads(summary_path.read_text())["slide_id"]
        err.print(f"serving the demo in {out} (run without --serve to run it again)")
    else:
        slide_id = _run_demo(out, fields, clinical_fields, seed, model)
        _print_demo(summary_path)
    if not serve:
        err.print("review page: run `stainless demo --serve`")
        return
    _serve_demo(slide_id)


def _run_demo(out: Path, fields: int, clinical_fields: int, seed: int, model: Path | None) -> str:
    """The demo with its logs in ``out/demo.log`` and a spinner meanwhile; its slide id."""
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    from stainless.demo import run_demo
    from stainless.ml.export.checkpoint import ExportError
    from stainless.ml.export.detector import DetectorExportError

    settings = cli_settings()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "demo.log"
    configure_logging(settings.log, path=logs)
    err.print(f"logs: {logs}")
    try:
        with err.status("phantom slides → upload → registration and cropping → staining"):
            _, slide_id = run_demo(
                settings,
                out=out,
                fields=fields,
                seed=seed,
                checkpoint=model or _demo_checkpoint(),
                clinical_fields=clinical_fields,
            )
    except ExportError as exc:
        err.print(f"[red]error:[/red] {exc} (pass --model CHECKPOINT)")
        raise typer.Exit(2) from None
    except DetectorExportError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    return slide_id


def _print_demo(summary_path: Path) -> None:
    """Where the demo's results are and what its slides show."""
    summary = json.loads(summary_path.read_text())
    err.print(
        f"slide: {summary['cell_count']} cells, {summary['needs_review']} to review; "
        f"{summary['elapsed_s']} s"
    )
    err.print(f"detectors: {summary['detectors']} (STAINLESS_REGISTRATION__DETECTOR__* to choose)")
    err.print(f"summary: {summary_path}")
    err.print(f"report:  {summary_path.parent / 'report.html'}")
    if clinical := summary.get("clinical_slide"):
        flags = ", ".join(clinical["flags"]["pathological"]) or "none"
        truth = ", ".join(clinical["ground_truth_flags"]) or "none"
        unknown = ", ".join(clinical["classes_the_model_does_not_know"]) or "none"
        err.print(
            f"clinical slide: {clinical['report']} (flags: {flags}; from the phantom's truth: "
            f"{truth}; classes the demo model cannot give: {unknown})"
        )


def _serve_demo(slide_id: str) -> None:
    """The results API and review page over the demo's database and store, keyless."""
    import uvicorn

    from stainless.core.db.engine import create_db_engine
    from stainless.core.storage import create_store
    from stainless.stages.review.api import create_app

    settings = cli_settings()
    port = settings.results.http_port
    results = create_app(
        settings.results.model_copy(update={"anonymous_role": "reviewer"}),  # may sign
        settings.clinical,
        engine=create_db_engine(settings.database),
        store=create_store(settings.store),
    )
    err.print(f"review page: http://127.0.0.1:{port}/slides/{slide_id} (Ctrl-C stops)")
    uvicorn.run(results, host="127.0.0.1", port=port, log_level="warning")


DEBUG_FLAG = "--debug"


def run() -> None:
    """The ``stainless`` command: a mistake or an unreachable server ends in one line
    (exit 1) unless ``--debug`` (anywhere on the command line) asks for the traceback."""
    debug = DEBUG_FLAG in sys.argv
    if debug:
        sys.argv.remove(DEBUG_FLAG)
    announce_running_stack(sys.argv[1:])
    try:
        app()
    except SettingsError as exc:  # pragma: no cover - cli_settings() handles the usual path
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {one_line(exc)} ({DEBUG_FLAG} shows the traceback)")
        sys.exit(1)


def one_line(exc: BaseException) -> str:
    """What went wrong in one line, with a hint where the usual cause is known."""
    from kafka.errors import KafkaTimeoutError
    from sqlalchemy.exc import OperationalError
    from urllib3.exceptions import MaxRetryError

    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).splitlines()[0] if exc.orig else first
        return (
            f"the database cannot be reached: {reason} (STAINLESS_DATABASE__URL; the stack "
            "started by make up names its settings in out/stack/stack.json)"
        )
    if isinstance(exc, KafkaTimeoutError) and "bootstrap" in first:
        return (
            f"no Kafka broker answers: {first.removeprefix('KafkaTimeoutError: ')} "
            "(STAINLESS_BUS__BOOTSTRAP_SERVERS; the stack started by make up names its settings "
            "in out/stack/stack.json)"
        )
    if isinstance(exc, MaxRetryError) and exc.pool is not None:
        cause = type(exc.reason).__name__ if exc.reason else "no answer"
        return f"nothing answers at {exc.pool.host}:{exc.pool.port} ({cause}): is the server up?"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
