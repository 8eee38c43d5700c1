"""``stainless-train``: every training command.

``local`` trains a model from a config in this process (resumable); ``ray`` trains one on a
dataset snapshot with Ray Train and registers it; ``detector`` trains the learned white-cell
detector on Ray; ``calibrate-detector`` chooses its score threshold; ``bench`` measures Ray
Train throughput. (``stainless-evaluate``, ``stainless-train-job`` and ``stainless-trainer``
are the evaluation, the Ray job's entry point and the training service.)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stainless.cli.output import emit, err, progress
from stainless.cli.stack import announce_running_stack
from stainless.core.config import SettingsError, load_settings
from stainless.core.logs import configure_logging
from stainless_training.config import ConfigError, ModelKind, load_config
from stainless_training.kinds import trainer_module
from stainless_training.settings import TrainingSettings

TrainFunction = Callable[..., Path]


def trainer_for(kind: ModelKind) -> TrainFunction:
    """The ``train(config, out, on_step=...)`` function of a model kind (imported lazily)."""
    return trainer_module(kind).train


app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="Stainless training: models and detectors, in this process or on Ray Train.",
)


def _settings() -> TrainingSettings:
    """The platform settings (database, store, Ray), or exit 2 with the reason."""
    try:
        settings = load_settings(TrainingSettings)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    configure_logging(settings.log)
    return settings


@app.command("local")
def local_command(
    config: Annotated[Path, typer.Option(help="Training config (YAML).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, config, metrics log.")],
) -> None:
    """Train the config's ``model`` on phantom cells; a run folder with a checkpoint resumes."""
    try:
        settings = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        settings.phased_schedule()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {config}: schedule: {exc}")
        raise typer.Exit(2) from None
    unet = settings.segmenter.checkpoint
    if settings.model is ModelKind.DISENTANGLED and unet is not None and not Path(unet).is_file():
        err.print(f"[red]error:[/red] {config}: segmenter.checkpoint: no file {unet}")
        raise typer.Exit(2)
    train = trainer_for(settings.model)

    with progress(f"training {settings.model}", settings.steps) as advance:
        checkpoint = train(settings, out, on_step=lambda step, _: advance(step))
    err.print(f"checkpoint: {checkpoint}")


@app.command("bench")
def bench_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    steps: Annotated[int, typer.Option(min=6, help="Steps of each run.")] = 30,
) -> None:
    """Ray Train samples/s of the tiny model 1 on 1 and 2 workers (one core each)."""
    import ray

    from stainless_training.bench import run_training_bench
    from stainless_training.distributed import connect_ray

    settings = _settings()
    err.print(f"tiny model 1, {steps} steps on 1 then 2 Ray workers")
    connect_ray(settings)
    try:
        result = run_training_bench(steps=steps)
    finally:
        ray.shutdown()
    emit("training", result, as_json)


@app.command("ray")
def ray_command(
    model: Annotated[str, typer.Option(help="mtmd, disentangled or paired.")],
    dataset: Annotated[str, typer.Option(help="Dataset snapshot key (stainless dataset …).")],
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers.")] = 1,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster; default STAINLESS_RAY__ADDRESS or local.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Training settings (YAML).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override the steps.")] = None,
) -> None:
    """Train a model on a dataset snapshot with Ray Train; register the result."""
    from stainless.stages.retraining.jobs import JobError
    from stainless_training.train_command import base_config
    from stainless_training.train_command import train as run_training

    settings = _settings()
    try:
        version = run_training(
            settings,
            model=model,
            dataset=dataset,
            workers=workers,
            ray_address=ray_address,
            config=base_config(config, steps=steps),
            console=err,
        )
    except (JobError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _announce(settings, version)


def _announce(settings: TrainingSettings, version_id: str) -> None:
    """The registered version's name on stdout; how it compares and how to promote it."""
    from stainless.core.db.engine import create_db_engine
    from stainless.core.registry import find_version, promoted_version
    from stainless.stages.retraining.comparison import judge

    engine = create_db_engine(settings.database)
    version = find_version(engine, version_id)
    name = f"{version.name}/{version.version}"
    err.print(f"registered {name} (model version {version.id})")
    served = promoted_version(engine)
    if served is not None and served.id != version.id:
        verdict = judge(name, version.metrics, served.id, f"{served.name}/{served.version}")
        err.print(("" if verdict.allowed else "[yellow]not promotable:[/yellow] ") + verdict.reason)
    err.print(f"serve it with: stainless promote {name}")
    typer.echo(name)


@app.command("detector")
def detector_command(
    modality: Annotated[str, typer.Option(help="bf (brightfield) or dic.")],
    out: Annotated[Path, typer.Option(help="Folder for detector.pt and detector.yaml.")],
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers.")] = 1,
    steps: Annotated[int | None, typer.Option(min=1, help="Override the steps.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Detector training settings (YAML, DetectorTrainConfig)."),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster; default STAINLESS_RAY__ADDRESS or local.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="A lab's annotated fields (stainless dataset import coco|yolo)."),
    ] = None,
) -> None:
    """Train the learned white-cell detector with Ray Train (any workers) on phantom fields
    across the acquisition variability and, given a dataset, a lab's annotated fields."""
    from stainless.datasets.manifest import DatasetError
    from stainless_training.config import ConfigError
    from stainless_training.detector import load_detector_config
    from stainless_training.detector_command import train as run_training

    settings = _settings()
    overrides: dict[str, object] = {"modality": modality}
    if steps is not None:
        overrides["steps"] = steps
    if dataset is not None:
        overrides["dataset"] = dataset
    try:
        run_config = load_detector_config(config, **overrides)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        run_training(
            settings,
            run_config,
            out,
            workers=workers,
            ray_address=ray_address,
            console=err,
        )
    except (OSError, DatasetError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("calibrate-detector")
def calibrate_detector_command(
    checkpoint: Annotated[Path, typer.Option(help="Learned detector checkpoint (detector.pt).")],
    fields: Annotated[int, typer.Option(min=1, help="Held-out random-acquisition fields.")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the fields.")] = 77,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Choose a learned detector's score threshold (the best balance of precision and recall
    on held-out phantom fields under random acquisitions) and store it in the checkpoint,
    for export and evaluation."""
    from stainless_training.detector import calibrate_threshold

    try:
        calibration = calibrate_threshold(checkpoint, fields=fields, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(calibration))
        return
    table = Table(title=f"{checkpoint}: {fields} fields, seed {seed}", title_justify="left")
    for column in ("threshold", "precision", "recall", "F1", "tp", "fp", "fn"):
        table.add_column(column, justify="right")
    for row in calibration["table"]:
        chosen = "→ " if row["threshold"] == calibration["threshold"] else ""
        table.add_row(
            f"{chosen}{row['threshold']:.2f}",
            *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")),
            *(str(row[k]) for k in ("tp", "fp", "fn")),
        )
    err.print(table)
    err.print(f"stored threshold {calibration['threshold']:g} in {checkpoint}")


def run() -> None:
    announce_running_stack(sys.argv[1:])
    app()
