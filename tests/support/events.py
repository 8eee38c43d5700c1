"""An event to publish in tests of the bus, the outbox and the dead letters."""

from __future__ import annotations

from stainless.core.events import Envelope, FieldIngested


def field_event(slide: str = "s1", index: int = 0) -> Envelope:
    """``fields.ingested`` for field ``index`` of ``slide``, keyed by the slide."""
    return Envelope.wrap(
        FieldIngested(
            slide_id=slide,
            field_id=f"{slide}-{index}",
            field_index=index,
            modality="BF",
            object_key=f"raw/{slide}/{index}.png",
            sha256="b" * 64,
        ),
        key=slide,
    )
