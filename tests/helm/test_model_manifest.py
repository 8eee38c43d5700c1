"""The inference service reads the served manifest where Triton reads its repository.

The chart points the inference service at ``<triton.modelRepository.prefix>/stainless.json``
in the object store; the service's manifest reader runs here with the settings the pod
would get (the rendered ConfigMap and the inference workload's Secret) against an S3
server (moto), and reads a promoted version's manifest at the next refresh: no init
container, no restart. The inference workload's policy grants reading that one object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stainless.core.config import Settings
from stainless.core.storage import create_store
from stainless.domain.served import ManifestError, ServedManifest
from stainless.stages.inference.service import manifest_reader

pytestmark = pytest.mark.integration

VALUES = {
    "objectStore.aws": "false",
    "objectStore.secure": "false",
    "objectStore.bucket": "stainless-helm",
    "objectStore.accessKey": "helm-access",
    "objectStore.secretKey": "helm-secret-key",
    "triton.modelRepository.prefix": "served/models",
}


def _args(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def test_the_inference_service_reads_the_manifest_triton_serves(
    render: Callable[..., list[dict[str, Any]]],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = render(*_args({**VALUES, "objectStore.endpoint": s3_endpoint}))

    def find(kind: str, name: str) -> dict[str, Any]:
        return next(d for d in docs if (d["kind"], d["metadata"]["name"]) == (kind, name))

    config = find("ConfigMap", "stainless-settings")["data"]
    secret = find("Secret", "stainless-inference-secrets")["stringData"]
    pod = find("Deployment", "stainless-inference")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert config["STAINLESS_INFERENCE__MANIFEST_KEY"] == "served/models/stainless.json"
    for name, value in {**config, **secret}.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()  # as the pod reads them
    store = create_store(settings.store.model_copy(update={"create_bucket": True}))
    read = manifest_reader(settings.inference, store)
    with pytest.raises(ManifestError, match=r"served/models/stainless\.json is missing"):
        read()
    first = ServedManifest(
        name="mtmd-v",
        version=7,
        image_size=64,
        classes=("NEU", "LYM"),
        k=4,
        alpha=3.0,
        review_threshold=0.5,
    )
    store.put("served/models/stainless.json", first.model_dump_json().encode())
    assert read() == first
    promoted = first.model_copy(update={"version": 8})
    store.put("served/models/stainless.json", promoted.model_dump_json().encode())
    assert read() == promoted

    done = subprocess.run(
        [str(Path(sys.executable).parent / "stainless"), "store", "policies"],
        env={**os.environ},
        capture_output=True,
        text=True,
        check=True,
    )
    statements = json.loads(done.stdout)["inference"]["Statement"]
    readable = {r for s in statements if "s3:GetObject" in s["Action"] for r in s["Resource"]}
    assert "arn:aws:s3:::stainless-helm/served/models/stainless.json" in readable


def test_a_model_repository_in_another_bucket_is_refused(helm: Path) -> None:
    chart = Path(__file__).parents[2] / "helm" / "stainless"
    values = {**VALUES, "triton.modelRepository.bucket": "elsewhere"}
    done = subprocess.run(
        [str(helm), "template", "s", str(chart), *_args(values)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "must be objectStore.bucket (stainless-helm) or empty" in done.stderr
