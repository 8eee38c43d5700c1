"""Each training job as a KubeRay RayJob: the trainer's way to run jobs inside Kubernetes.

The Helm chart renders the RayJob manifest once, with placeholders (``${name}``,
``${job_id}``, ``${workers}``), into a ConfigMap mounted into the trainer. For a queued
job the trainer fills them in and creates the RayJob through the Kubernetes API with its
service account; KubeRay starts a Ray cluster of ``workers`` workers whose entry point,
``stainless-train-job``, runs the job end to end (:func:`stainless_training.jobs.run_job`)
and records it on the job row. The name is a function of the job id, so a redelivered
request finds its RayJob already there (HTTP 409) and creates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template
from typing import Any

import httpx
import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PLACEHOLDERS = frozenset({"name", "job_id", "workers"})


class RayJobError(RuntimeError):
    """The RayJob could not be made from the template or was refused by the API server."""


def rayjob_name(job_id: str) -> str:
    """``retrain-`` and the first 16 hex digits of the job id (a DNS-1123 label)."""
    digits = "".join(c for c in job_id.lower() if c in "0123456789abcdef")
    if len(digits) < 8:
        raise RayJobError(f"job id {job_id!r} has too few hex digits for a RayJob name")
    return f"retrain-{digits[:16]}"


def render_rayjob(template: str, *, job_id: str, workers: int) -> dict[str, Any]:
    """The RayJob of job ``job_id`` on ``workers`` Ray workers, from the chart's template.

    Raises:
        RayJobError: the template names another placeholder, is not YAML or not a RayJob.
    """
    used = {
        m.group("named") or m.group("braced")
        for m in Template.pattern.finditer(template)
        if m.group("named") or m.group("braced")
    }
    if unknown := used - PLACEHOLDERS:
        raise RayJobError(f"the RayJob template has unknown placeholders: {sorted(unknown)}")
    text = Template(template).substitute(
        name=rayjob_name(job_id), job_id=job_id, workers=str(workers)
    )
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RayJobError(f"the RayJob template is not YAML: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "RayJob":
        raise RayJobError("the RayJob template does not describe a RayJob")
    return manifest


class RayJobSubmitter:
    """Creates RayJobs in one namespace through a Kubernetes API client.

    Args:
        template: the RayJob manifest with placeholders (the chart's ConfigMap).
        client: an ``httpx.Client`` whose base URL is the API server, authenticated.
        namespace: where the RayJobs go.
    """

    def __init__(self, template: str, client: httpx.Client, namespace: str) -> None:
        self._template = template
        self._client = client
        self._namespace = namespace

    @classmethod
    def in_cluster(cls, template_path: Path, *, namespace: str | None = None) -> RayJobSubmitter:
        """The submitter of a pod: the API server from the environment, the pod's token.

        Raises:
            RayJobError: not in a pod (no API server address or service account token).
        """
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token = SERVICE_ACCOUNT / "token"
        if not host or not token.is_file():
            raise RayJobError(
                "RayJobs are submitted from a pod: KUBERNETES_SERVICE_HOST and the service "
                f"account token {token} are needed (automountServiceAccountToken: true)"
            )
        try:
            template = template_path.read_text()
        except OSError as exc:
            raise RayJobError(f"cannot read the RayJob template: {exc}") from None
        client = httpx.Client(
            base_url=f"https://{host}:{port}",
            headers={"Authorization": f"Bearer {token.read_text().strip()}"},
            verify=str(SERVICE_ACCOUNT / "ca.crt"),
            timeout=30.0,
        )
        own = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        return cls(template, client, namespace or own)

    def submit(self, job_id: str, *, workers: int) -> str:
        """Create the RayJob of ``job_id``; its name. An existing one of that name is kept.

        Raises:
            RayJobError: the template is unusable or the API server refused the RayJob.
        """
        manifest = render_rayjob(self._template, job_id=job_id, workers=workers)
        name = str(manifest["metadata"]["name"])
        path = f"/apis/ray.io/v1/namespaces/{self._namespace}/rayjobs"
        try:
            response = self._client.post(path, json=manifest)
        except httpx.HTTPError as exc:
            raise RayJobError(f"the Kubernetes API is unreachable: {exc}") from None
        if response.status_code == httpx.codes.CONFLICT:
            return name  # submitted before: a redelivered request
        if response.is_error:
            raise RayJobError(
                f"the Kubernetes API refused RayJob {name}: HTTP {response.status_code} "
                f"{_reason(response)}"
            )
        return name

    def close(self) -> None:
        self._client.close()


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text
