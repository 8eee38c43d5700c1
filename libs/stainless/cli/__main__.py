"""``python -m stainless.cli``: the same as the ``stainless`` command."""

from stainless.cli.main import run

run()
