"""Training routes: a scientist queues retraining; bad requests and other roles change nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from stainless.core.db.models import OutboxEvent, TrainingJob
from stainless.core.registry import registered
from stainless.datasets.manifest import DatasetItem, DatasetManifest, write_manifest

from .conftest import ADMIN, REVIEWER, SCIENTIST, World


@pytest.fixture
def snapshot(world: World) -> str:
    item = DatasetItem(
        id="c",
        dic="crops/c.png",
        bf="crops/c-bf.png",
        mask=None,
        label="LY",
        source="review",
        slide_id=None,
    )
    manifest = DatasetManifest(
        name="api",
        created_at=datetime.now(UTC),
        classes=("ART", "BA", "EO", "LY", "MO", "SNE", "SMU"),
        items=(item,),
        description="",
    )
    return write_manifest(world.store, manifest)


def _written(world: World) -> tuple[int, int]:
    with Session(world.engine) as session:
        return len(session.exec(select(TrainingJob)).all()), len(
            session.exec(select(OutboxEvent)).all()
        )


def test_a_scientist_queues_a_job_and_follows_it(
    client: TestClient, world: World, snapshot: str
) -> None:
    started = client.post(
        "/v1/training-jobs",
        json={"model": "mtmd", "dataset": snapshot, "workers": 2, "steps": 50},
        headers=SCIENTIST,
    )
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["status"], job["workers"], job["requested_by"]) == ("queued", 2, "sam")
    assert _written(world) == (1, 1)
    seen = client.get(f"/v1/training-jobs/{job['id']}", headers=REVIEWER).json()
    assert seen["status"] == "queued" and seen["dataset"] == snapshot
    assert [j["id"] for j in client.get("/v1/training-jobs", headers=ADMIN).json()] == [job["id"]]


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (REVIEWER, {"model": "mtmd"}, 403, "starting training needs the role admin or scientist"),
        ({}, {"model": "mtmd"}, 401, "API key"),
        (SCIENTIST, {"model": "gan"}, 422, "unknown model 'gan'"),
        (SCIENTIST, {"model": "mtmd", "workers": 0}, 422, "workers: Input should be greater"),
        (SCIENTIST, {"model": "mtmd", "workers": 100_000}, 422, "workers: Input should be less"),
        (SCIENTIST, {"model": "mtmd", "workers": 2**31}, 422, "workers: Input should be less"),
        (SCIENTIST, {"model": "mtmd", "steps": 1e30}, 422, "body.steps: "),
        (SCIENTIST, {"model": "mtmd", "steps": 10**9}, 422, "steps: Input should be less"),
        (SCIENTIST, {"model": "mtmd", "dataset": "datasets/a b.json"}, 422, "dataset: String"),
        (SCIENTIST, {"model": "m" * 10_000}, 422, "model: String should have at most 32"),
        (
            SCIENTIST,
            {"model": "mtmd", "dataset": "datasets/api/" + "1" * 64 + ".json"},
            422,
            "no snapshot",
        ),
    ],
)
def test_refused_requests_write_nothing(
    client: TestClient,
    world: World,
    snapshot: str,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    message: str,
) -> None:
    answer = client.post("/v1/training-jobs", json={"dataset": snapshot, **body}, headers=headers)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert _written(world) == (0, 0)


def test_unknown_jobs_and_the_model_list(client: TestClient, world: World) -> None:
    missing = client.get("/v1/training-jobs/00000000-0000-0000-0000-000000000000", headers=REVIEWER)
    assert missing.status_code == 404 and "no training job" in missing.json()["detail"]
    registered(
        world.engine,
        name="mtmd-tiny",
        kind="mtmd",
        checkpoint_key="models/x/checkpoint.pt",
        metrics={"accuracy": 0.9},
    )
    (version,) = client.get("/v1/models", headers=REVIEWER).json()
    assert (version["name"], version["version"], version["status"]) == (
        "mtmd-tiny",
        1,
        "registered",
    )
