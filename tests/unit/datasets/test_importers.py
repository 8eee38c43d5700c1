"""Importers on tiny generated folders: classes, pairs, phantom crops, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile

from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.images import U8_TO_DIC, decode_image
from stainless.datasets.importers import (
    class_code,
    import_folder_per_class,
    import_paired_folders,
    import_phantom,
)
from stainless.datasets.manifest import DatasetError, read_manifest
from stainless.datasets.phantom import write_phantom_set
from stainless.imaging.codecs import encode_png
from stainless.imaging.phantom_set import phantom_config


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
    return path


def gray16(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 30000, (size, size), dtype=np.uint16)


def rgb8(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_set(
        LocalObjectStore(root),
        slides=1,
        fields=2,
        seed=0,
        config=phantom_config(width=512, height=512),
    )
    return root


class FailingStore:
    """A local store whose n-th put fails, as a store going away mid-import would."""

    def __init__(self, inner: LocalObjectStore, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts == self.fail_at:
            raise OSError("store went away")
        return self.inner.put(key, data, **kwargs)


@pytest.mark.parametrize(
    ("folder", "code"),
    [
        ("LY", "LY"),
        ("sne", "SNE"),
        ("Neutrophils", "SNE"),
        ("lymphocyte", "LY"),
        ("MONOCYTE", "MO"),
        ("eosinophil", "EO"),
        ("basophils", "BA"),
        ("smudge_cells", "SMU"),
        ("Artefact", "ART"),
        ("platelet", None),
        ("ig", None),
    ],
)
def test_class_folder_names(folder: str, code: str | None) -> None:
    assert class_code(folder) == code


def make_class_folders(src: Path) -> None:
    write_png(src / "LY" / "a16.png", gray16(1))
    write_png(src / "LY" / "b8.png", np.full((24, 24), 255, np.uint8))
    tifffile.imwrite(src / "LY" / "c.tif", gray16(3))
    ok, jpeg = cv2.imencode(".jpg", np.full((24, 24), 128, np.uint8))
    assert ok
    (src / "Neutrophils").mkdir()
    (src / "Neutrophils" / "d.jpg").write_bytes(jpeg.tobytes())
    write_png(src / "EO" / "rgb.png", rgb8(4))
    (src / "EO" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (src / "EO" / "empty.png").write_bytes(b"")
    (src / "EO" / "notes.txt").write_text("hello")
    write_png(src / "platelet" / "p.png", gray16(5))
    (src / "loose.png").write_bytes(encode_png(gray16(6)))


def test_folder_per_class(tmp_path: Path, store: LocalObjectStore) -> None:
    src = tmp_path / "wbc"
    make_class_folders(src)
    report = import_folder_per_class(src, store, name="public")
    assert report.imported == 4 and report.key is not None and report.manifest is not None
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {
        "EO/rgb.png",
        "EO/broken.png",
        "EO/empty.png",
        "EO/notes.txt",
        "platelet",
        "loose.png",
    }
    assert "wrong channel count" in skipped["EO/rgb.png"]
    assert "undecodable" in skipped["EO/broken.png"]
    assert "empty file" in skipped["EO/empty.png"]
    assert "not an image" in skipped["EO/notes.txt"]
    assert "unknown class folder" in skipped["platelet"]
    manifest = read_manifest(store, report.key)
    assert [(i.id, i.label, i.source) for i in manifest.items] == [
        ("LY/a16.png", "LY", "import:folder"),
        ("LY/b8.png", "LY", "import:folder"),
        ("LY/c.tif", "LY", "import:folder"),
        ("Neutrophils/d.jpg", "SNE", "import:folder"),
    ]
    first, eight_bit = (decode_image(store.get(i.dic)) for i in manifest.items[:2])
    assert first.dtype == np.uint16 and np.array_equal(first, gray16(1))
    assert eight_bit.dtype == np.uint16 and int(eight_bit.max()) == round(255 * U8_TO_DIC)
    for item in manifest.items:
        assert item.dic.startswith("datasets/public/objects/") and item.dic.endswith(".png")
        assert item.bf is None and item.mask is None


def test_nothing_half_imported(tmp_path: Path, store: LocalObjectStore) -> None:
    src = tmp_path / "wbc"
    make_class_folders(src)
    failing = FailingStore(store, fail_at=3)
    with pytest.raises(OSError, match="went away"):
        import_folder_per_class(src, failing, name="broken")  # type: ignore[arg-type]
    assert list(store.list("datasets/")) == []
    bad = tmp_path / "bad"
    (bad / "LY").mkdir(parents=True)
    (bad / "LY" / "x.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="nothing to import"):
        import_folder_per_class(bad, store, name="bad")
    assert list(store.list("datasets/")) == []
    with pytest.raises(DatasetError, match="not a folder"):
        import_folder_per_class(tmp_path / "nope", store, name="x")


def test_paired_folders(tmp_path: Path, store: LocalObjectStore) -> None:
    dic, bf = tmp_path / "dic", tmp_path / "bf"
    for stem in "abcd":
        write_png(dic / f"{stem}.png", gray16(ord(stem)))
    write_png(bf / "a.png", rgb8(1))
    rgba = np.dstack([rgb8(2), np.full((24, 24), 255, np.uint8)])
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    (bf / "b.png").write_bytes(cv2.imencode(".png", bgra)[1].tobytes())
    write_png(bf / "d.png", rgb8(4, size=30))
    write_png(bf / "e.png", rgb8(5))
    write_png(dic / "g.png", rgb8(6))
    labels = tmp_path / "labels.csv"
    labels.write_text("stem,label\na,lymphocyte\nb,XX\nc,MO\n")
    report = import_paired_folders(dic, bf, store, name="pairs", labels_csv=labels)
    assert report.key is not None
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {"labels.csv:3", "bf/d.png", "bf/e.png", "dic/g.png"}
    assert "not a registered pair" in skipped["bf/d.png"]
    assert "no DIC crop" in skipped["bf/e.png"]
    assert "wrong channel count" in skipped["dic/g.png"]
    manifest = read_manifest(store, report.key)
    got = [(i.id, i.label, i.bf is not None, i.source) for i in manifest.items]
    assert got == [
        ("a", "LY", True, "import:paired"),
        ("b", None, True, "import:paired"),
        ("c", "MO", False, "import:paired"),
    ]
    a_bf = decode_image(store.get(manifest.items[0].bf or ""))
    b_bf = decode_image(store.get(manifest.items[1].bf or ""))
    assert a_bf.dtype == np.uint8 and np.array_equal(a_bf, rgb8(1))
    assert np.array_equal(b_bf, rgb8(2))  # alpha dropped, RGB order kept


def test_paired_labels_csv_needs_its_columns(tmp_path: Path, store: LocalObjectStore) -> None:
    write_png(tmp_path / "dic" / "a.png", gray16(1))
    (tmp_path / "bf").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("name;what\n")
    with pytest.raises(DatasetError, match="needs a header"):
        import_paired_folders(tmp_path / "dic", tmp_path / "bf", store, name="p", labels_csv=labels)


def test_phantom(phantom_dir: Path, store: LocalObjectStore) -> None:
    truth = json.loads((phantom_dir / "manifest.json").read_text())
    cells = [
        (f["index"], i, c)
        for s in truth["slides"]
        for f in s["fields"]
        for i, c in enumerate(f["cells"])
        if not c["at_border"]
    ]
    ticks: list[tuple[int, int]] = []
    report = import_phantom(
        phantom_dir, store, name="ph", crop_size=128, progress=lambda d, t: ticks.append((d, t))
    )
    assert ticks[-1] == (2, 2)
    assert report.key is not None and report.imported == len(cells) > 0
    manifest = read_manifest(store, report.key)
    assert [i.label for i in manifest.items] == [c["class"] for _, _, c in cells]
    for item in manifest.items:
        assert item.source == "phantom" and item.slide_id == "slide_000"
        dic = decode_image(store.get(item.dic))
        bf = decode_image(store.get(item.bf or ""))
        mask = decode_image(store.get(item.mask or ""))
        assert dic.shape == (128, 128) and dic.dtype == np.uint16
        assert bf.shape == (128, 128, 3) and bf.dtype == np.uint8
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 1, 2, 3}
        assert mask[64, 64] in (2, 3)  # the crop is centred on the white cell


def test_phantom_bad_field_is_reported(
    phantom_dir: Path, tmp_path: Path, store: LocalObjectStore
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(phantom_dir, copy)
    (copy / "slide_000" / "field_001_bf.png").write_bytes(b"garbage")
    report = import_phantom(copy, store, name="ph2", crop_size=64)
    assert [s.path for s in report.skipped] == ["slide_000/field_001_bf.png"]
    assert report.manifest is not None
    assert all("field_000" in i.id for i in report.manifest.items)
    with pytest.raises(DatasetError, match="no phantom set"):
        import_phantom(tmp_path, store, name="none")
