"""``stainless dlq``: the events consumers gave up on, and replaying them once mended."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from stainless.cli.output import cli_settings, err
from stainless.core.events.contracts import Topic
from stainless.core.events.dead_letters import Letter, read_letters, replay
from stainless.core.events.factory import create_bus

dlq_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Dead letters: events a consumer gave up on (<topic>.dlq), listed and replayed.",
    no_args_is_help=True,
)
TopicArgument = Annotated[Topic, typer.Argument(help="The topic the events came from.")]


def _letters(topics: list[Topic]) -> list[Letter]:
    bus = create_bus(cli_settings().bus, client_id="stainless-cli")
    try:
        return [letter for topic in topics for letter in read_letters(bus, topic.value)]
    finally:
        bus.close()


@dlq_app.command("list")
def list_command(
    topic: Annotated[
        list[Topic] | None, typer.Option(help="Only the letters of this topic (repeat).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per letter.")] = False,
) -> None:
    """Each dead letter: its topic, the consumer that gave up, after how many attempts, why,
    the original's event id, and whether it can be replayed."""
    letters = _letters(topic or list(Topic))
    if as_json:
        for letter in letters:
            row = {k: v for k, v in asdict(letter).items() if k != "original"}
            typer.echo(json.dumps(row | {"replayable": letter.unreplayable is None}))
        return
    if not letters:
        err.print("no dead letters")
        return
    for letter in letters:
        typer.echo(
            f"{letter.source_topic}  event {letter.event_id or '-'}  given up by "
            f"{letter.consumer} after {letter.attempts} attempt(s)"
        )
        typer.echo(f"  error: {letter.error.splitlines()[0] if letter.error else ''}")
        why = letter.unreplayable
        typer.echo(f"  replayable: {'yes' if why is None else f'no, {why}'}")


@dlq_app.command("replay")
def replay_command(
    topic: TopicArgument,
    event_id: Annotated[
        list[str] | None, typer.Option(help="Replay the letters of this event (repeat).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every letter of the topic.")] = False,
) -> None:
    """Publish the originals again to their topic. Consumers that had handled an event
    skip it (they record event ids); the consumer that gave up handles it again."""
    if every == bool(event_id):
        err.print("[red]error:[/red] name the events to replay with --event-id, or give --all")
        raise typer.Exit(2)
    letters = _letters([topic])
    wanted = set(event_id) if event_id else None
    missing = sorted((wanted or set()) - {letter.event_id for letter in letters})
    if missing:
        err.print(f"[red]error:[/red] no dead letter on {topic.dlq} for {', '.join(missing)}")
        raise typer.Exit(1)
    bus = create_bus(cli_settings().bus, client_id="stainless-cli")
    try:
        result = replay(bus, letters, wanted)
    finally:
        bus.close()
    for letter in result.replayed:
        err.print(f"replayed {letter.event_id} to {topic} (given up by {letter.consumer})")
    for letter in result.skipped:
        err.print(
            f"[yellow]not replayed[/yellow] a letter from {letter.consumer}: {letter.unreplayable}"
        )
    err.print(f"{len(result.replayed)} replayed, {len(result.skipped)} cannot be")
    if result.skipped:
        raise typer.Exit(1)
