"""Least privilege on the object store: what each workload may read, write and delete.

Every workload has its own S3 identity. The prefixes come from the settings, so the
policies follow a configured ``raw_prefix`` or ``crops_prefix``:

==============  =====================================================================
ingestion       reads, writes and deletes uploads (``raw/``)
registration    reads uploads, replaces one stored as received (the raw route) by its
                canonical image; writes crops (``cells/``); the Celery worker alike
inference       reads crops, writes stained crops and heat maps (``stained/``); reads
                the served manifest where Triton's repository is in the store
results         reads crops, stained crops and dataset snapshots (``datasets/``)
training        reads crops and snapshots; reads and writes ``models/`` and Ray's
                checkpoints; the trainer alike (it may run jobs on a Ray cluster)
triton          reads the model repository (``models/``)
==============  =====================================================================

:func:`policy_document` writes one workload's grants as an IAM policy, which MinIO and
AWS S3 both read (``stainless store policies`` prints them; ``stainless store grant``
creates the MinIO users and policies).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag, auto
from typing import Any

from stainless.core.config import Settings
from stainless.core.storage.keys import DATASETS_PREFIX, MODELS_PREFIX, validate_prefix


class Access(Flag):
    READ = auto()
    WRITE = auto()
    DELETE = auto()


@dataclass(frozen=True)
class Grant:
    prefix: str  # without a trailing slash
    access: Access
    exact: bool = False  # the one object named ``prefix``, not the keys under it

    @property
    def resource(self) -> str:
        return self.prefix if self.exact else f"{self.prefix}/*"


_ACTIONS = {
    Access.READ: ["s3:GetObject"],
    Access.WRITE: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
    Access.DELETE: ["s3:DeleteObject"],
}


def grants(settings: Settings) -> dict[str, tuple[Grant, ...]]:
    """The grants of every workload that uses the object store, by workload name."""
    raw = settings.ingestion.raw_prefix
    cells = settings.registration.crops_prefix
    stained = settings.inference.stained_prefix
    manifest = settings.inference.manifest_key
    checkpoints = validate_prefix(settings.ray.storage.strip("/"))
    read, write = Access.READ, Access.WRITE
    registration = (Grant(raw, read | write | Access.DELETE), Grant(cells, write))
    training = (
        Grant(cells, read),
        Grant(DATASETS_PREFIX, read),
        Grant(MODELS_PREFIX, read | write),
        Grant(checkpoints, read | write | Access.DELETE),
    )
    return {
        "ingestion": (Grant(raw, read | write | Access.DELETE),),
        "registration": registration,
        "worker": registration,
        "inference": (
            Grant(cells, read),
            Grant(stained, write),
            *([Grant(manifest, read, exact=True)] if manifest else []),
        ),
        "results": (Grant(cells, read), Grant(stained, read), Grant(DATASETS_PREFIX, read)),
        "trainer": training,
        "training": training,
        "triton": (Grant(MODELS_PREFIX, read),),
    }


def policy_document(bucket: str, workload_grants: tuple[Grant, ...]) -> dict[str, Any]:
    """An IAM policy (MinIO and AWS S3) allowing exactly ``workload_grants`` in ``bucket``."""
    bucket_arn = f"arn:aws:s3:::{bucket}"
    statements: list[dict[str, Any]] = [
        # The client asks for the bucket's region and whether it exists before it starts.
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [bucket_arn]},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
            "Condition": {
                "StringLike": {
                    "s3:prefix": [
                        g.resource
                        for g in workload_grants
                        if Access.READ in g.access and not g.exact
                    ]
                }
            },
        },
    ]
    for access, actions in _ACTIONS.items():
        granted = [g.resource for g in workload_grants if access in g.access]
        if granted:
            resources = [f"{bucket_arn}/{resource}" for resource in granted]
            statements.append({"Effect": "Allow", "Action": actions, "Resource": resources})
    return {"Version": "2012-10-17", "Statement": statements}
