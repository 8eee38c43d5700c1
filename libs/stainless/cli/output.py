"""What every command line prints: progress bars and results on the console."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stainless.core.config import Settings, SettingsError, load_settings
from stainless.core.logs import configure_logging

__all__ = ["cli_settings", "emit", "err", "out", "progress"]

err = Console(stderr=True)
out = Console()


def cli_settings() -> Settings:
    """The platform settings with logging configured, or exit 2 with the reason."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    configure_logging(settings.log)
    return settings


@contextmanager
def progress(
    description: str, total: int | None, *, transient: bool = False
) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields ``step(completed=None, total=None)``: one step more,
    or the count so far (a resumed run, or work whose total is learnt on the way)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def step(completed: int | None = None, total: int | None = None) -> None:
            if completed is None:
                bar.advance(task)
            elif total is None:
                bar.update(task, completed=completed)
            else:
                bar.update(task, completed=completed, total=total)

        yield step


def _table(title: str, result: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float):
            shown = f"{value:.4g}"
        elif isinstance(value, dict):
            shown = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        else:
            shown = "-" if value is None else str(value)
        table.add_row(key, shown)
    return table


def emit(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        out.print(_table(title, result))
