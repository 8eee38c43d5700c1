"""Composition root of the ingestion service: settings → engine, store → Ingestor → app."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from stainless.config import Settings, load_settings
from stainless.db.engine import create_db_engine, wait_for_database
from stainless.ingest.api import create_app
from stainless.ingest.ingestor import Ingestor
from stainless.logs import configure_logging
from stainless.storage import create_store


def build(settings: Settings) -> FastAPI:
    engine = create_db_engine(settings.database)
    wait_for_database(engine)
    ingestor = Ingestor(engine, create_store(settings.store), settings.ingestion)
    return create_app(settings, engine=engine, ingestor=ingestor)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    uvicorn.run(
        build(settings),
        host="0.0.0.0",  # noqa: S104 - a container's service port
        port=settings.ingestion.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
