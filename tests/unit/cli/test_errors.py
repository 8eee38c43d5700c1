"""Common mistakes on the command line end in one line, not a traceback (unless --debug)."""

from __future__ import annotations

import pytest

from stainless.cli.main import run


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.argv", ["stainless", *argv])
    with pytest.raises(SystemExit) as stopped:
        run()
    return int(stopped.value.code or 0)


@pytest.mark.parametrize(
    ("argv", "env", "says", "code"),
    [
        (
            ["bench", "ingest", "--endpoint", "http://127.0.0.1:9000"],
            {},
            "is not host:port",
            2,
        ),
        (
            ["bench", "ingest", "--endpoint", "127.0.0.1:1", "--fields", "1"],
            {},
            "nothing answers at 127.0.0.1:1",
            1,
        ),
        (
            ["models"],
            {"STAINLESS_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
            "the database cannot be reached",
            1,
        ),
        (
            ["dlq", "list"],
            {
                "STAINLESS_BUS__BACKEND": "kafka",
                "STAINLESS_BUS__BOOTSTRAP_SERVERS": "127.0.0.1:1",
                "STAINLESS_BUS__REQUEST_TIMEOUT_S": "1",
            },
            "no Kafka broker answers: Unable to bootstrap from ['127.0.0.1:1']",
            1,
        ),
        (["export", "--checkpoint", "x.pt", "--repo", "r", "--instance", "tpu"], {}, "tpu", 2),
        (["phantom", "--out", "o", "--fields", "0"], {}, "--fields", 2),
        (["nonsense"], {}, "No such command", 2),
    ],
)
def test_a_mistake_ends_in_a_short_message(
    argv: list[str],
    env: dict[str, str],
    says: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _run(argv, monkeypatch) == code
    output = capsys.readouterr()
    text = " ".join((output.out + output.err).split())
    assert says in text
    assert "Traceback" not in text


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAINLESS_DATABASE__URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.setattr("sys.argv", ["stainless", "models", "--debug"])
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError):
        run()
