"""The object-store policy of each workload, as IAM documents."""

from __future__ import annotations

from typing import Any

from stainless.core.config import InferenceSettings, IngestionSettings, RaySettings, Settings
from stainless.core.storage.access import Access, Grant, grants, policy_document


def _statement(document: dict[str, Any], action: str) -> dict[str, Any]:
    (found,) = [s for s in document["Statement"] if action in s["Action"]]
    return found


def test_prefixes_follow_the_settings() -> None:
    settings = Settings(
        ingestion=IngestionSettings(raw_prefix="uploads"),
        inference=InferenceSettings(stained_prefix="virtual"),
        ray=RaySettings(storage="/ray-runs/"),
    )
    every = grants(settings)
    assert every["ingestion"] == (Grant("uploads", Access.READ | Access.WRITE | Access.DELETE),)
    assert Grant("virtual", Access.WRITE) in every["inference"]
    assert Grant("virtual", Access.READ) in every["results"]
    assert Grant("ray-runs", Access.READ | Access.WRITE | Access.DELETE) in every["training"]


def test_a_document_allows_only_its_prefixes() -> None:
    document = policy_document("bucket", (Grant("raw", Access.READ), Grant("cells", Access.WRITE)))
    assert _statement(document, "s3:GetObject")["Resource"] == ["arn:aws:s3:::bucket/raw/*"]
    assert _statement(document, "s3:PutObject")["Resource"] == ["arn:aws:s3:::bucket/cells/*"]
    assert not [s for s in document["Statement"] if "s3:DeleteObject" in s["Action"]]
    listing = _statement(document, "s3:ListBucket")
    assert listing["Resource"] == ["arn:aws:s3:::bucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["raw/*"]}}


def test_no_workload_may_touch_the_whole_bucket() -> None:
    for workload, granted in grants(Settings()).items():
        for statement in policy_document("b", granted)["Statement"]:
            for resource in statement["Resource"]:
                assert resource == "arn:aws:s3:::b" or resource.startswith("arn:aws:s3:::b/"), (
                    workload
                )
                assert not resource.endswith(":::b/*"), workload
            assert statement["Effect"] == "Allow"


def test_triton_only_reads_models() -> None:
    assert grants(Settings())["triton"] == (Grant("models", Access.READ),)
