"""The results service: the review stage's API and page with the retraining stage's routes.

Settings → database and object store → ``stainless.stages.review.api.create_app`` with
``stainless.stages.retraining.routes`` → uvicorn.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from stainless.core.config import Settings, load_settings
from stainless.core.db.engine import create_db_engine, wait_for_database
from stainless.core.logs import configure_logging
from stainless.core.storage import create_store
from stainless.stages.retraining.routes import add_training_routes
from stainless.stages.review.api import create_app


def build(settings: Settings) -> FastAPI:
    """The results app with its dependencies built from ``settings``."""
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    store = create_store(settings.store)
    app = create_app(settings, engine=engine, store=store)
    add_training_routes(app, engine=engine, store=store)
    return app


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    uvicorn.run(
        build(settings),
        host="0.0.0.0",  # noqa: S104 - a container's service port
        port=settings.results.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
