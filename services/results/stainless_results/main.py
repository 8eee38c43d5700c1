"""The results service: settings → app (``stainless.stages.review.api``) → uvicorn."""

from __future__ import annotations

import uvicorn

from stainless.core.config import load_settings
from stainless.core.logs import configure_logging
from stainless.stages.review.api import build_app


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    uvicorn.run(
        build_app(settings),
        host="0.0.0.0",  # noqa: S104 - a container's service port
        port=settings.results.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
