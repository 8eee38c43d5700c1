"""Keyword-only repository functions: the only code that writes rows and their events.

Each function adds rows and the outbox events announcing them to the caller's
session; the caller's transaction (``session_scope``) commits them together.
"""

from __future__ import annotations

from sqlmodel import Session, select

from stainless.core.db.models import FieldImage, Modality, Scanner, Slide, new_id
from stainless.core.events.contracts import Envelope, FieldIngested
from stainless.core.events.outbox import add_event


def get_or_create_scanner(
    session: Session, *, name: str, key_prefix: str, key_hash: str
) -> Scanner:
    scanner = session.exec(select(Scanner).where(Scanner.name == name)).first()
    if scanner is None:
        scanner = Scanner(name=name, key_prefix=key_prefix, key_hash=key_hash)
        session.add(scanner)
        session.flush()
    return scanner


def create_slide(
    session: Session,
    *,
    scanner_id: str,
    external_id: str,
    patient_pseudonym: str,
    acquisition: dict[str, object] | None = None,
    dic_only: bool = False,
) -> Slide:
    slide = Slide(
        dic_only=dic_only,
        scanner_id=scanner_id,
        external_id=external_id,
        patient_pseudonym=patient_pseudonym,
        acquisition=acquisition or {},
    )
    session.add(slide)
    session.flush()
    return slide


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
) -> FieldImage:
    """Add a field row and its ``fields.ingested`` event to the session's transaction."""
    field = FieldImage(
        id=field_id or new_id(),
        slide_id=slide_id,
        index=index,
        modality=modality,
        object_key=object_key,
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
