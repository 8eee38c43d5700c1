"""The user guides: one per kind of user, linked from the README, each with commands that
``make guides`` runs as written (``infra/guides.py``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _runner():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("guides", ROOT / "infra" / "guides.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_guide_is_linked_and_has_commands_to_run() -> None:
    runner = _runner()
    readme = (ROOT / "README.md").read_text()
    found = sorted(p.stem for p in (ROOT / "docs" / "guides").glob("*.md"))
    assert found == sorted(runner.GUIDES)
    for name in runner.GUIDES:
        guide = ROOT / "docs" / "guides" / f"{name}.md"
        assert f"docs/guides/{name}.md" in readme
        script = runner.commands(guide)
        assert script.count("\n") >= 3, name
        # The commands are those of this repository: no placeholder a user must edit.
        assert not re.search(r"stl_…|srk_…|<sha256>|\.\.\./", script), name


def test_only_bash_blocks_are_run(tmp_path: Path) -> None:
    guide = tmp_path / "g.md"
    guide.write_text(
        "# G\n\n```bash\necho one\n```\n\n```text\nnot run\n```\n\n```bash\necho two\n```\n"
    )
    assert _runner().commands(guide) == "echo one\n\necho two\n"
