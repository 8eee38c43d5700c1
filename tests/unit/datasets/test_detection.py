"""Detection datasets: COCO and YOLO imports, skips with reasons, hash check, loading."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.detection import (
    MIN_FIELD_PX,
    MODALITIES,
    Box,
    DetectionField,
    DetectionManifest,
    import_coco,
    import_yolo,
    load_annotated_fields,
    read_any_manifest,
    read_detection_manifest,
    write_detection_manifest,
)
from stainless.datasets.images import U8_TO_DIC
from stainless.datasets.importers import import_folder_per_class
from stainless.datasets.manifest import DatasetError, DatasetManifest, read_manifest
from stainless.imaging.codecs import encode_png
from stainless.ml.models.detector import Modality, prepare

from .test_importers import FailingStore

W, H = 48, 40


def rgb(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gray16(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 30000, (height, width), dtype=np.uint16)


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
    return path


def coco(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 1, "name": "wbc"},
            {"id": 2, "name": "lymphocyte"},
            {"id": 3, "name": "rbc"},
        ],
    }


def image(image_id: int, file_name: str, **extra: Any) -> dict[str, Any]:
    return {"id": image_id, "file_name": file_name, "width": W, "height": H, **extra}


def ann(ann_id: int, image_id: Any, bbox: Any, category: int = 1) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": category}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def keys(store: LocalObjectStore) -> list[str]:
    return list(store.list("datasets/"))


# ----------------------------------------------------------------------------- COCO


def test_coco_round_trip_brightfield(tmp_path: Path, store: LocalObjectStore) -> None:
    write_png(tmp_path / "fields" / "a.png", rgb(1))
    tifffile.imwrite(tmp_path / "fields" / "b.tif", rgb(2))
    write_png(tmp_path / "fields" / "c.png", rgb(3))
    data = coco(
        [
            image(1, "fields/a.png"),
            image(2, "fields/b.tif", pixel_um=0.1),
            image(3, "fields/c.png"),
        ],
        [
            ann(10, 1, [2, 3, 10, 12]),
            ann(11, 1, [20.5, 4.25, 8, 8], category=2),
            ann(12, 2, [0, 0, W, H]),
            ann(13, 2, [30, 30, 5, 5], category=3),  # a red cell: not a white cell
        ],
    )
    path = write_json(tmp_path / "coco.json", data)
    ticks: list[tuple[int, int]] = []
    report = import_coco(
        path,
        store,
        name="lab",
        modality="bf",
        pixel_um=0.075,
        categories=["wbc", "lymphocyte"],
        progress=lambda d, t: ticks.append((d, t)),
    )
    assert report.skipped == [] and ticks[-1] == (3, 3)
    assert report.key is not None and report.manifest is not None
    assert (report.imported, report.boxes, report.negatives) == (3, 3, 1)
    manifest = read_detection_manifest(store, report.key)
    assert manifest == report.manifest and manifest.modality == "bf"
    got = {item.id: (item.boxes, item.pixel_um, item.source) for item in manifest.items}
    assert got == {
        "fields/a.png": (((2, 3, 12, 15), (20.5, 4.25, 28.5, 12.25)), 0.075, "import:coco"),
        "fields/b.tif": (((0, 0, W, H),), 0.1, "import:coco"),
        "fields/c.png": ((), 0.075, "import:coco"),
    }
    for item in manifest.items:
        assert item.image.startswith("datasets/lab/objects/") and item.image.endswith(".png")
        assert (item.width, item.height) == (W, H)
    fields = {f.id: f for f in load_annotated_fields(store, manifest)}
    assert np.array_equal(fields["fields/a.png"].image, rgb(1))
    assert np.array_equal(fields["fields/b.tif"].image, rgb(2))
    assert fields["fields/a.png"].image.dtype == np.uint8
    assert fields["fields/b.tif"].boxes == ((0, 0, W, H),)
    assert fields["fields/b.tif"].pixel_um == 0.1
    prepared, _ = prepare(fields["fields/a.png"].image, 0.3, Modality.BRIGHTFIELD)
    assert prepared.shape[0] == 3


def test_coco_dic_and_category_selection(tmp_path: Path, store: LocalObjectStore) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", gray16(1))
    write_png(images / "b.png", np.full((H, W), 255, np.uint8))
    data = coco(
        [image(1, "a.tif"), image(2, "b.png")],
        [ann(1, 1, [1, 1, 10, 10], category=1), ann(2, 2, [5, 5, 10, 10], category=2)],
    )
    path = write_json(tmp_path / "ann" / "coco.json", data)
    report = import_coco(
        path,
        store,
        name="dic",
        modality="dic",
        pixel_um=0.2,
        images=images,
        categories=["lymphocyte"],
    )
    assert report.manifest is not None and report.manifest.modality == "dic"
    assert [(i.id, i.boxes) for i in report.manifest.items] == [
        ("a.tif", ()),
        ("b.png", ((5, 5, 15, 15),)),
    ]
    fields = list(load_annotated_fields(store, report.manifest))
    assert fields[0].image.dtype == np.uint16 and np.array_equal(fields[0].image, gray16(1))
    assert int(fields[1].image.max()) == round(255 * U8_TO_DIC)
    assert prepare(fields[1].image, 0.2, Modality.DIC)[0].shape[0] == 1

    skipped = import_coco(
        path, store, name="dic2", modality="dic", pixel_um=0.2, images=images, skip_empty=True
    )
    assert skipped.manifest is not None and len(skipped.manifest.items) == 2  # all categories
    only = import_coco(
        path,
        store,
        name="dic3",
        modality="dic",
        pixel_um=0.2,
        images=images,
        categories=["lymphocyte"],
        skip_empty=True,
    )
    assert only.manifest is not None and [i.id for i in only.manifest.items] == ["b.png"]
    assert [(s.path, s.reason) for s in only.skipped] == [
        ("a.tif", "no white-cell box (--skip-empty)")
    ]
    with pytest.raises(DatasetError, match=r"no category 'platelet' \(categories: "):
        import_coco(path, store, name="x", modality="dic", pixel_um=0.2, categories=["platelet"])


def test_coco_skips_bad_files_with_reasons(tmp_path: Path, store: LocalObjectStore) -> None:
    write_png(tmp_path / "ok.png", rgb(1))
    write_png(tmp_path / "gray.png", gray16(2))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_png(tmp_path / "small.png", rgb(3, width=30))
    write_png(tmp_path / "outside.png", rgb(4))
    write_png(tmp_path / "flat.png", rgb(5))
    write_png(tmp_path / "badbox.png", rgb(6))
    write_png(tmp_path / "edge.png", rgb(7))
    write_png(tmp_path / "tiny.png", rgb(8, width=12, height=12))
    write_png(tmp_path / "cat.png", rgb(9))
    data = coco(
        [
            image(1, "ok.png"),
            image(2, "gray.png"),
            image(3, "broken.png"),
            image(4, "small.png"),
            image(5, "missing.png"),
            image(6, "outside.png"),
            image(7, "flat.png"),
            image(8, "badbox.png"),
            image(9, "edge.png"),
            {"id": 10, "file_name": "nosize.png"},
            image(11, "../escape.png"),
            image(1, "dup.png"),
            {"id": 12, "file_name": "tiny.png", "width": 12, "height": 12},
            image(13, "cat.png"),
            image(14, "ok.png", pixel_um=-1),
        ],
        [
            ann(1, 1, [1, 1, 5, 5]),
            ann(2, 6, [40, 30, 20, 20]),
            ann(3, 7, [10, 10, 0, 5]),
            ann(4, 8, [1, 2, 3]),
            ann(5, 9, [-0.3, 0, W + 0.5, 10]),  # rounding at the edge: clipped
            ann(6, 99, [1, 1, 2, 2]),
            ann(7, 13, [1, 1, 2, 2], category=42),
            ann(8, 10, [1, 1, 2, 2]),  # its image entry is bad: reported once, there
        ],
    )
    path = write_json(tmp_path / "coco.json", data)
    report = import_coco(path, store, name="mixed", modality="bf", pixel_um=0.1)
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {
        "gray.png",
        "broken.png",
        "small.png",
        "missing.png",
        "outside.png",
        "flat.png",
        "badbox.png",
        "nosize.png",
        "../escape.png",
        "dup.png",
        "tiny.png",
        "cat.png",
        "coco.json: annotation 6",
        "ok.png",  # the second entry with a bad pixel_um
    }
    assert "wrong channel count" in skipped["gray.png"]
    assert "undecodable" in skipped["broken.png"]
    assert skipped["small.png"] == "image is 30x40 but the annotations say 48x40"
    assert "unreadable" in skipped["missing.png"]
    assert "lies outside the 48x40 image" in skipped["outside.png"]
    assert "degenerate" in skipped["flat.png"]
    assert "annotation 4: bbox is not [x, y, width, height]" in skipped["badbox.png"]
    assert "width and height must be positive integers" in skipped["nosize.png"]
    assert "leaves the images folder" in skipped["../escape.png"]
    assert "appears twice" in skipped["dup.png"]
    assert "the detector needs 16 pixels a side" in skipped["tiny.png"]
    assert "unknown category id 42" in skipped["cat.png"]
    assert skipped["coco.json: annotation 6"] == "unknown image id 99"
    assert "pixel_um must be a number > 0" in skipped["ok.png"]
    assert report.manifest is not None
    assert {i.id: i.boxes for i in report.manifest.items} == {
        "ok.png": ((1, 1, 6, 6),),
        "edge.png": ((0, 0, W, 10),),
    }


def test_coco_wholly_bad_input_leaves_nothing(tmp_path: Path, store: LocalObjectStore) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="are not JSON"):
        import_coco(bad, store, name="x", modality="bf", pixel_um=0.1)
    with pytest.raises(DatasetError, match="cannot read annotations"):
        import_coco(tmp_path / "none.json", store, name="x", modality="bf", pixel_um=0.1)
    shape = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(DatasetError, match="not COCO: no list of images"):
        import_coco(shape, store, name="x", modality="bf", pixel_um=0.1)
    write_png(tmp_path / "a.png", rgb(1))
    write_png(tmp_path / "b.png", rgb(2))
    negatives = write_json(tmp_path / "neg.json", coco([image(1, "a.png"), image(2, "b.png")], []))
    with pytest.raises(DatasetError, match="none of its 2 fields has a white-cell box"):
        import_coco(negatives, store, name="neg", modality="bf", pixel_um=0.1)
    assert keys(store) == []  # the two field images it wrote are removed again
    with pytest.raises(DatasetError, match="no usable field"):
        import_coco(negatives, store, name="neg", modality="dic", pixel_um=0.1)
    with pytest.raises(DatasetError, match="pass --pixel-um"):
        import_coco(negatives, store, name="neg", modality="bf")
    with pytest.raises(DatasetError, match=r"images folder .* is not a folder"):
        import_coco(negatives, store, name="n", modality="bf", pixel_um=0.1, images=tmp_path / "x")
    with pytest.raises(DatasetError, match="modality must be one of bf, dic"):
        import_coco(negatives, store, name="n", modality="rgb", pixel_um=0.1)
    with pytest.raises(DatasetError, match="pixel size must be a finite number > 0"):
        import_coco(negatives, store, name="n", modality="bf", pixel_um=0.0)
    with pytest.raises(DatasetError, match="invalid dataset name"):
        import_coco(negatives, store, name="a/b", modality="bf", pixel_um=0.1)
    good = write_json(
        tmp_path / "good.json",
        coco([image(1, "a.png"), image(2, "b.png")], [ann(1, 1, [1, 1, 4, 4])]),
    )
    failing = FailingStore(store, fail_at=2)
    with pytest.raises(OSError, match="went away"):
        import_coco(good, failing, name="half", modality="bf", pixel_um=0.1)  # type: ignore[arg-type]
    assert keys(store) == []


# ----------------------------------------------------------------------------- YOLO


def yolo_line(cls: int, box: tuple[float, float, float, float], w: int = W, h: int = H) -> str:
    x0, y0, x1, y1 = box
    return f"{cls} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"


def same_boxes(got: tuple[Box, ...], want: tuple[Box, ...]) -> bool:
    """Equal to the 1e-4 px the boxes are stored at (normalised coordinates lose a little)."""
    return len(got) == len(want) and np.allclose(np.array(got), np.array(want), atol=1e-4)


def test_yolo_round_trip(tmp_path: Path, store: LocalObjectStore) -> None:
    images = tmp_path / "images"
    write_png(images / "a.png", rgb(1))
    write_png(images / "sub" / "b.png", rgb(2))
    write_png(images / "c.png", rgb(3))
    labels = images / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text(
        "\n".join([yolo_line(0, (2, 3, 12, 15)), yolo_line(1, (20, 4, 28, 12)), ""])
    )
    (labels / "sub").mkdir()
    (labels / "sub" / "b.txt").write_text(yolo_line(2, (0, 0, W, H)) + "\n")
    (labels / "classes.txt").write_text("wbc\nlymphocyte\nrbc\n")
    (labels / "orphan.txt").write_text(yolo_line(0, (1, 1, 3, 3)))
    report = import_yolo(images, store, name="yolo", modality="bf", pixel_um=0.075, classes=[0, 1])
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("labels/orphan.txt", "no image with this stem")
    ]
    assert report.key is not None
    manifest = read_detection_manifest(store, report.key)
    got = {item.id: item.boxes for item in manifest.items}
    assert set(got) == {"a.png", "sub/b.png", "c.png"}
    assert same_boxes(got["a.png"], ((2, 3, 12, 15), (20, 4, 28, 12)))
    assert got["sub/b.png"] == () and got["c.png"] == ()  # class 2 left out; no label file
    assert manifest.negatives == 2 and manifest.boxes == 2
    assert all(item.source == "import:yolo" and item.pixel_um == 0.075 for item in manifest.items)
    fields = {f.id: f for f in load_annotated_fields(store, manifest)}
    assert np.array_equal(fields["sub/b.png"].image, rgb(2))

    every = import_yolo(images, store, name="yolo2", modality="bf", pixel_um=0.075, skip_empty=True)
    assert every.manifest is not None
    assert [i.id for i in every.manifest.items] == ["a.png", "sub/b.png"]
    assert every.manifest.items[1].boxes == ((0, 0, W, H),)


def test_yolo_layouts_and_skips(tmp_path: Path, store: LocalObjectStore) -> None:
    root = tmp_path / "ds"
    images, labels = root / "images", root / "labels"
    for stem in ("ok", "bad", "out", "flat", "cls"):
        write_png(images / f"{stem}.png", rgb(len(stem)))
    write_png(images / "ok.jpg", rgb(9))  # a second image of the stem "ok"
    write_png(images / "gray.png", gray16(1))
    (images / "notes.md").write_text("hello")
    labels.mkdir()
    (labels / "ok.txt").write_text(yolo_line(0, (4, 4, 20, 20)))
    (labels / "bad.txt").write_text(yolo_line(0, (4, 4, 20, 20)) + "\n0 0.5 0.5 0.1\n")
    (labels / "out.txt").write_text("0 0.95 0.5 0.3 0.2\n")
    (labels / "flat.txt").write_text("0 0.5 0.5 0 0.2\n")
    (labels / "cls.txt").write_text("x 0.5 0.5 0.2 0.2\n")
    report = import_yolo(images, store, name="sibling", modality="bf", pixel_um=0.1)
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {"ok.png", "bad.png", "out.png", "flat.png", "cls.png", "gray.png"} | {
        "notes.md"
    }
    assert "another image has the stem 'ok'" in skipped["ok.png"]
    assert "labels/bad.txt: line 2: expected 'class cx cy w h'" in skipped["bad.png"]
    assert "lies outside the 48x40 image; the field is skipped" in skipped["out.png"]
    assert "degenerate" in skipped["flat.png"]
    assert "line 1: expected" in skipped["cls.png"]
    assert "wrong channel count" in skipped["gray.png"]
    assert "not an image file" in skipped["notes.md"]
    assert report.manifest is not None
    assert [(i.id, i.boxes) for i in report.manifest.items] == [("ok.jpg", ((4, 4, 20, 20),))]

    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "ok.txt").write_text(yolo_line(0, (1, 2, 3, 4)))
    moved = import_yolo(images, store, name="moved", modality="bf", pixel_um=0.1, labels=other)
    assert moved.manifest is not None
    assert same_boxes({i.id: i.boxes for i in moved.manifest.items}["ok.jpg"], ((1, 2, 3, 4),))


def test_yolo_wholly_bad_input(tmp_path: Path, store: LocalObjectStore) -> None:
    images = tmp_path / "imgs"
    write_png(images / "a.png", rgb(1))
    with pytest.raises(DatasetError, match="no labels folder"):
        import_yolo(images, store, name="y", modality="bf", pixel_um=0.1)
    with pytest.raises(DatasetError, match=r"images folder .* is not a folder"):
        import_yolo(tmp_path / "nope", store, name="y", modality="bf", pixel_um=0.1)
    with pytest.raises(DatasetError, match=r"labels folder .* is not a folder"):
        import_yolo(images, store, name="y", modality="bf", pixel_um=0.1, labels=tmp_path / "l")
    (images / "labels").mkdir()
    with pytest.raises(DatasetError, match="none of its 1 fields has a white-cell box"):
        import_yolo(images, store, name="y", modality="bf", pixel_um=0.1)
    (images / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match="no usable field"):
        import_yolo(images, store, name="y", modality="dic", pixel_um=0.1)
    with pytest.raises(DatasetError, match="finite number > 0"):
        import_yolo(images, store, name="y", modality="bf", pixel_um=float("nan"))
    assert keys(store) == []


# ----------------------------------------------------------------------------- manifest


def field(**changes: Any) -> DetectionField:
    values: dict[str, Any] = {
        "id": "f1",
        "image": "datasets/d/objects/f1.png",
        "width": W,
        "height": H,
        "pixel_um": 0.1,
        "boxes": ((1.0, 2.0, 10.0, 12.0),),
        "source": "import:coco",
    }
    values.update(changes)
    return DetectionField.model_validate(values)


def detection(name: str = "d", day: int = 1, **changes: Any) -> DetectionManifest:
    values: dict[str, Any] = {
        "name": name,
        "created_at": datetime(2026, 1, day, tzinfo=UTC),
        "modality": "bf",
        "items": (field(), field(id="f2", boxes=())),
        "description": f"day {day}",
    }
    values.update(changes)
    return DetectionManifest.model_validate(values)


def test_hash_covers_fields_and_modality_not_name_or_date() -> None:
    assert detection("a", 1).content_hash == detection("b", 2).content_hash
    assert detection().content_hash != detection(modality="dic").content_hash
    moved = (field(boxes=((1.0, 2.0, 10.0, 13.0),)), field(id="f2", boxes=()))
    assert detection().content_hash != detection(items=moved).content_hash
    assert detection().key == f"datasets/d/{detection().content_hash}.json"


def test_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="not inside the 48x40 image"):
        field(boxes=((1, 2, 49, 12),))
    with pytest.raises(ValidationError, match="empty or not inside"):
        field(boxes=((5, 2, 5, 12),))
    with pytest.raises(ValidationError, match="pixel size > 0"):
        field(pixel_um=0)
    with pytest.raises(ValidationError, match="appears twice"):
        detection(items=(field(), field()))
    with pytest.raises(ValidationError, match="modality"):
        detection(modality="rgb")


def test_content_hash_check(store: LocalObjectStore) -> None:
    manifest = detection()
    key = write_detection_manifest(store, manifest)
    assert read_detection_manifest(store, key) == manifest
    assert read_any_manifest(store, key) == manifest
    with pytest.raises(DatasetError, match="is a detection dataset, not a snapshot of cell crops"):
        read_manifest(store, key)
    data = json.loads(store.get(key))
    data["items"][0]["boxes"][0][2] = 11.0
    store.put(key, json.dumps(data).encode())
    with pytest.raises(DatasetError, match="does not match its hash"):
        read_detection_manifest(store, key)
    moved = f"datasets/other/{manifest.content_hash}.json"
    store.put(moved, json.dumps(manifest.model_dump(mode="json")).encode())
    with pytest.raises(DatasetError, match="names dataset 'd'"):
        read_detection_manifest(store, moved)
    with pytest.raises(DatasetError, match="no snapshot under"):
        read_detection_manifest(store, f"datasets/d/{'0' * 64}.json")
    with pytest.raises(DatasetError, match="has no fields"):
        write_detection_manifest(store, detection(items=()))


def test_crop_snapshots_are_not_detection_datasets(tmp_path: Path, store: LocalObjectStore) -> None:
    write_png(tmp_path / "wbc" / "LY" / "a.png", gray16(1, 24, 24))
    report = import_folder_per_class(tmp_path / "wbc", store, name="crops")
    assert report.key is not None
    with pytest.raises(DatasetError, match="not a detection dataset"):
        read_detection_manifest(store, report.key)
    assert isinstance(read_any_manifest(store, report.key), DatasetManifest)


def test_load_checks_the_stored_images(store: LocalObjectStore) -> None:
    store.put("datasets/d/objects/f1.png", encode_png(rgb(1, width=40)))
    with pytest.raises(DatasetError, match="is 40x40, the manifest says 48x40"):
        list(load_annotated_fields(store, detection(items=(field(),))))
    with pytest.raises(DatasetError, match="no image under"):
        list(load_annotated_fields(store, detection(items=(field(id="x", image="a/b.png"),))))
    with pytest.raises(DatasetError, match="wrong channel count"):
        list(load_annotated_fields(store, detection(modality="dic", items=(field(),))))


def test_constants_match_the_detector() -> None:
    assert tuple(m.value for m in Modality) == MODALITIES
    prepare(gray16(1, MIN_FIELD_PX, MIN_FIELD_PX), 0.3, Modality.DIC)
    with pytest.raises(ValueError, match="at least 16x16"):
        prepare(gray16(1, MIN_FIELD_PX - 1, MIN_FIELD_PX), 0.3, Modality.DIC)
