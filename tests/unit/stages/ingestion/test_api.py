"""The scanner upload API on embedded defaults: happy path, retries and every bad input."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings, IngestionSettings, Settings, StoreSettings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.models import FieldImage, OutboxEvent, Slide
from stainless.core.storage.local import LocalObjectStore
from stainless.stages.ingestion.api import create_app
from stainless.stages.ingestion.ingestor import Ingestor
from stainless.stages.ingestion.scanners import register_scanner, revoke


@dataclass
class Api:
    client: TestClient
    store: LocalObjectStore
    engine: object
    key: str
    other_key: str

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"X-API-Key": key or self.key, **extra}

    def open_slide(self, external_id: str = "SLIDE-1", **extra: object) -> str:
        body = {"external_id": external_id, "patient_pseudonym": "P-001", **extra}
        response = self.client.post("/v1/slides", json=body, headers=self.headers())
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def upload(
        self,
        slide_id: str,
        data: bytes,
        *,
        modality: str = "DIC",
        index: int = 0,
        key: str | None = None,
        filename: str = "f.tif",
        **form: str,
    ):  # type: ignore[no-untyped-def]
        headers = self.headers(key, **form.pop("headers", {}))  # type: ignore[arg-type]
        return self.client.post(
            f"/v1/slides/{slide_id}/fields",
            files={"file": (filename, data, "application/octet-stream")},
            data={"modality": modality, "index": str(index), **form},
            headers=headers,
        )

    def stored(self) -> tuple[list[str], int, int]:
        with Session(self.engine) as session:  # type: ignore[arg-type]
            fields = len(session.exec(select(FieldImage)).all())
            events = len(session.exec(select(OutboxEvent)).all())
        return [k for k in self.store.list() if k.startswith("raw/")], fields, events


def _tiff(shape: tuple[int, ...] = (96, 128), dtype: str = "uint16") -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(0).integers(0, 4000, shape).astype(dtype))
    return buffer.getvalue()


def _png(shape: tuple[int, ...] = (96, 128, 3)) -> bytes:
    ok, data = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, shape, np.uint8))
    assert ok
    return data.tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


@pytest.fixture
def api(sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Api:
    extra = getattr(request, "param", {})  # more ingestion settings, by indirect parameters
    settings = Settings(
        database=DatabaseSettings(url=sqlite_url),
        store=StoreSettings(root=tmp_path / "store"),
        ingestion=IngestionSettings(
            max_pixels=4_000_000, max_upload_bytes=4 * 1024 * 1024, **extra
        ),
    )
    engine = create_db_engine(settings.database)
    store = LocalObjectStore(settings.store.root)
    with session_scope(engine) as session:
        _, key = register_scanner(session, name="scanner-a")
        _, other = register_scanner(session, name="scanner-b")
    app = create_app(
        settings.ingestion, engine=engine, ingestor=Ingestor(engine, store, settings.ingestion)
    )
    return Api(TestClient(app), store, engine, key, other)


def test_an_open_slide_is_cancelled_once_and_takes_nothing_more(api: Api) -> None:
    slide = api.open_slide()
    assert api.upload(slide, _tiff()).status_code == 201
    cancel = f"/v1/slides/{slide}/cancel"
    done = api.client.post(cancel, headers=api.headers())
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    keys, fields, events = api.stored()
    assert (len(keys), fields, events) == (1, 1, 2)  # the field stays; slides.cancelled
    again = api.client.post(cancel, headers=api.headers())
    assert again.status_code == 200 and api.stored()[2] == 2  # announced once
    late = api.upload(slide, _tiff(), index=1)
    assert (
        late.status_code == 409 and "is cancelled: it takes no more fields" in late.json()["detail"]
    )
    completing = api.client.post(f"/v1/slides/{slide}/complete", headers=api.headers())
    assert completing.status_code == 409 and "is cancelled" in completing.json()["detail"]
    assert api.stored()[2] == 2
    other = api.client.post(cancel, headers=api.headers(api.other_key))
    assert other.status_code == 404

    reopened = api.client.post(
        "/v1/slides",
        json={"external_id": "SLIDE-1", "patient_pseudonym": "P"},
        headers=api.headers(),
    )
    assert reopened.status_code == 409 and "under another external id" in reopened.json()["detail"]
    completed = api.open_slide("SLIDE-2")
    assert api.upload(completed, _tiff()).status_code == 201
    api.client.post(f"/v1/slides/{completed}/complete", headers=api.headers())
    refused = api.client.post(f"/v1/slides/{completed}/cancel", headers=api.headers())
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "conflict",
        "detail": f"slide {completed} is uploaded: only an open slide can be cancelled",
    }


def test_a_slide_is_opened_filled_and_completed(api: Api) -> None:
    slide = api.open_slide(acquisition={"objective": "100x"})
    dic, bf = _tiff(), _png()
    first = api.upload(slide, dic, sha256=hashlib.sha256(dic).hexdigest(), stage_x_um="12.5")
    assert first.status_code == 201, first.text
    assert first.json()["width"] == 128 and first.json()["height"] == 96
    assert api.upload(slide, bf, modality="BF", filename="f.png").status_code == 201
    done = api.client.post(f"/v1/slides/{slide}/complete", headers=api.headers())
    assert done.json()["status"] == "uploaded"
    status = api.client.get(f"/v1/slides/{slide}", headers=api.headers()).json()
    assert [(f["index"], f["modality"]) for f in status["fields"]] == [(0, "BF"), (0, "DIC")]
    keys, fields, events = api.stored()
    assert (len(keys), fields, events) == (2, 2, 3)  # two fields.ingested, one slides.uploaded
    assert api.client.post(f"/v1/slides/{slide}/complete", headers=api.headers()).status_code == 200
    assert api.stored()[2] == 3  # completing again announces nothing new
    stored = api.store.get(first.json()["object_key"])  # re-encoded: the same pixels
    assert np.array_equal(tifffile.imread(io.BytesIO(stored)), tifffile.imread(io.BytesIO(dic)))
    late = api.upload(slide, _tiff(), index=1)
    assert late.status_code == 409 and "takes no more fields" in late.json()["detail"]


@pytest.mark.parametrize("api", [{"keep_original": True}], indirect=True)
def test_the_upload_as_sent_is_kept_beside_its_pixels_when_asked(api: Api) -> None:
    slide = api.open_slide()
    dic = _tiff()
    stored = api.upload(slide, dic).json()["object_key"]
    keys = api.stored()[0]
    original = stored.rsplit(".", 1)[0] + ".original"
    assert sorted(keys) == sorted([stored, original])
    assert api.store.get(original) == dic and api.store.get(stored) != dic


def test_a_retried_upload_returns_the_first_answer_and_stores_nothing_twice(api: Api) -> None:
    slide = api.open_slide()
    dic = _tiff()
    first = api.upload(slide, dic, headers={"Idempotency-Key": "upload-0001"})
    again = api.upload(slide, dic, headers={"Idempotency-Key": "upload-0001"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert api.stored()[1:] == (1, 1)
    assert len(api.stored()[0]) == 1
    other = api.upload(slide, _tiff((96, 128), "uint8"), headers={"Idempotency-Key": "upload-0001"})
    assert other.status_code == 409 and "different request" in other.json()["detail"]
    duplicate = api.upload(slide, dic)
    assert duplicate.status_code == 409 and "already uploaded" in duplicate.json()["detail"]


def test_a_retried_slide_opening_returns_the_same_slide(api: Api) -> None:
    body = {"external_id": "RETRY-1", "patient_pseudonym": "P"}
    headers = api.headers(**{"Idempotency-Key": "open-1"})
    first = api.client.post("/v1/slides", json=body, headers=headers)
    again = api.client.post("/v1/slides", json=body, headers=headers)
    assert first.json()["id"] == again.json()["id"]
    clash = api.client.post("/v1/slides", json=body, headers=api.headers())
    assert clash.status_code == 409 and first.json()["id"] in clash.json()["detail"]


BAD_UPLOADS = [
    ("zero bytes", b"", {}, 422, "empty"),
    ("truncated TIFF", _tiff()[:2000], {}, 422, "does not decode"),
    ("not an image", b"GIF89a this is not it" * 10, {}, 422, "not a PNG or TIFF"),
    (
        "decompression bomb",
        _png_header_only(60000, 60000),
        {"modality": "BF"},
        422,
        "60000x60000 pixels exceeds",
    ),
    ("RGB sent as DIC", _png(), {}, 422, "DIC field must be single-channel"),
    ("grey sent as BF", _tiff(), {"modality": "BF"}, 422, "BF field must be RGB"),
    ("wrong checksum", _tiff(), {"sha256": "0" * 64}, 422, "sha256"),
    ("bad modality", _tiff(), {"modality": "CT"}, 422, "modality"),
    ("negative index", _tiff(), {"index": "-1"}, 422, "index"),
    ("NaN stage position", _tiff(), {"stage_x_um": "nan"}, 422, "stage_x_um"),
    ("infinite stage position", _tiff(), {"stage_y_um": "inf"}, 422, "stage_y_um"),
    ("overflowing stage position", _tiff(), {"stage_x_um": "1e309"}, 422, "stage_x_um"),
    ("stage position beyond travel", _tiff(), {"stage_x_um": "2e6"}, 422, "stage_x_um"),
]


@pytest.mark.parametrize(
    ("name", "data", "form", "status", "reason"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS]
)
def test_bad_uploads_are_refused_and_leave_nothing(
    api: Api, name: str, data: bytes, form: dict[str, str], status: int, reason: str
) -> None:
    slide = api.open_slide()
    form = dict(form)
    modality = form.pop("modality", "DIC")
    index = int(form.pop("index", "0"))
    response = api.upload(slide, data, modality=modality, index=index, **form)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert api.stored() == ([], 0, 0)


def test_sizes_must_agree_between_modalities(api: Api) -> None:
    slide = api.open_slide()
    assert api.upload(slide, _tiff((96, 128))).status_code == 201
    response = api.upload(slide, _png((100, 128, 3)), modality="BF")
    assert response.status_code == 422
    assert "128x100 but this slide's fields are 128x96" in response.json()["detail"]
    assert api.stored()[1:] == (1, 1)


def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    slide = api.open_slide()
    response = api.upload(slide, b"\x00" * (5 * 1024 * 1024))
    assert response.status_code == 413
    assert api.stored() == ([], 0, 0)


def test_extra_form_parts_are_refused_before_they_are_spooled(api: Api) -> None:
    slide = api.open_slide()
    files = [("file", ("f.tif", _tiff(), "image/tiff"))]
    files += [(f"extra{i}", ("x.bin", b"\x00" * 1024, "image/tiff")) for i in range(10)]
    response = api.client.post(
        f"/v1/slides/{slide}/fields",
        files=files,
        data={"modality": "DIC", "index": "0"},
        headers=api.headers(),
    )
    assert response.status_code == 413 and "parts" in response.json()["detail"]
    assert api.stored() == ([], 0, 0)


def test_a_reused_idempotency_key_with_another_request_is_a_conflict(api: Api) -> None:
    slide = api.open_slide()
    key = {"headers": {"Idempotency-Key": "upload-1"}}
    first = api.upload(slide, _tiff(), stage_x_um="10.5", **key)  # type: ignore[arg-type]
    assert first.status_code == 201
    moved = api.upload(slide, _tiff(), stage_x_um="11.5", **key)  # type: ignore[arg-type]
    assert moved.status_code == 409 and "Idempotency-Key" in moved.json()["detail"]
    assert api.stored()[1:] == (1, 1)


@pytest.mark.parametrize(
    "acquisition",
    [{"gain": float("nan")}, {"gain": float("inf")}, {"note": "x" * 10_000}, {"k" * 100: 1}],
    ids=["nan", "inf", "long string", "long key"],
)
def test_acquisition_metadata_is_finite_and_bounded(
    api: Api, acquisition: dict[str, object]
) -> None:
    body = {"external_id": "S", "patient_pseudonym": "P", "acquisition": acquisition}
    content = json.dumps(body).encode()  # json.dumps writes NaN and Infinity literals
    response = api.client.post(
        "/v1/slides",
        content=content,
        headers=api.headers(**{"Content-Type": "application/json"}),
    )
    assert response.status_code == 422, response.text
    assert "x" * 100 not in response.text  # the refusal does not echo the input
    with Session(api.engine) as session:  # type: ignore[arg-type]
        assert session.exec(select(Slide)).all() == []


@pytest.mark.parametrize("slide_id", ["a%00b", "x" * 5000, "not-a-uuid"])
def test_malformed_slide_ids_are_refused_before_any_lookup(api: Api, slide_id: str) -> None:
    response = api.client.get(f"/v1/slides/{slide_id}", headers=api.headers())
    assert response.status_code == 422 and response.json()["error"] == "invalid"
    assert api.upload(slide_id, _tiff()).status_code == 422
    assert api.stored() == ([], 0, 0)


def test_dic_only_slides_refuse_brightfield(api: Api) -> None:
    slide = api.open_slide(dic_only=True)
    response = api.upload(slide, _png(), modality="BF")
    assert response.status_code == 422 and "DIC-only" in response.json()["detail"]


@pytest.mark.parametrize("key", [None, "stl_deadbeef_nope", "not-a-key"])
def test_unknown_keys_are_refused(api: Api, key: str | None) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    body = {"external_id": "X", "patient_pseudonym": "P"}
    response = api.client.post("/v1/slides", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "detail": "missing, unknown or revoked API key",
    }


def test_a_revoked_key_stops_working(api: Api) -> None:
    slide = api.open_slide()
    with session_scope(api.engine) as session:  # type: ignore[arg-type]
        revoke(session, name="scanner-a")
    assert api.upload(slide, _tiff()).status_code == 401
    assert api.stored() == ([], 0, 0)


def test_another_scanners_slide_is_invisible(api: Api) -> None:
    slide = api.open_slide()
    response = api.upload(slide, _tiff(), key=api.other_key)
    assert response.status_code == 404
    assert (
        api.client.get(f"/v1/slides/{slide}", headers=api.headers(api.other_key)).status_code == 404
    )
    assert api.stored() == ([], 0, 0)


@pytest.mark.parametrize("external_id", ["../etc/passwd", "a/b", "", ".hidden", "x" * 200])
def test_path_like_external_ids_are_refused(api: Api, external_id: str) -> None:
    body = {"external_id": external_id, "patient_pseudonym": "P"}
    response = api.client.post("/v1/slides", json=body, headers=api.headers())
    assert response.status_code == 422
    assert "external_id" in response.text
    with Session(api.engine) as session:  # type: ignore[arg-type]
        assert session.exec(select(Slide)).all() == []


def test_openapi_documents_every_endpoint_and_error() -> None:
    settings = Settings()
    engine = create_db_engine(DatabaseSettings(url="sqlite://"))
    app = create_app(
        settings.ingestion,
        engine=engine,
        ingestor=Ingestor(engine, LocalObjectStore(Path("/tmp/unused-store")), settings.ingestion),
    )
    spec = app.openapi()
    upload = spec["paths"]["/v1/slides/{slide_id}/fields"]["post"]
    assert {"401", "404", "409", "413", "422"} <= set(upload["responses"])
    raw = spec["paths"]["/v1/slides/{slide_id}/fields/{index}/{modality}"]["put"]
    assert {"401", "404", "409", "411", "413", "415", "422"} <= set(raw["responses"])
    assert set(raw["requestBody"]["content"]) >= {"image/tiff", "image/png"}
    assert set(spec["paths"]) >= {
        "/v1/slides",
        "/v1/slides/{slide_id}",
        "/v1/slides/{slide_id}/fields",
        "/v1/slides/{slide_id}/fields/{index}/{modality}",
        "/v1/slides/{slide_id}/complete",
        "/health/live",
        "/health/ready",
    }
    assert "/metrics" not in spec["paths"]  # served on a port of its own (run_http)
    assert TestClient(app).get("/docs").status_code == 404  # only the document itself
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
