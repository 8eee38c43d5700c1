"""Keyword-only repository functions shared by the stages.

Each function adds rows to the caller's session; the caller's transaction
(``session_scope``) commits them. A row announced by an event is written by its stage
with the event (e.g. ``stainless.stages.ingestion.records``).
"""

from __future__ import annotations

from sqlmodel import Session, select

from stainless.core.db.models import Scanner, Slide


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
