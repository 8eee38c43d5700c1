"""``stainless bench ingest`` against a real S3 server: the ingestion service in its own
process takes fields on both routes, and the raw one stores them as received."""

from __future__ import annotations

import pytest

from stainless.bench.ingest import run_ingest_bench
from stainless.core.config import StoreBackend, StoreSettings
from stainless.core.storage.s3 import S3ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fields_are_uploaded_on_both_routes_beside_plain_puts(s3_endpoint: str) -> None:
    settings = StoreSettings(backend=StoreBackend.S3, endpoint=s3_endpoint, bucket="bench-ingest")
    result = run_ingest_bench(settings, fields=2, width=384, height=256)
    assert result["fields"] == 2
    assert min(result["ratio"], result["form_ratio"], result["minio_put_mb_per_s"]) > 0
    # with the untimed first upload of each route: the raw route's as received, the form
    # route's re-encoded; and the bench leaves nothing behind
    assert result["stored"] == {"as_received": 3, "canonical": 3}
    assert list(S3ObjectStore.from_settings(settings).list("")) == []
