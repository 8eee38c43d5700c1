"""The raw-body upload route (``PUT …/fields/{index}/{modality}``): the bytes go to the store
while they arrive, the answer follows the checks of length, digest and header, and every
rule of the form route holds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from stainless.core.config import IngestionSettings
from stainless.core.db.models import FieldImage, Modality, Scanner
from stainless.stages.ingestion.ingestor import FieldUpload, Ingestor, InvalidUpload

from .test_api import Api, _png, _png_header_only, _tiff, api  # noqa: F401 - api: the fixture


def put(
    api: Api,  # noqa: F811
    slide: str,
    data: bytes,
    *,
    modality: str = "DIC",
    index: int = 0,
    sha256: str | None = None,
    content_type: str = "image/tiff",
    key: str | None = None,
    params: dict[str, str] | None = None,
    **headers: str,
):  # type: ignore[no-untyped-def]
    extra = {"Content-Type": content_type, **headers}
    extra["X-Content-SHA256"] = sha256 or hashlib.sha256(data).hexdigest()
    return api.client.put(
        f"/v1/slides/{slide}/fields/{index}/{modality}",
        content=data,
        params=params,
        headers=api.headers(key, **extra),
    )


def test_a_raw_upload_is_stored_as_received_and_announced(api: Api) -> None:  # noqa: F811
    slide = api.open_slide()
    dic, bf = _tiff(), _png()
    first = put(api, slide, dic, params={"stage_x_um": "12.5"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["width"], body["height"], body["canonical"]) == (128, 96, False)
    assert (body["stage_x_um"], body["size_bytes"]) == (12.5, len(dic))
    assert body["object_key"].endswith(".received")
    assert api.store.get(body["object_key"]) == dic  # as received, until its first reader
    second = put(api, slide, bf, modality="BF", content_type="image/png")
    assert second.status_code == 201, second.text
    assert api.stored()[1:] == (2, 2)  # two fields, two fields.ingested
    done = api.client.post(f"/v1/slides/{slide}/complete", headers=api.headers())
    assert done.json()["status"] == "uploaded"


def test_a_retried_raw_upload_returns_the_first_answer_without_reading_again(
    api: Api,  # noqa: F811
) -> None:
    slide = api.open_slide()
    dic = _tiff()
    first = put(api, slide, dic, **{"Idempotency-Key": "raw-0001"})
    again = put(api, slide, dic, **{"Idempotency-Key": "raw-0001"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len(api.stored()[0]) == 1 and api.stored()[1:] == (1, 1)
    other = put(api, slide, _tiff((96, 128), "uint8"), **{"Idempotency-Key": "raw-0001"})
    assert other.status_code == 409 and "different request" in other.json()["detail"]
    duplicate = put(api, slide, dic)
    assert duplicate.status_code == 409 and "already uploaded" in duplicate.json()["detail"]
    assert len(api.stored()[0]) == 1  # refused before any byte was stored


RAW_BAD = [
    ("zero bytes", b"", {}, 422, "empty"),
    ("not an image", b"GIF89a this is not it" * 10, {}, 422, "not a PNG or TIFF"),
    ("bomb header", _png_header_only(60000, 60000), {"modality": "BF"}, 422, "exceeds"),
    ("RGB sent as DIC", _png(), {}, 422, "DIC field must be single-channel"),
    ("grey sent as BF", _tiff(), {"modality": "BF"}, 422, "BF field must be RGB"),
    ("wrong checksum", _tiff(), {"sha256": "0" * 64}, 422, "SHA-256"),
    ("malformed checksum", _tiff(), {"sha256": "abc"}, 422, "X-Content-SHA256"),
    ("bad modality", _tiff(), {"modality": "CT"}, 422, "modality"),
    ("index out of range", _tiff(), {"index": 100_001}, 422, "index"),
    ("NaN stage position", _tiff(), {"params": {"stage_x_um": "nan"}}, 422, "stage_x_um"),
    ("stage beyond travel", _tiff(), {"params": {"stage_y_um": "2e6"}}, 422, "stage_y_um"),
    ("another media type", _tiff(), {"content_type": "text/plain"}, 415, "image/tiff"),
]


@pytest.mark.parametrize(
    ("name", "data", "options", "status", "reason"), RAW_BAD, ids=[b[0] for b in RAW_BAD]
)
def test_bad_raw_uploads_are_refused_and_leave_nothing(
    api: Api,  # noqa: F811
    name: str,
    data: bytes,
    options: dict[str, object],
    status: int,
    reason: str,
) -> None:
    slide = api.open_slide()
    response = put(api, slide, data, **options)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert reason in response.text
    assert set(response.json()) == {"error", "detail"}
    assert api.stored() == ([], 0, 0)


def test_a_raw_upload_needs_its_length_and_digest(api: Api) -> None:  # noqa: F811
    slide = api.open_slide()
    data = _tiff()

    def chunked():  # type: ignore[no-untyped-def]
        yield data

    response = api.client.put(
        f"/v1/slides/{slide}/fields/0/DIC",
        content=chunked(),
        headers=api.headers(**{"X-Content-SHA256": hashlib.sha256(data).hexdigest()}),
    )
    assert response.status_code == 411 and "Content-Length" in response.json()["detail"]
    unsigned = api.client.put(
        f"/v1/slides/{slide}/fields/0/DIC", content=data, headers=api.headers()
    )
    assert unsigned.status_code == 422 and "X-Content-SHA256" in unsigned.text
    assert api.stored() == ([], 0, 0)


def test_an_oversized_raw_body_is_refused_before_it_is_read(api: Api) -> None:  # noqa: F811
    slide = api.open_slide()
    response = put(api, slide, b"\x00" * (5 * 1024 * 1024))
    assert response.status_code == 413
    assert api.stored() == ([], 0, 0)


def test_the_slide_rules_hold_before_any_byte_is_stored(api: Api) -> None:  # noqa: F811
    dic_only = api.open_slide("DIC-ONLY", dic_only=True)
    refused = put(api, dic_only, _png(), modality="BF", content_type="image/png")
    assert refused.status_code == 422 and "DIC-only" in refused.json()["detail"]
    slide = api.open_slide()
    assert put(api, slide, _tiff((96, 128))).status_code == 201
    other_size = put(api, slide, _png((100, 128, 3)), modality="BF")
    assert other_size.status_code == 422 and "128x96" in other_size.json()["detail"]
    stranger = put(api, slide, _tiff(), index=1, key=api.other_key)
    assert stranger.status_code == 404
    api.client.post(f"/v1/slides/{slide}/complete", headers=api.headers())
    late = put(api, slide, _tiff(), index=1)
    assert late.status_code == 409 and "takes no more fields" in late.json()["detail"]
    with Session(api.engine) as session:  # type: ignore[arg-type]
        assert len(session.exec(select(FieldImage)).all()) == 1
    assert len(api.stored()[0]) == 1
    assert put(api, slide, _tiff(), key="stl_nope").status_code == 401


def test_two_first_fields_of_other_sizes_side_by_side_are_not_both_taken(
    api: Api,  # noqa: F811
) -> None:
    slide = api.open_slide()
    settings = IngestionSettings(max_pixels=4_000_000)
    ingestor = Ingestor(api.engine, api.store, settings)  # type: ignore[arg-type]
    with Session(api.engine) as session:  # type: ignore[arg-type]
        scanner = session.exec(select(Scanner).where(Scanner.name == "scanner-a")).one()
    dic, bf = _tiff((96, 128)), _png((100, 128, 3))

    def dic_arriving() -> Iterator[bytes]:
        yield dic[:64]  # past the slide's checks, which found no field yet
        taken = put(api, slide, bf, modality="BF", content_type="image/png")
        assert taken.status_code == 201, taken.text
        yield dic[64:]

    upload = FieldUpload(
        slide_id=slide,
        index=0,
        modality=Modality.DIC,
        sha256=hashlib.sha256(dic).hexdigest(),
    )
    with pytest.raises(InvalidUpload, match="128x96 but this slide's fields are 128x100"):
        ingestor.receive_field(scanner, upload, dic_arriving(), length=len(dic))
    keys, fields, events = api.stored()
    assert (len(keys), fields, events) == (1, 1, 1)  # the BF field only; the DIC bytes went
