"""Walk the user guides: run every ``bash`` block of each guide, as written, in order.

Usage: ``infra/guides.py [GUIDE.md ...]`` (default: ``docs/guides/*.md`` in the order of
``GUIDES``). Each guide's blocks run in one ``bash -euo pipefail`` from the repository
root, with no ``STAINLESS_*`` variable set, as a user's shell after ``make up`` (the
commands find the running stack themselves). Blocks fenced as ``text`` or ``console``
are shown output, not run. A guide fails on the first command that fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ("hospital-it", "haematologist", "data-scientist", "operator")
"""The order they are walked in: the operator's guide stops the stack at its end."""
TIMEOUT_S = 900
_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def commands(guide: Path) -> str:
    """The guide's ``bash`` blocks, joined into one script."""
    return "\n".join(_BLOCK.findall(guide.read_text()))


def walk(guide: Path) -> bool:
    script = commands(guide)
    if not script.strip():
        print(f"{guide}: no bash block to run", file=sys.stderr)
        return False
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAINLESS_")}
    print(f"== {guide.relative_to(ROOT)}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", "-euxo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"{guide}: still running after {TIMEOUT_S} s", file=sys.stderr)
        return False
    seconds = time.monotonic() - started
    if done.returncode != 0:
        print(f"{guide}: a command failed (exit {done.returncode})", file=sys.stderr)
        return False
    print(f"== {guide.relative_to(ROOT)}: every command ran ({seconds:.0f} s)", flush=True)
    return True


def main(argv: list[str]) -> int:
    guides = [Path(a).resolve() for a in argv] or [
        ROOT / "docs" / "guides" / f"{name}.md" for name in GUIDES
    ]
    failed = [g for g in guides if not walk(g)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
