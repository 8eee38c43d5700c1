"""Least privilege on the local S3 server: a user and a policy per workload.

The local S3 server checks IAM when started with free unauthenticated calls
(``servers.start_s3(..., free_actions=3)``): the first three make an admin user here, who
then creates, for each workload, the user and the policy ``stainless store policies`` wrote
(what the chart's store-access Job does on MinIO with ``mc admin``). Uses boto3, which the
S3 server's package brings into the project's virtual environment.
"""

from __future__ import annotations

import json
from typing import Any

FREE_ACTIONS = 3
"""Unauthenticated calls :func:`bootstrap_admin` makes before the server checks IAM."""


def _iam(endpoint: str, key: dict[str, str] | None = None) -> Any:
    import boto3  # type: ignore[import-untyped]

    key = key or {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"}
    return boto3.client(
        "iam",
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def bootstrap_admin(endpoint: str) -> dict[str, str]:
    """An admin allowed everything, made with the server's :data:`FREE_ACTIONS` calls."""
    iam = _iam(endpoint)
    iam.create_user(UserName="admin")
    everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    iam.put_user_policy(
        UserName="admin",
        PolicyName="admin",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
    )
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def ensure_bucket(endpoint: str, admin: dict[str, str], bucket: str) -> None:
    """``bucket``, made by the admin when missing (the services may not make it)."""
    from minio import Minio

    client = Minio(
        endpoint, access_key=admin["AccessKeyId"], secret_key=admin["SecretAccessKey"], secure=False
    )
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


def create_identities(
    endpoint: str, admin: dict[str, str], policies: dict[str, dict[str, Any]], *, suffix: str = ""
) -> dict[str, dict[str, str]]:
    """A user holding only its policy per workload of ``policies``; their keys by workload.
    Names end in ``suffix`` (several stacks on one server)."""
    iam = _iam(endpoint, admin)
    keys = {}
    for workload, document in policies.items():
        name = f"{workload}-{suffix}" if suffix else workload
        policy = iam.create_policy(
            PolicyName=f"stainless-{name}", PolicyDocument=json.dumps(document)
        )
        iam.create_user(UserName=f"svc-{name}")
        iam.attach_user_policy(UserName=f"svc-{name}", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName=f"svc-{name}")["AccessKey"]
        keys[workload] = {
            "AccessKeyId": key["AccessKeyId"],
            "SecretAccessKey": key["SecretAccessKey"],
        }
    return keys
