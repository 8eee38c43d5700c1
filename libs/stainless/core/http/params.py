"""Path parameters every HTTP app shares: ids are UUIDs, checked before any lookup (a NUL
byte or a megabyte of path never reaches the database)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam

__all__ = ["UUID_PATTERN", "CellId", "JobId", "SlideId"]

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

SlideId = Annotated[str, PathParam(pattern=UUID_PATTERN, description="A slide id.")]
CellId = Annotated[str, PathParam(pattern=UUID_PATTERN, description="A cell id.")]
JobId = Annotated[str, PathParam(pattern=UUID_PATTERN, description="A training job id.")]
