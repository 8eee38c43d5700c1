"""The inference pod's init container, run for real against an S3 server (moto).

The Triton adapter needs the served repository's ``stainless.json`` locally; the chart's
init container fetches it from the bucket Triton reads. Its script runs here with the
environment the pod would get (the rendered ConfigMap, Secret and container env).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

pytestmark = pytest.mark.integration


def test_init_container_fetches_the_manifest_triton_serves(
    render: Callable[..., list[dict[str, Any]]], s3_endpoint: str, tmp_path: Path
) -> None:
    values = {
        "objectStore.endpoint": s3_endpoint,
        "objectStore.aws": "false",
        "objectStore.secure": "false",
        "objectStore.bucket": "stainless-helm",
        "objectStore.accessKey": "helm-access",
        "objectStore.secretKey": "helm-secret-key",
        "triton.modelRepository.prefix": "served/models",
    }
    docs = render(*[a for k, v in values.items() for a in ("--set", f"{k}={v}")])

    def find(kind: str, name: str) -> dict[str, Any]:
        return next(d for d in docs if (d["kind"], d["metadata"]["name"]) == (kind, name))

    config = find("ConfigMap", "stainless-settings")["data"]
    secret = find("Secret", "stainless-triton-secrets")["stringData"]  # the store keys only
    inference = find("Deployment", "stainless-inference")
    (init,) = inference["spec"]["template"]["spec"]["initContainers"]
    triton = find("Deployment", "stainless-triton")
    repository = next(
        a for a in triton["spec"]["template"]["spec"]["containers"][0]["args"] if "s3://" in a
    )
    assert repository.endswith(f"s3://http://{s3_endpoint}/stainless-helm/served/models")

    manifest = {"model_version": "mtmd-v7", "classes": ["NEU", "LYM"]}
    client = Minio(s3_endpoint, access_key="helm-access", secret_key="x", secure=False)
    client.make_bucket("stainless-helm")
    body = json.dumps(manifest).encode()
    client.put_object("stainless-helm", "served/models/stainless.json", io.BytesIO(body), len(body))

    env = {**config, **secret, **{e["name"]: e["value"] for e in init["env"] if "value" in e}}
    env["STAINLESS_INFERENCE__MODEL_REPOSITORY"] = str(tmp_path)  # /models in the pod
    done = subprocess.run(
        [sys.executable, "-c", init["args"][0]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "stainless.json").read_text()) == manifest
