"""A field's pixels from the object store.

A field uploaded as a raw body is stored as it arrived (``FieldImage.canonical`` false):
its header was checked, its pixels were not. Its first reader decodes it in the
memory-capped worker, stores the canonical re-encoding (its pixels only: no further pages,
no metadata) and points the row at it, under the row's lock so that two readers settle it
once; the upload as received is then deleted unless the settings keep originals. One that
does not decode stays as received, for whoever looks into why its field was rejected.
"""

from __future__ import annotations

import io

import numpy as np
import structlog
from sqlalchemy import Engine
from sqlmodel import select

from stainless.core.db.engine import session_scope
from stainless.core.db.models import FieldImage
from stainless.core.decoding import CappedDecoder
from stainless.core.storage import ObjectStore
from stainless.imaging.codecs import ImageRejected, decode, probe

__all__ = ["FieldImages", "ImageRejected"]

log = structlog.get_logger(__name__)


class FieldImages:
    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        decoder: CappedDecoder,
        *,
        keep_received: bool = False,
    ) -> None:
        self._engine = engine
        self._store = store
        self._decoder = decoder
        self._keep_received = keep_received

    def load(self, field: FieldImage) -> np.ndarray:
        """The field's pixels.

        Raises:
            ImageRejected: an upload stored as received does not decode within the cap.
        """
        key = field.object_key if field.canonical else self._settle(field.id)
        return _decoded(self._store.get(key))

    def _settle(self, field_id: str) -> str:
        """The key of the field's canonical image, re-encoded from the upload if no reader
        did so before."""
        with session_scope(self._engine) as session:
            row = session.exec(
                select(FieldImage).where(FieldImage.id == field_id).with_for_update()
            ).one()
            if row.canonical:
                return row.object_key
            received = row.object_key
            data = self._store.get(received)
            info = probe(io.BytesIO(data))
            canonical = self._decoder.canonical(data, info)
            key = f"{received.rsplit('.', 1)[0]}.{info.format.value}"
            self._store.put(key, canonical, content_type=info.content_type)
            row.object_key, row.canonical = key, True
            session.add(row)
        if not self._keep_received:
            self._store.delete(received)
        log.info("upload decoded and stored canonically", field_id=field_id, key=key)
        return key


def _decoded(data: bytes) -> np.ndarray:
    stream = io.BytesIO(data)
    return decode(stream, probe(stream))
