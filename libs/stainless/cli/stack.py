"""The settings of a stack started here (``make up``): the command lines use them by default.

``make up`` writes ``out/stack/stack.json`` with the settings an operator's command line
needs (its database, object store with the operator's key, bus and model repository) and a
PID file per service. A platform command (scanners, keys, datasets, models, studies,
training) run with no ``STAINLESS_*`` variable set, in a folder where such a stack is up,
takes those settings and says so on stderr; any ``STAINLESS_*`` variable means the caller
chose the settings, and nothing is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path

from stainless.core.config import ENV_PREFIX

STACK_FILE = Path("out/stack/stack.json")


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def running_stack_settings(path: Path = STACK_FILE) -> dict[str, str] | None:
    """The command-line settings of the stack described by ``path``, if one of its
    services is running; None otherwise."""
    if not path.is_file() or not any(_alive(p) for p in path.parent.glob("*.pid")):
        return None
    try:
        settings = json.loads(path.read_text()).get("cli_env")
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in settings.items()} if isinstance(settings, dict) else None


def use_running_stack(
    environ: MutableMapping[str, str] = os.environ, path: Path = STACK_FILE
) -> Path | None:
    """Take the running stack's settings into ``environ`` when it holds no ``STAINLESS_*``
    variable; return the stack file used."""
    if any(key.upper().startswith(ENV_PREFIX) for key in environ):
        return None
    settings = running_stack_settings(path)
    if settings is None:
        return None
    environ.update(settings)
    return path


PLATFORM_COMMANDS = frozenset(
    {"db", "scanner", "keys", "store", "dataset", "study", "models", "promote", "rollback", "dlq"}
    | {"ray", "detector"}  # stainless-train
)
"""The commands that work on the platform's records; the others (the demo, the phantom,
benchmarks, exports) keep their own embedded stand-ins."""


def announce_running_stack(argv: list[str]) -> None:
    """:func:`use_running_stack` for a platform command (``argv`` without the program),
    saying on stderr which settings were taken."""
    from stainless.cli.output import err

    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in PLATFORM_COMMANDS:
        return
    used = use_running_stack()
    if used is not None:
        err.print(
            f"using the settings of the stack running here ({used}); set a STAINLESS_* "
            "variable to use others",
            highlight=False,
        )
