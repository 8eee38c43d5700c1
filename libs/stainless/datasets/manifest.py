"""The dataset snapshot: a frozen list of cells (object keys, label, source) under its hash.

A snapshot is JSON at ``datasets/<name>/<content_hash>.json``. The content hash is
the SHA-256 of the canonical JSON (sorted keys, no whitespace) of ``classes`` and
``items`` only, so the same cells give the same key whatever the snapshot's name
date or description, and any edit to the cells shows as a hash that no longer
matches its key. Readers call :func:`read_manifest`, which checks exactly that.

Each item names the objects of one cell:

- ``dic``: the DIC crop, a 16-bit grayscale PNG (required);
- ``bf``: the brightfield crop registered onto the DIC crop, an 8-bit RGB PNG
  (``None`` when the cell has no pair);
- ``mask``: a 4-class mask PNG (0 background, 1 red cell, 2 cytoplasm, 3 nucleus),
  ``None`` when unknown;
- ``label``: a :class:`~stainless.imaging.phantom.CellClass` code, ``None`` when unknown.

Detection datasets (whole fields with white-cell boxes, ``stainless.datasets.detection``)
share the key layout and the hashing and loading helpers here; their JSON carries
``"kind": "detection"``, which :func:`read_manifest` refuses with a clear reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from stainless.core.storage import (
    DATASETS_PREFIX,
    ObjectNotFoundError,
    ObjectStore,
    validate_key,
)
from stainless.domain.cells import CellClass

__all__ = [
    "CLASSES",
    "MANIFEST_VERSION",
    "DatasetError",
    "DatasetItem",
    "DatasetManifest",
    "DatasetName",
    "canonical_hash",
    "check_manifest_key",
    "check_name",
    "content_hash",
    "dataset_prefix",
    "load_manifest_json",
    "manifest_key",
    "parse_manifest",
    "put_manifest_json",
    "read_manifest",
    "validation_reasons",
    "write_manifest",
]

MANIFEST_VERSION = 1
CLASSES: tuple[str, ...] = tuple(c.value for c in CellClass)
"""Every cell class in :class:`CellClass` order (a label's index is its position here)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class DatasetError(ValueError):
    """A snapshot that cannot be built, written or read; the message says why."""


def check_name(name: str) -> str:
    """A dataset name: 1–100 of ``A-Za-z0-9._-``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use 1-100 of A-Za-z0-9._- "
            "starting with a letter or digit"
        )
    return name


def _valid_name(name: str) -> str:
    try:
        return check_name(name)
    except DatasetError as exc:
        raise ValueError(str(exc)) from None


DatasetName = Annotated[str, AfterValidator(_valid_name)]
"""A dataset name as a manifest field (:func:`check_name`'s rule)."""


def dataset_prefix(name: str) -> str:
    """``datasets/<name>/``: where the snapshots and imported objects of a dataset live."""
    return f"{DATASETS_PREFIX}/{check_name(name)}/"


class DatasetItem(BaseModel):
    """One cell of a snapshot: object keys of its crops, its label and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    dic: str
    bf: str | None = None
    mask: str | None = None
    label: str | None = None
    source: str
    slide_id: str | None = None

    @field_validator("id", "source")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("dic", "bf", "mask")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else validate_key(value)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and value not in CLASSES:
            raise ValueError(f"label {value!r} is not a cell class ({', '.join(CLASSES)})")
        return value


class DatasetManifest(BaseModel):
    """A snapshot: its name and date, the class order and the items (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = MANIFEST_VERSION
    name: DatasetName
    created_at: datetime
    classes: tuple[str, ...] = CLASSES
    items: tuple[DatasetItem, ...]
    description: str = ""

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {value} (this code reads 1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be distinct")
        ids: set[str] = set()
        for item in self.items:
            if item.id in ids:
                raise ValueError(f"item id {item.id!r} appears twice")
            ids.add(item.id)
            if item.label is not None and item.label not in self.classes:
                raise ValueError(f"item {item.id!r} has label {item.label!r} outside classes")
        return self

    @property
    def content_hash(self) -> str:
        """SHA-256 hex of the canonical JSON of ``classes`` and ``items``."""
        return content_hash(self.classes, self.items)

    @property
    def key(self) -> str:
        """The object key this snapshot is (or would be) stored under."""
        return manifest_key(self.name, self.content_hash)

    def label_index(self, item: DatasetItem) -> int:
        """The item's class index in ``classes``; -1 when it has no label."""
        return -1 if item.label is None else self.classes.index(item.label)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_hash(payload: Any) -> str:
    """SHA-256 hex of the canonical JSON (sorted keys, no whitespace) of ``payload``."""
    return hashlib.sha256(_canonical(payload)).hexdigest()


def content_hash(classes: tuple[str, ...], items: tuple[DatasetItem, ...]) -> str:
    payload = {"classes": list(classes), "items": [item.model_dump(mode="json") for item in items]}
    return canonical_hash(payload)


def manifest_key(name: str, digest: str) -> str:
    return f"{dataset_prefix(name)}{digest}.json"


def write_manifest(store: ObjectStore, manifest: DatasetManifest) -> str:
    """Store the snapshot under ``datasets/<name>/<hash>.json`` and return that key.

    Raises:
        DatasetError: the snapshot has no items.
    """
    if not manifest.items:
        raise DatasetError(f"dataset {manifest.name!r} has no items: nothing to snapshot")
    return put_manifest_json(store, manifest.key, manifest)


def put_manifest_json(store: ObjectStore, key: str, manifest: BaseModel) -> str:
    """Store any kind of dataset manifest as indented JSON under ``key``; return the key."""
    body = json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=True).encode()
    store.put(key, body, content_type="application/json")
    return key


def load_manifest_json(store: ObjectStore, key: str) -> dict[str, Any]:
    """The JSON object under a manifest key (``datasets/<name>/<sha256>.json``).

    Shared by every kind of dataset manifest: the caller validates the object and
    checks it against its key with :func:`check_manifest_key`.

    Raises:
        DatasetError: a key that is not ``datasets/<name>/<sha256>.json``, no object
            under it, or an object that is not JSON with items.
    """
    parts = key.split("/")
    stem = parts[-1].removesuffix(".json")
    if len(parts) != 3 or parts[0] != DATASETS_PREFIX or not parts[-1].endswith(".json"):
        raise DatasetError(f"{key!r} is not a snapshot key (datasets/<name>/<sha256>.json)")
    if not _HASH.match(stem):
        raise DatasetError(f"{key!r} does not end in a SHA-256 hash: not a snapshot key")
    try:
        raw = store.get(key)
    except ObjectNotFoundError:
        raise DatasetError(f"no snapshot under {key!r}") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"snapshot {key!r} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"snapshot {key!r} is not a JSON object")
    if not data.get("items"):
        raise DatasetError(f"snapshot {key!r} has no items")
    return data


def read_manifest(store: ObjectStore, key: str) -> DatasetManifest:
    """The snapshot under ``key``, checked against the hash its key carries.

    Raises:
        DatasetError: no snapshot under the key, a key that is not a snapshot's, an
            unreadable or empty snapshot, a dataset of another kind (detection), or
            content that no longer matches its hash.
    """
    return parse_manifest(key, load_manifest_json(store, key))


def parse_manifest(key: str, data: dict[str, Any]) -> DatasetManifest:
    """The snapshot in ``data`` (loaded from ``key``), checked against its key.

    Raises:
        DatasetError: as :func:`read_manifest`.
    """
    if "kind" in data:
        raise DatasetError(f"{key!r} is a {data['kind']} dataset, not a snapshot of cell crops")
    try:
        manifest = DatasetManifest.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(
            f"snapshot {key!r} is not a valid manifest: {validation_reasons(exc)}"
        ) from None
    check_manifest_key(key, name=manifest.name, digest=manifest.content_hash)
    return manifest


def validation_reasons(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; …``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def check_manifest_key(key: str, *, name: str, digest: str) -> None:
    """Check that a manifest read from ``key`` hashes to, and names, what its key says.

    Raises:
        DatasetError: the content hashes to another digest, or names another dataset.
    """
    parts = key.split("/")
    stem = parts[-1].removesuffix(".json")
    if digest != stem:
        raise DatasetError(
            f"snapshot {key!r} does not match its hash: its content hashes to {digest} "
            "(it was modified after it was written)"
        )
    if name != parts[1]:
        raise DatasetError(
            f"snapshot {key!r} names dataset {name!r}, not {parts[1]!r} as its key says"
        )
