"""Dataset snapshots for retraining: the manifest format, DB snapshots, importers.

``manifest`` is the contract (``datasets/<name>/<sha256>.json``); ``snapshot`` builds one
from the reviewed cells in the database; ``importers`` bring outside crops in;
``torch_data.ManifestDataset`` (imported from its module: it needs torch) reads one
for training.
"""

from __future__ import annotations

from stainless.datasets.importers import (
    ImportReport,
    SkippedFile,
    class_code,
    import_folder_per_class,
    import_paired_folders,
    import_phantom,
)
from stainless.datasets.manifest import (
    CLASSES,
    DatasetError,
    DatasetItem,
    DatasetManifest,
    read_manifest,
    write_manifest,
)
from stainless.datasets.snapshot import SkippedCell, build_snapshot

__all__ = [
    "CLASSES",
    "DatasetError",
    "DatasetItem",
    "DatasetManifest",
    "ImportReport",
    "SkippedCell",
    "SkippedFile",
    "build_snapshot",
    "class_code",
    "import_folder_per_class",
    "import_paired_folders",
    "import_phantom",
    "read_manifest",
    "write_manifest",
]
