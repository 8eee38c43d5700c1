"""Phantom slide sets written to an object store: images, ground truth and a manifest.

Layout under ``prefix`` (keys, so the same code writes a folder or a bucket)::

    slide_000/field_000_dic.tif    16-bit grayscale DIC
    slide_000/field_000_bf.png     RGB brightfield (8-bit; 16-bit from a 12/16-bit camera)
    slide_000/field_000_mask.png   4-class mask in the DIC frame (0 bg, 1 red cell,
                                   2 cytoplasm, 3 nucleus)
    slide_000/phantom.png          DIC/brightfield pairs of the slide's classes
    slide_000/slide.json           the slide's manifest entry
    manifest.json                  the whole set: config, seed, every field and cell
    phantom.png                    DIC/brightfield pairs of each class

Each field draws from its own generator seeded by ``(seed, slide, field)``, so a
field's bytes do not depend on how many others are made or in which process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from celery import Celery, Task

from stainless.core.config import StoreSettings
from stainless.core.storage import ObjectStore, create_store, validate_prefix
from stainless.imaging.codecs import encode_png, encode_tiff16
from stainless.imaging.phantom import PhantomConfig, PhantomField, generate_field
from stainless.imaging.phantom_figure import render_overview
from stainless.imaging.phantom_set import field_rng, phantom_config

MANIFEST_VERSION = 1
FieldCallback = Callable[[PhantomField], None]


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


def write_slide(
    store: ObjectStore,
    *,
    prefix: str,
    slide_index: int,
    fields: int,
    seed: int,
    config: PhantomConfig,
    on_field: FieldCallback | None = None,
) -> dict[str, Any]:
    """Render one slide's fields into ``store``; return the slide's manifest entry.

    The entry is written last (``slide.json``), so its presence means the slide is
    complete.
    """
    if fields < 1:
        raise ValueError("a phantom slide needs at least one field")
    validate_prefix(prefix)
    slide = f"slide_{slide_index:03d}"
    entries = []
    examples = _Examples()
    for index in range(fields):
        field = generate_field(config, field_rng(seed, slide_index, index))
        stem = _join(prefix, f"{slide}/field_{index:03d}")
        keys = {"dic": f"{stem}_dic.tif", "bf": f"{stem}_bf.png", "mask": f"{stem}_mask.png"}
        store.put(keys["dic"], encode_tiff16(field.dic), content_type="image/tiff")
        store.put(keys["bf"], encode_png(field.bf), content_type="image/png")
        store.put(keys["mask"], encode_png(field.mask), content_type="image/png")
        entries.append(_field_entry(index, keys, field))
        examples.offer(field)
        if on_field is not None:
            on_field(field)
    entry = {"slide": slide, "index": slide_index, "fields": entries}
    store.put(
        _join(prefix, f"{slide}/phantom.png"),
        render_overview(examples.fields),
        content_type="image/png",
    )
    store.put(
        _join(prefix, f"{slide}/slide.json"), _json_bytes(entry), content_type="application/json"
    )
    return entry


def _field_entry(index: int, keys: dict[str, str], field: PhantomField) -> dict[str, Any]:
    height, width = field.dic.shape
    return {
        "index": index,
        **keys,
        "width": width,
        "height": height,
        "affine_bf_to_dic": [[float(v) for v in row] for row in field.affine_bf_to_dic],
        "cells": [
            {
                "class": str(cell.cell_class),
                "box_dic": list(cell.box_dic),
                "box_bf": list(cell.box_bf),
                "at_border": cell.at_border,
                "touching": cell.touching,
            }
            for cell in field.cells
        ],
        "smear_objects": [
            {"kind": str(obj.kind), "box_dic": list(obj.box_dic), "box_bf": list(obj.box_bf)}
            for obj in field.smear_objects
        ],
    }


def write_phantom_set(
    store: ObjectStore,
    *,
    slides: int,
    fields: int,
    seed: int,
    config: PhantomConfig,
    prefix: str = "",
    on_field: FieldCallback | None = None,
) -> dict[str, Any]:
    """Render ``slides`` × ``fields`` fields, the manifest and the overview figure."""
    if slides < 1:
        raise ValueError("a phantom set needs at least one slide")
    examples = _Examples()

    def keep(field: PhantomField) -> None:
        examples.offer(field)
        if on_field is not None:
            on_field(field)

    entries = [
        write_slide(
            store,
            prefix=prefix,
            slide_index=s,
            fields=fields,
            seed=seed,
            config=config,
            on_field=keep,
        )
        for s in range(slides)
    ]
    manifest = {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "config": config.model_dump(mode="json"),
        "slides": entries,
    }
    store.put(
        _join(prefix, "phantom.png"), render_overview(examples.fields), content_type="image/png"
    )
    store.put(
        _join(prefix, "manifest.json"), _json_bytes(manifest), content_type="application/json"
    )
    return manifest


class _Examples:
    """The fields worth showing: each one adds a class not shown yet (at most one per class)."""

    def __init__(self) -> None:
        self.fields: list[PhantomField] = []
        self._seen: set[str] = set()

    def offer(self, field: PhantomField) -> None:
        classes = {str(cell.cell_class) for cell in field.cells}
        if classes - self._seen:
            self.fields.append(field)
            self._seen |= classes


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()


PHANTOM_TASK = "stainless.phantom.generate_slide"


def register_phantom_task(app: Celery, settings: StoreSettings) -> Task:
    """Register the task that renders one phantom slide into the configured object store."""

    @cache
    def store() -> ObjectStore:
        return create_store(settings)

    @app.task(name=PHANTOM_TASK, shared=False)  # type: ignore[untyped-decorator]
    def generate_phantom_slide(
        prefix: str,
        slide_index: int,
        fields: int,
        seed: int,
        width: int | None = None,
        height: int | None = None,
        slide: str | None = None,
    ) -> dict[str, Any]:
        """Render one phantom slide into the object store (``slide``: a slide preset, the
        healthy one by default); return its manifest entry."""
        return write_slide(
            store(),
            prefix=prefix,
            slide_index=slide_index,
            fields=fields,
            seed=seed,
            config=phantom_config(width=width, height=height, slide=slide),
        )

    task: Task = generate_phantom_slide
    return task
