"""The outbox relay service (``stainless.core.relay``)."""

from __future__ import annotations

from stainless.core.relay import RelayServiceSettings, build
from stainless.core.runners import run_consumer


def main() -> None:
    run_consumer(build, RelayServiceSettings)


if __name__ == "__main__":
    main()
