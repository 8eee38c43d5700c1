"""Commands other distributions add to the ``stainless`` CLI.

A distribution declares an entry point in the group ``stainless.commands`` naming a
function that takes ``CliHooks`` and adds its commands (the training package adds
``train``, ``train-detector``, ``calibrate-detector`` and ``bench training``). Without it
installed those commands are simply absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import typer
from rich.console import Console

from stainless.core.config import Settings

__all__ = ["GROUP", "CliHooks", "load_plugins"]

GROUP = "stainless.commands"


@dataclass(frozen=True)
class CliHooks:
    """What a plugin's commands may use: where to add them and the CLI's shared helpers."""

    app: typer.Typer
    bench_app: typer.Typer
    settings: Callable[[], Settings]  # the settings, or exit 2 with the reason
    err: Console
    emit: Callable[[str, dict[str, Any], bool], None]  # a result as a table or JSON


def load_plugins(hooks: CliHooks) -> list[str]:
    """Let every installed ``stainless.commands`` entry point add its commands."""
    names = []
    for entry in entry_points(group=GROUP):
        entry.load()(hooks)
        names.append(entry.name)
    return names
