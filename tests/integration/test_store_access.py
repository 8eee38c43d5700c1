"""Each workload's object-store policy, enforced by a real S3 server with IAM checks on.

The operator's part (users, policies, keys) is done with the IAM API
(``infra/store_identities.py``, as ``make up`` does), as it would be on AWS; on MinIO the
chart's store-access Job does the same with ``mc admin``. The S3
server enforces actions and resources; it does not evaluate the ``s3:prefix`` condition
of listing, which the unit tests check in the documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers as infra
import store_identities
from minio.error import S3Error
from typer.testing import CliRunner

from stainless.cli.main import app
from stainless.core.config import StoreBackend, StoreSettings
from stainless.core.storage import ObjectStore, create_store

pytestmark = pytest.mark.integration

BUCKET = "stainless"
PREFIXES = ("raw", "cells", "stained", "datasets", "models", "out/ray")
# What each workload may do under each prefix (r read, w write, d delete): the table in
# docs/reference/kubernetes.md.
EXPECTED = {
    "ingestion": {"raw": "rwd"},
    "registration": {"raw": "rwd", "cells": "w"},
    "worker": {"raw": "rwd", "cells": "w"},
    "inference": {"cells": "r", "stained": "w"},
    "results": {"cells": "r", "stained": "r", "datasets": "r"},
    "training": {"cells": "r", "datasets": "r", "models": "rw", "out/ray": "rwd"},
    "trainer": {"cells": "r", "datasets": "r", "models": "rw", "out/ray": "rwd"},
    "triton": {"models": "r"},
}


def _store(endpoint: str, key: dict[str, str], *, create_bucket: bool = False) -> ObjectStore:
    return create_store(
        StoreSettings(
            backend=StoreBackend.S3,
            endpoint=endpoint,
            bucket=BUCKET,
            access_key=key["AccessKeyId"],
            secret_key=key["SecretAccessKey"],
            create_bucket=create_bucket,
        )
    )


@pytest.fixture(scope="module")
def identities(
    infra_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ObjectStore]]:
    """A store per workload, under a user holding only the policy ``stainless store
    policies`` wrote for it, on an S3 server checking IAM."""
    free = store_identities.FREE_ACTIONS
    server = infra.start_s3(infra.free_port(), infra_state, name="s3-iam", free_actions=free)
    admin = store_identities.bootstrap_admin(server.address)
    folder = tmp_path_factory.mktemp("policies")
    result = CliRunner().invoke(app, ["store", "policies", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    policies = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    keys = store_identities.create_identities(server.address, admin, policies)
    owner = _store(server.address, admin, create_bucket=True)
    for prefix in PREFIXES:
        owner.put(f"{prefix}/seed.bin", b"seed")
        for workload in keys:
            owner.put(f"{prefix}/delete-{workload}.bin", b"x")
    yield {workload: _store(server.address, key) for workload, key in keys.items()}
    infra.stop("s3-iam", infra_state)


def _can(store: ObjectStore, letter: str, prefix: str, workload: str) -> bool:
    """Whether ``store`` may read (r), write (w) or delete (d) under ``prefix``."""
    try:
        if letter == "r":
            store.get(f"{prefix}/seed.bin")
        elif letter == "w":
            store.put(f"{prefix}/new-{workload}.bin", b"w")
        else:
            store.delete(f"{prefix}/delete-{workload}.bin")
    except S3Error as exc:
        if exc.code != "AccessDenied":
            raise
        return False
    return True


@pytest.mark.parametrize("workload", sorted(EXPECTED))
def test_a_workload_may_do_exactly_what_its_policy_says(
    identities: dict[str, ObjectStore], workload: str
) -> None:
    store = identities[workload]
    seen = {p: "".join(a for a in "rwd" if _can(store, a, p, workload)) for p in PREFIXES}
    assert seen == {p: EXPECTED[workload].get(p, "") for p in PREFIXES}


def test_every_workload_of_the_chart_has_a_policy(identities: dict[str, ObjectStore]) -> None:
    assert set(identities) == set(EXPECTED)
