"""``stainless models``: an empty registry says what to do; registered versions show the
metrics a promotion is judged on; a checkpoint registers once and can be adopted as served."""

from __future__ import annotations

from pathlib import Path

import pytest

from stainless.cli.main import run
from stainless.core.db.migrate import upgrade
from stainless.ml.export.checkpoint import export_checkpoint
from stainless.ml.export.triton import InstanceKind

DEMO = Path(__file__).parents[3] / "training/demo_model/checkpoint.pt"


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    upgrade(sqlite_url)
    monkeypatch.setenv("STAINLESS_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("STAINLESS_STORE__ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("STAINLESS_INFERENCE__MODEL_REPOSITORY", str(tmp_path / "models"))
    return tmp_path / "models"


def _run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (spaces folded) of ``stainless ARGV``."""
    monkeypatch.setattr("sys.argv", ["stainless", *argv])
    with pytest.raises(SystemExit) as stopped:
        run()
    captured = capsys.readouterr()
    return int(stopped.value.code or 0), captured.out, " ".join(captured.err.split())


def test_the_registry_lists_what_matters_and_registers_a_checkpoint_once(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stainless(*argv: str) -> tuple[int, str, str]:
        return _run(list(argv), monkeypatch, capsys)

    assert stainless("models")[::2] == (
        0,
        (
            "no model versions are registered: train one (stainless-train ray) or register "
            "a checkpoint (stainless models register CHECKPOINT)"
        ),
    )
    code, _, says = stainless("models", "register", str(DEMO), "--served")
    assert code == 2 and "nothing is served" in says
    export_checkpoint(DEMO, env, instance=InstanceKind.CPU)
    assert stainless("models", "register", str(DEMO), "--served")[:2] == (0, "mtmd-tiny/1\n")
    assert stainless("models", "register", str(DEMO))[:2] == (0, "mtmd-tiny/1\n")

    code, listed, _ = stainless("models")
    row, compared, files = listed.splitlines()
    assert row.startswith("* mtmd-tiny/1  mtmd  promoted  45 held-out cells: accuracy 0.867,")
    assert "ECE 0.064" in row and "review δ < 0.677" in row
    assert compared == "    compared with: —" and "models/mtmd/sha256-" in files

    code, _, says = stainless("rollback", "--instance", "cpu")
    assert code == 2 and "name one with --to NAME/VERSION" in says
