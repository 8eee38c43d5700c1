"""Property-based requests over both OpenAPI documents (schemathesis) against the apps on
Postgres: whatever a client sends — valid, invalid, hostile — no answer is a 500.

Each operation is called with a valid key (so the requests reach the routes, not only the
key check) on a database holding a slide, a field, cells with predictions and a scanner.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine

from stainless.core.config import (
    ClinicalSettings,
    DatabaseSettings,
    IngestionSettings,
    ResultsSettings,
)
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import Cell, Prediction, Scanner, Slide, SlideStatus
from stainless.core.http.auth import Role, create_key
from stainless.core.storage.local import LocalObjectStore
from stainless.stages.ingestion.api import create_app as ingestion_app
from stainless.stages.ingestion.ingestor import Ingestor
from stainless.stages.ingestion.scanners import register_scanner
from stainless.stages.retraining.routes import add_training_routes
from stainless.stages.review.api import create_app as results_app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same requests every run: a failure reproduces
)


@pytest.fixture(scope="module")
def engine(postgres_url: str) -> Iterator[Engine]:
    upgrade(postgres_url)
    engine = create_db_engine(DatabaseSettings(url=postgres_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def scanner_key(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    with session_scope(engine) as session:
        scanner, key = register_scanner(session, name="schema-scanner")
        _seed(session, scanner)
    return key


def _seed(session: object, scanner: Scanner) -> None:
    """A completed slide with one predicted cell, so that reads find something."""
    slide = Slide(
        scanner_id=scanner.id,
        external_id="schema-slide",
        patient_pseudonym="P-1",
        status=SlideStatus.COMPLETED,
    )
    session.add(slide)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    cell = Cell(slide_id=slide.id, field_index=0, index=0, x0=0, y0=0, x1=8, y1=8)
    session.add(cell)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    session.add(Prediction(cell_id=cell.id, model_version="m/1", predicted_class="LY"))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ingestion_schema(
    engine: Engine, scanner_key: str, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    store = LocalObjectStore(tmp_path_factory.mktemp("ingestion-store"))
    block = IngestionSettings(max_upload_bytes=4 * 1024 * 1024)
    app = ingestion_app(block, engine=engine, ingestor=Ingestor(engine, store, block))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def results_key(engine: Engine) -> str:
    with session_scope(engine) as session:
        return create_key(session, name="fuzz", role=Role.ADMIN, days=1)[1]


@pytest.fixture(scope="module")
def results_schema(
    engine: Engine, scanner_key: str, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    store = LocalObjectStore(tmp_path_factory.mktemp("results-store"))
    app = results_app(ResultsSettings(), ClinicalSettings(), engine=engine, store=store)
    add_training_routes(app, engine=engine, store=store)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _fuzz(schema: schemathesis.BaseSchema, headers: dict[str, str]) -> list[str]:
    """Every operation with generated requests, valid and invalid; what answered 500."""
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        for mode in GenerationMode:  # requests the schema allows, then ones it does not

            @EXAMPLES
            @given(case=operation.as_strategy(mode))
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                call()
            except Unsatisfiable:  # nothing to get wrong (an operation without parameters)
                continue
            except Exception as exc:  # noqa: BLE001 - collected, then reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    return failures


def test_the_ingestion_api_never_answers_500(
    ingestion_schema: schemathesis.BaseSchema, scanner_key: str
) -> None:
    failures = _fuzz(ingestion_schema, {"X-API-Key": scanner_key})
    assert not failures, "\n\n".join(failures)


def test_the_results_api_never_answers_500(
    results_schema: schemathesis.BaseSchema, results_key: str
) -> None:
    failures = _fuzz(results_schema, {"X-API-Key": results_key})
    assert not failures, "\n\n".join(failures)
