"""``stainless-train --config C --out DIR``: train a model in this process (resumable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stainless_training.config import ConfigError, ModelKind, load_config
from stainless_training.kinds import trainer_module

TrainFunction = Callable[..., Path]


def trainer_for(kind: ModelKind) -> TrainFunction:
    """The ``train(config, out, on_step=...)`` function of a model kind (imported lazily)."""
    return trainer_module(kind).train


app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


@app.command()
def main(
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

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"training {settings.model}", total=settings.steps)
        checkpoint = train(settings, out, on_step=lambda step, _: bar.update(task, completed=step))
    err.print(f"checkpoint: {checkpoint}")


def run() -> None:
    app()
