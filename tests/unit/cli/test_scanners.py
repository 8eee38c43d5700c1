"""``stainless scanner``: keys are shown once, and every change lands in the audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.core.audit import audit_trail
from stainless.core.config import DatabaseSettings
from stainless.core.db.engine import create_db_engine


def test_key_changes_are_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("STAINLESS_DATABASE__URL", url)
    runner = CliRunner()
    added = runner.invoke(app, ["scanner", "add", "scope-1"])
    assert added.exit_code == 0, added.output
    assert added.stdout.strip().startswith("stl_")
    assert runner.invoke(app, ["scanner", "rotate", "scope-1"]).exit_code == 0
    assert runner.invoke(app, ["scanner", "revoke", "scope-1"]).exit_code == 0
    assert runner.invoke(app, ["scanner", "revoke", "nobody"]).exit_code == 2
    trail = audit_trail(create_db_engine(DatabaseSettings(url=url)))
    assert [(e.action, e.target, e.role) for e in reversed(trail)] == [
        ("key-create", "scanner:scope-1", "cli"),
        ("key-rotate", "scanner:scope-1", "cli"),
        ("key-revoke", "scanner:scope-1", "cli"),
    ]
