"""Jobs as KubeRay RayJobs: the template filled in, and the API server's answers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from stainless_training.kuberay import RayJobError, RayJobSubmitter, rayjob_name, render_rayjob

JOB = "0b4f9a2e-51c3-4d7e-9f00-1c2d3e4f5a6b"
TEMPLATE = """\
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: ${name}
  labels: {stainless/job-id: "${job_id}"}
spec:
  entrypoint: stainless-train-job ${job_id} --rayjob ${name}
  rayClusterSpec:
    workerGroupSpecs:
      - {groupName: trainers, replicas: ${workers}}
"""


def test_the_template_is_filled_in_for_the_job() -> None:
    job = render_rayjob(TEMPLATE, job_id=JOB, workers=3)
    name = "retrain-0b4f9a2e51c34d7e"
    assert job["metadata"] == {"name": name, "labels": {"stainless/job-id": JOB}}
    assert job["spec"]["entrypoint"] == f"stainless-train-job {JOB} --rayjob {name}"
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (TEMPLATE + "  x: ${out}\n", "unknown placeholders: ['out']"),
        ("kind: RayJob\nmetadata: {name: ${name}\n", "not YAML"),
        ("kind: RayCluster\nmetadata: {name: ${name}}\n", "does not describe a RayJob"),
    ],
)
def test_unusable_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(RayJobError, match=message.replace("[", r"\[").replace("]", r"\]")):
        render_rayjob(template, job_id=JOB, workers=1)


def test_names_are_dns_labels_from_the_job_id() -> None:
    assert rayjob_name("AB-CD-ef0123456789abcdef") == "retrain-abcdef0123456789"
    with pytest.raises(RayJobError, match="too few hex digits"):
        rayjob_name("job-1")


def _submitter(answer: httpx.Response, seen: list[httpx.Request]) -> RayJobSubmitter:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    client = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(handler))
    return RayJobSubmitter(TEMPLATE, client, "stainless")


def test_a_job_is_created_in_the_namespace() -> None:
    seen: list[httpx.Request] = []
    name = _submitter(httpx.Response(201, json={}), seen).submit(JOB, workers=2)
    assert name == "retrain-0b4f9a2e51c34d7e"
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/apis/ray.io/v1/namespaces/stainless/rayjobs"
    body = json.loads(request.content)
    assert body["metadata"]["name"] == name
    assert body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2


def test_a_redelivered_request_keeps_the_existing_rayjob() -> None:
    seen: list[httpx.Request] = []
    conflict = httpx.Response(409, json={"message": "rayjobs.ray.io exists"})
    assert _submitter(conflict, seen).submit(JOB, workers=2) == "retrain-0b4f9a2e51c34d7e"


def test_a_refusal_says_why() -> None:
    forbidden = httpx.Response(403, json={"message": 'cannot create resource "rayjobs"'})
    with pytest.raises(RayJobError, match='HTTP 403 cannot create resource "rayjobs"'):
        _submitter(forbidden, []).submit(JOB, workers=2)


def test_outside_a_pod_the_submitter_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RayJobError, match="KUBERNETES_SERVICE_HOST"):
        RayJobSubmitter.in_cluster(tmp_path / "rayjob.yaml")
