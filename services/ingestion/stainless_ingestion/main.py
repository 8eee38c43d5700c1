"""The ingestion service: ``stainless.stages.ingestion.api.build`` served over HTTP."""

from __future__ import annotations

from stainless.core.runners import run_http
from stainless.stages.ingestion.api import IngestionServiceSettings, build


def main() -> None:
    run_http(
        build,
        IngestionServiceSettings,
        port=lambda settings: settings.ingestion.http_port,
        metrics_port=lambda settings: settings.ingestion.metrics_port,
    )


if __name__ == "__main__":
    main()
