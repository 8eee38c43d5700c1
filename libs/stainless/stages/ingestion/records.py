"""The ingestion stage's writes: a field row and the ``fields.ingested`` event announcing it,
added to the caller's session so that its transaction commits them together."""

from __future__ import annotations

from sqlmodel import Session

from stainless.core.db.models import FieldImage, Modality, new_id
from stainless.core.events.contracts import Envelope, FieldIngested
from stainless.core.events.outbox import add_event

__all__ = ["record_field"]


def record_field(
    session: Session,
    *,
    slide_id: str,
    index: int,
    modality: Modality,
    object_key: str,
    sha256: str,
    size_bytes: int,
    width: int,
    height: int,
    stage_x_um: float | None = None,
    stage_y_um: float | None = None,
    field_id: str | None = None,
    canonical: bool = True,
) -> FieldImage:
    """Add a field row and its ``fields.ingested`` event to the session's transaction."""
    field = FieldImage(
        id=field_id or new_id(),
        slide_id=slide_id,
        index=index,
        modality=modality,
        object_key=object_key,
        canonical=canonical,
        sha256=sha256,
        size_bytes=size_bytes,
        width=width,
        height=height,
        stage_x_um=stage_x_um,
        stage_y_um=stage_y_um,
    )
    session.add(field)
    session.flush()
    payload = FieldIngested(
        slide_id=slide_id,
        field_id=field.id,
        field_index=index,
        modality=modality.value,
        object_key=object_key,
        sha256=sha256,
    )
    add_event(session, Envelope.wrap(payload, key=slide_id))
    return field
