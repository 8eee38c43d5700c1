"""The inference consumer service (``stainless.stages.inference.service``)."""

from __future__ import annotations

from stainless.core.runners import run_consumer
from stainless.stages.inference.service import InferenceServiceSettings, build


def main() -> None:
    run_consumer(build, InferenceServiceSettings)


if __name__ == "__main__":
    main()
