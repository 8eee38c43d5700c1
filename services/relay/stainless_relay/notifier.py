"""The report notifier (``stainless.stages.review.notify``): events out of the platform, as
the relay's are into the bus, so it ships in the relay's image."""

from __future__ import annotations

from stainless.core.runners import run_consumer
from stainless.stages.review.notify import NotifierServiceSettings, build


def main() -> None:
    run_consumer(build, NotifierServiceSettings)


if __name__ == "__main__":
    main()
