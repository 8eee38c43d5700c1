from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.core.events import Envelope, InMemoryBus, SlideCompleted
from stainless.core.events.contracts import dead_letter

TOPIC = "slides.completed"


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> InMemoryBus:
    """One in-process bus that every command of the test sees (the CLI's own would be new)."""
    shared = InMemoryBus()
    monkeypatch.setattr("stainless.cli.dlq.create_bus", lambda *_a, **_k: shared)
    return shared


def _completed(slide: str) -> Envelope:
    payload = SlideCompleted(slide_id=slide, cell_count=1, differential={"LY": 1}, needs_review=0)
    return Envelope.wrap(payload, key=slide)


def _letter(original: Envelope | bytes) -> Envelope:
    consumer = "stainless-notifier"
    return dead_letter(original, topic=TOPIC, consumer=consumer, error="503", attempts=3)


def test_list_shows_each_letter_and_whether_it_can_be_replayed(bus: InMemoryBus) -> None:
    event = _completed("s1")
    bus.publish(_letter(event))
    bus.publish(_letter(b"cut-sh"))
    result = CliRunner().invoke(app, ["dlq", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    listed = [(r["event_id"], r["replayable"]) for r in rows]
    assert listed == [(event.event_id, True), (None, False)]
    table = CliRunner().invoke(app, ["dlq", "list"])
    assert "stainless-notifier" in table.stdout
    assert "replayable: no, the original is not an event" in table.stdout


def test_list_says_when_there_is_nothing(bus: InMemoryBus) -> None:
    result = CliRunner().invoke(app, ["dlq", "list"])
    assert result.exit_code == 0 and "no dead letters" in result.output


def test_replay_puts_the_chosen_originals_back(bus: InMemoryBus) -> None:
    first, second = _completed("s1"), _completed("s2")
    bus.publish(_letter(first))
    bus.publish(_letter(second))
    result = CliRunner().invoke(app, ["dlq", "replay", TOPIC, "--event-id", second.event_id])
    assert result.exit_code == 0, result.output
    assert f"replayed {second.event_id}" in result.output
    assert [raw for _, raw in bus.messages(TOPIC)] == [second.encode()]


@pytest.mark.parametrize(
    ("argv", "says", "code"),
    [
        (["dlq", "replay", TOPIC], "--event-id, or give --all", 2),
        (["dlq", "replay", TOPIC, "--all", "--event-id", "e"], "--event-id, or give --all", 2),
        (["dlq", "replay", TOPIC, "--event-id", "nope"], "no dead letter on", 1),
        (["dlq", "replay", "slides.nowhere", "--all"], "slides.nowhere", 2),
    ],
)
def test_replay_mistakes_end_in_one_line(
    bus: InMemoryBus, argv: list[str], says: str, code: int
) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == code
    assert says in " ".join(result.output.split())


def test_a_letter_that_cannot_be_replayed_fails_the_replay(bus: InMemoryBus) -> None:
    bus.publish(_letter(b"cut-sh"))
    result = CliRunner().invoke(app, ["dlq", "replay", TOPIC, "--all"])
    assert result.exit_code == 1
    assert "0 replayed, 1 cannot be" in result.output
