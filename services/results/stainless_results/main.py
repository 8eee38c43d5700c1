"""The results service: the review stage's API and page with the retraining stage's routes.

Settings → database and object store → ``stainless.stages.review.api.create_app`` with
``stainless.stages.retraining.routes`` → ``run_http``.
"""

from __future__ import annotations

from fastapi import FastAPI

from stainless.core.config import (
    ClinicalSettings,
    DatabaseSettings,
    ProcessSettings,
    ResultsSettings,
    StoreSettings,
)
from stainless.core.db.engine import create_db_engine, wait_for_database
from stainless.core.runners import run_http
from stainless.core.storage import create_store
from stainless.stages.retraining.routes import add_training_routes
from stainless.stages.review.api import create_app


class ResultsServiceSettings(ProcessSettings):
    """What the results service reads."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    results: ResultsSettings = ResultsSettings()
    clinical: ClinicalSettings = ClinicalSettings()


def build(settings: ResultsServiceSettings) -> FastAPI:
    """The results app with its dependencies built from ``settings``.

    Raises:
        SystemExit: anonymous access is configured (the embedded demo's, never a service's).
    """
    if settings.results.anonymous_role is not None:
        raise SystemExit(
            "stainless-results refuses to start with STAINLESS_RESULTS__ANONYMOUS_ROLE set: "
            "anonymous access is for the embedded demo (stainless demo --serve) only"
        )
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    store = create_store(settings.store)
    app = create_app(settings.results, settings.clinical, engine=engine, store=store)
    add_training_routes(app, engine=engine, store=store)
    return app


def main() -> None:
    run_http(
        build,
        ResultsServiceSettings,
        port=lambda settings: settings.results.http_port,
        metrics_port=lambda settings: settings.results.metrics_port,
    )


if __name__ == "__main__":
    main()
