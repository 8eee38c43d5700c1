"""``stainless dataset``: snapshot, import folder|paired|phantom|coco|yolo, show; bad input: 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from stainless.cli.datasets import dataset_app
from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.detection import read_detection_manifest
from stainless.datasets.manifest import read_manifest
from stainless.datasets.phantom import write_phantom_set
from stainless.imaging.codecs import encode_png
from stainless.imaging.phantom_set import phantom_config

from .conftest import Spec, build_world

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("STAINLESS_STORE__ROOT", str(root))
    monkeypatch.setenv("STAINLESS_DATABASE__URL", sqlite_url)
    return root


def key_of(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def test_snapshot_and_show(env: Path, engine: Engine) -> None:
    store = LocalObjectStore(env)
    w = build_world(
        engine,
        store,
        [[Spec(reviews=(("reclassify", "LY"),)), Spec(predicted=("MO",))]],
    )
    done = runner.invoke(dataset_app, ["snapshot", "--name", "r1", "--include-unreviewed"])
    assert done.exit_code == 0, done.output
    key = key_of(done.stdout)
    assert read_manifest(store, key).items[0].id == w.cells[0]
    shown = runner.invoke(dataset_app, ["show", key, "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(key_of(shown.stdout))
    assert info["items"] == 2 and info["classes"] == {"LY": 1, "MO": 1}
    assert info["sources"] == {"prediction": 1, "review": 1}
    assert info["pairs"] == 2 and info["masks"] == 0 and info["slides"] == 1
    table = runner.invoke(dataset_app, ["show", key])
    assert table.exit_code == 0 and "class LY" in table.stdout


def test_bad_input_exits_2(env: Path, tmp_path: Path) -> None:
    none = runner.invoke(dataset_app, ["snapshot", "--name", "empty"])
    assert none.exit_code == 2 and "nothing to snapshot" in none.output
    bad = runner.invoke(dataset_app, ["snapshot", "--name", "a/b"])
    assert bad.exit_code == 2 and "invalid dataset name" in bad.output
    missing = runner.invoke(dataset_app, ["show", f"datasets/x/{'a' * 64}.json"])
    assert missing.exit_code == 2 and "no snapshot under" in missing.output
    odd = runner.invoke(dataset_app, ["show", "../etc/passwd"])
    assert odd.exit_code == 2
    folder = runner.invoke(dataset_app, ["import", "folder", str(tmp_path / "nope"), "-n", "x"])
    assert folder.exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(dataset_app, ["import", "folder", str(tmp_path / "empty"), "-n", "x"])
    assert empty.exit_code == 2 and "nothing to import" in empty.output


def test_import_commands(env: Path, tmp_path: Path) -> None:
    crops = tmp_path / "crops"
    (crops / "lymphocyte").mkdir(parents=True)
    (crops / "lymphocyte" / "a.png").write_bytes(encode_png(np.zeros((16, 16), np.uint16)))
    (crops / "lymphocyte" / "bad.png").write_bytes(b"nope")
    done = runner.invoke(dataset_app, ["import", "folder", str(crops), "--name", "pub"])
    assert done.exit_code == 0, done.output
    assert "bad.png" in done.output and "imported 1 cells" in done.output
    store = LocalObjectStore(env)
    assert read_manifest(store, key_of(done.stdout)).items[0].label == "LY"

    dic, bf = tmp_path / "dic", tmp_path / "bf"
    dic.mkdir()
    bf.mkdir()
    (dic / "c1.png").write_bytes(encode_png(np.zeros((16, 16), np.uint16)))
    (bf / "c1.png").write_bytes(encode_png(np.zeros((16, 16, 3), np.uint8)))
    labels = tmp_path / "labels.csv"
    labels.write_text("stem,label\nc1,EO\n")
    paired = runner.invoke(
        dataset_app, ["import", "paired", str(dic), str(bf), "-n", "pairs", "--labels", str(labels)]
    )
    assert paired.exit_code == 0, paired.output
    item = read_manifest(store, key_of(paired.stdout)).items[0]
    assert item.label == "EO" and item.bf is not None

    phantom = tmp_path / "phantom"
    write_phantom_set(
        LocalObjectStore(phantom),
        slides=1,
        fields=1,
        seed=1,
        config=phantom_config(width=384, height=384),
    )
    ph = runner.invoke(
        dataset_app, ["import", "phantom", str(phantom), "-n", "ph", "--crop-size", "96"]
    )
    assert ph.exit_code == 0, ph.output
    manifest = read_manifest(store, key_of(ph.stdout))
    assert all(i.mask is not None and i.bf is not None for i in manifest.items)


def test_import_coco_yolo_and_show_detection(env: Path, tmp_path: Path) -> None:
    fields = tmp_path / "fields"
    fields.mkdir()
    rgb = np.full((32, 40, 3), 200, np.uint8)
    (fields / "a.png").write_bytes(encode_png(rgb))
    (fields / "b.png").write_bytes(encode_png(rgb))
    (fields / "bad.png").write_bytes(b"nope")
    annotations = tmp_path / "coco.json"
    annotations.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "a.png", "width": 40, "height": 32},
                    {"id": 2, "file_name": "b.png", "width": 40, "height": 32, "pixel_um": 0.1},
                    {"id": 3, "file_name": "bad.png", "width": 40, "height": 32},
                ],
                "annotations": [
                    {"id": 1, "image_id": 1, "bbox": [2, 2, 10, 10], "category_id": 1},
                    {"id": 2, "image_id": 1, "bbox": [20, 2, 10, 12], "category_id": 2},
                ],
                "categories": [{"id": 1, "name": "wbc"}, {"id": 2, "name": "platelet"}],
            }
        )
    )
    coco = runner.invoke(
        dataset_app,
        [
            *("import", "coco", "--annotations", str(annotations), "--images", str(fields)),
            *("-n", "lab", "--modality", "bf", "--pixel-um", "0.075", "--category", "wbc"),
        ],
    )
    assert coco.exit_code == 0, coco.output
    assert "bad.png" in coco.output and "imported 2 fields: 1 white-cell boxes" in coco.output
    key = key_of(coco.stdout)
    shown = runner.invoke(dataset_app, ["show", key, "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(key_of(shown.stdout))
    assert info["kind"] == "detection" and info["modality"] == "bf"
    assert (info["fields"], info["boxes"], info["negatives"]) == (2, 1, 1)
    assert info["pixel_um"] == {"0.075": 1, "0.1": 1}
    assert info["median_box_um"] == 0.75
    table = runner.invoke(dataset_app, ["show", key])
    assert table.exit_code == 0 and "white-cell boxes" in table.stdout

    labels = fields / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.1\n")
    (labels / "b.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    yolo = runner.invoke(
        dataset_app,
        [
            *("import", "yolo", "--images", str(fields), "-n", "y", "--modality", "bf"),
            *("--pixel-um", "0.1", "--classes", "0", "--skip-empty"),
        ],
    )
    assert yolo.exit_code == 0, yolo.output
    manifest = read_detection_manifest(LocalObjectStore(env), key_of(yolo.stdout))
    assert [(i.id, i.boxes) for i in manifest.items] == [("a.png", ((15.0, 12.0, 25.0, 20.0),))]


def said(result: Result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_detection_imports_bad_input_exits_2(env: Path, tmp_path: Path) -> None:
    broken = tmp_path / "coco.json"
    broken.write_text("{")
    coco = ["import", "coco", "--annotations", str(broken), "-n", "x", "--modality", "bf"]
    bad_json = runner.invoke(dataset_app, [*coco, "--pixel-um", "0.1"])
    assert bad_json.exit_code == 2 and "not JSON" in said(bad_json)
    bad_modality = runner.invoke(dataset_app, [*coco[:-1], "rgb", "--pixel-um", "0.1"])
    assert bad_modality.exit_code == 2
    (tmp_path / "imgs").mkdir()
    yolo = ["import", "yolo", "--images", str(tmp_path / "imgs"), "-n", "y", "--modality", "dic"]
    no_labels = runner.invoke(dataset_app, [*yolo, "--pixel-um", "0.1"])
    assert no_labels.exit_code == 2 and "no labels folder" in said(no_labels)
    classes = runner.invoke(dataset_app, [*yolo, "--pixel-um", "0.1", "--classes", "a,b"])
    assert classes.exit_code == 2 and "--classes" in said(classes)
    no_pixel = runner.invoke(dataset_app, yolo)
    assert no_pixel.exit_code == 2
    zero = runner.invoke(dataset_app, [*yolo, "--pixel-um", "0"])
    assert zero.exit_code == 2 and "pixel size" in said(zero)
    assert not (env / "datasets").exists() or list(LocalObjectStore(env).list("datasets/")) == []
