"""Phantom fields by name and seed: a configuration under an acquisition, and the generator
of field ``(slide, field)`` of a set.

Each field draws from its own generator seeded by ``(seed, slide, field)``, so a field's
bytes do not depend on how many others are made or in which process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from stainless.imaging.acquisition import load_acquisition, merge
from stainless.imaging.phantom import PhantomConfig
from stainless.imaging.slides import slide_frequencies

__all__ = ["field_rng", "phantom_config"]


def phantom_config(
    *,
    width: int | None = None,
    height: int | None = None,
    acquisition: str | Mapping[str, Any] | None = None,
    slide: str | None = None,
) -> PhantomConfig:
    """The default configuration under an acquisition, with the field size overridden.

    Args:
        width: field width, if not the default.
        height: field height, if not the default.
        acquisition: a preset name or YAML path (``load_acquisition``), or overrides.
        slide: a slide preset (``stainless.imaging.slides.SLIDES``): the cells it holds,
            in place of any class frequencies of the acquisition.

    Raises:
        ValueError: an unknown acquisition or a value out of range (a plain error, so it
            crosses Celery intact).
    """
    if isinstance(acquisition, str):
        acquisition = load_acquisition(acquisition)
    size = {k: v for k, v in {"width": width, "height": height}.items() if v is not None}
    values = merge(acquisition or {}, size)
    if slide is not None:
        values["class_frequencies"] = slide_frequencies(slide)
    try:
        return PhantomConfig(**values)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid phantom configuration: {reasons}") from None


def field_rng(seed: int, slide_index: int, field_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, slide_index, field_index])
