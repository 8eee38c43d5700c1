"""``stainless keys``: results-API keys are shown once, expire, and every change is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.core.audit import audit_trail
from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine


def test_results_keys_are_shown_once_and_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("STAINLESS_DATABASE__URL", url)
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "rita", "--role", "reviewer", "--days", "7"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("srk_")
    listed = runner.invoke(app, ["keys", "list"])
    assert "rita" in listed.stdout and key not in listed.stdout  # never shown again
    assert runner.invoke(app, ["keys", "create", "rita", "--role", "admin"]).exit_code == 2
    assert runner.invoke(app, ["keys", "create", "x", "--role", "root"]).exit_code == 2
    assert runner.invoke(app, ["keys", "rotate", "rita"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "rita"]).exit_code == 0
    trail = audit_trail(create_db_engine(DatabaseSettings(url=url)), target="key:rita")
    assert [e.action for e in reversed(trail)] == ["key-create", "key-rotate", "key-revoke"]
