"""``stainless-train --config C --out DIR``: train a model in this process (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stainless_training.config import ConfigError, ModelKind, load_config

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


@app.command()
def main(
    config: Annotated[Path, typer.Option(help="Training config (YAML).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, config, metrics log.")],
) -> None:
    """Train on phantom cells; a run folder with a checkpoint continues where it stopped."""
    try:
        settings = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if settings.model is not ModelKind.MTMD:
        err.print(f"[red]error:[/red] training {settings.model} is not available yet; use mtmd")
        raise typer.Exit(2)
    from stainless_training.mtmd import train

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
