"""Training and evaluation of the learned white-cell detector on phantom fields."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pydantic import ValidationError

from stainless.core.storage.local import LocalObjectStore
from stainless.datasets.detection import import_yolo
from stainless.datasets.manifest import DatasetError
from stainless.imaging.detection import Detection
from stainless.imaging.phantom import generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.ml.models.detector import LearnedDetector, Modality
from stainless_training.config import ConfigError
from stainless_training.detector import (
    CHECKPOINT_NAME,
    DetectorTrainConfig,
    DetectorWorkload,
    FieldPool,
    PreparedField,
    annotated_fields,
    calibrate_threshold,
    choose_threshold,
    crop_rng,
    detector_from_checkpoint,
    evaluate_detector,
    learning_rate,
    load_detector_config,
    pick_negative,
    prepare_field,
    random_crop,
    random_dihedral,
    train_detector,
    truth_boxes,
)
from stainless_training.runs import CHECKPOINT

# A few seconds: two small fields, 64 px crops, a 4-channel network.
TINY = DetectorTrainConfig(
    steps=3,
    batch_size=2,
    crop_px=64,
    field_um=40.0,
    pool_size=2,
    refresh_every=1,
    width=4,
    random_acquisition_fraction=0.5,
    warmup_steps=1,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_detector(TINY, tmp_path_factory.mktemp("detector"))


def test_a_tiny_run_writes_a_checkpoint_the_detector_loads(tiny_run: Path) -> None:
    assert tiny_run.name == CHECKPOINT_NAME and tiny_run.is_file()
    saved = yaml.safe_load((tiny_run.parent / "detector.yaml").read_text())
    assert DetectorTrainConfig.model_validate(saved) == TINY
    detector = LearnedDetector.load(tiny_run, pixel_um=0.075, threshold=0.0, max_detections=3)
    assert detector.config.width == 4 and detector.config.modality is Modality.BRIGHTFIELD
    field = generate_field(phantom_config(width=256, height=256), field_rng(9, 0, 0))
    found = detector.detect(field.bf)
    assert 1 <= len(found) <= 3 and all(isinstance(d, Detection) for d in found)


def test_evaluation_counts_every_cell(tiny_run: Path) -> None:
    result = evaluate_detector(tiny_run, fields=2, seed=4, width=256, height=256)
    assert result["fields"] == 2 and result["modality"] == "bf"
    assert result["tp"] + result["fn"] == result["cells"] > 0
    assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    with pytest.raises(ValueError, match="fields"):
        evaluate_detector(tiny_run, fields=0, seed=4)


def _row(threshold: float, precision: float, recall: float) -> dict[str, float]:
    return {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
    }


def test_the_threshold_balances_precision_and_recall_rather_than_f1() -> None:
    # F1 is highest at 0.5 (0.929), where recall is 0.883; at 0.45 both pass 0.9.
    table = [_row(0.4, 0.895, 0.929), _row(0.45, 0.938, 0.901), _row(0.5, 0.980, 0.883)]
    assert max(table, key=lambda row: row["f1"])["threshold"] == 0.5
    assert choose_threshold(table) == 0.45
    # Equal balance: the higher F1, then the lower threshold.
    assert choose_threshold([_row(0.3, 0.8, 0.9), _row(0.6, 0.9, 0.8), _row(0.7, 0.8, 0.8)]) == 0.3
    with pytest.raises(ValueError, match="empty"):
        choose_threshold([])


def test_calibration_stores_the_chosen_threshold_in_the_checkpoint(
    tiny_run: Path, tmp_path: Path
) -> None:
    path = tmp_path / "detector.pt"
    shutil.copy(tiny_run, path)
    thresholds = (0.1, 0.5, 0.9)
    calibration = calibrate_threshold(
        path, fields=2, seed=5, thresholds=thresholds, width=256, height=256
    )
    table = calibration["table"]
    assert [row["threshold"] for row in table] == list(thresholds)
    cells = {row["tp"] + row["fn"] for row in table}
    assert len(cells) == 1 and cells.pop() > 0  # the same cells at every threshold
    assert [row["tp"] + row["fp"] for row in table] == sorted(
        (row["tp"] + row["fp"] for row in table), reverse=True
    )  # fewer reported as the threshold rises
    chosen = choose_threshold(table)
    assert calibration["threshold"] == chosen
    assert LearnedDetector.load(path, pixel_um=0.075).threshold == chosen
    assert evaluate_detector(path, fields=1, seed=5, width=256, height=256)["threshold"] == chosen


def test_a_short_run_lowers_the_loss(tmp_path: Path) -> None:
    config = DetectorTrainConfig(
        steps=40,
        batch_size=4,
        crop_px=96,
        field_um=50.0,
        pool_size=3,
        refresh_every=1000,  # one fixed pool: cheap, and the loss is comparable
        random_acquisition_fraction=0.0,
        width=8,
        warmup_steps=5,
        learning_rate=3e-3,
    )
    losses: list[float] = []
    train_detector(config, tmp_path, on_step=lambda _, logs: losses.append(logs["detection"]))
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)


def test_dic_training_uses_one_channel(tmp_path: Path) -> None:
    config = TINY.model_copy(update={"modality": Modality.DIC, "steps": 1})
    path = train_detector(config, tmp_path)
    detector = LearnedDetector.load(path, pixel_um=0.075, threshold=0.0)
    assert detector.config.channels == 1
    field = generate_field(phantom_config(width=256, height=256), field_rng(9, 0, 0))
    assert isinstance(detector.detect(field.dic), list)


def test_runs_are_reproducible(tmp_path: Path) -> None:
    config = TINY.model_copy(update={"steps": 2, "random_acquisition_fraction": 0.0})
    a = torch.load(train_detector(config, tmp_path / "a"), weights_only=True)
    b = torch.load(train_detector(config, tmp_path / "b"), weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_config_checks_its_values() -> None:
    with pytest.raises(ValidationError, match="multiple of 16"):
        DetectorTrainConfig(crop_px=100)
    with pytest.raises(ValidationError, match="stride"):
        DetectorTrainConfig(stride=3)
    with pytest.raises(ValidationError):
        DetectorTrainConfig(modality="phase")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        DetectorTrainConfig(unknown=1)  # type: ignore[call-arg]


def test_learning_rate_warms_up_then_decays() -> None:
    config = DetectorTrainConfig(steps=100, warmup_steps=10, learning_rate=1e-3)
    rates = [learning_rate(config, step) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(config.final_lr_fraction * 1e-3, rel=0.05)


def test_pool_fields_vary_in_pixel_size_not_in_microns() -> None:
    config = DetectorTrainConfig(
        pool_size=4, field_um=40.0, random_acquisition_fraction=1.0, crop_px=64, batch_size=3
    )
    pool = FieldPool(config)
    assert len({f.image.shape[1] for f in pool.fields}) > 1  # 256 px fields at coarse pixels
    assert all(f.image.shape[0] == 3 and f.image.shape[1] >= 133 for f in pool.fields)
    images, targets = pool.batch(np.random.default_rng(0))
    assert images.shape == (3, 3, 64, 64) and targets.heatmap.shape == (3, 1, 16, 16)
    first = pool.fields[0]
    pool.refresh()
    assert pool.fields[0] is not first and len(pool.fields) == 4 and pool.drawn == 5


def test_smear_objects_are_no_targets() -> None:
    config = phantom_config(width=512, height=512, acquisition="platelets")
    field = generate_field(config, field_rng(2, 0, 0))
    assert field.smear_objects  # platelets and clumps in the field...
    prepared = prepare_field(field, config.pixel_um, DetectorTrainConfig().detector_config())
    truth = truth_boxes(field, "bf")
    assert len(prepared.boxes) == len(truth) == len(field.cells)  # ...but only cells as targets
    for box, cell in zip(prepared.boxes, truth, strict=True):  # in working pixels
        assert box == pytest.approx(tuple(v * 0.25 for v in cell))
    shown = [b for b in (o.box_bf for o in field.smear_objects) if b[2] > b[0] and b[3] > b[1]]
    assert len(prepared.negatives) == len(shown) > 0  # kept apart, for hard-negative crops
    kinds = [str(o.kind) for o in field.smear_objects if o.box_bf in shown]
    assert list(prepared.negative_kinds) == kinds


def test_each_kind_of_smear_object_is_centred_on_as_often() -> None:
    """One clump among 99 grains of precipitate: drawn about half the time, not 1%."""
    boxes = tuple((float(i), 0.0, i + 1.0, 1.0) for i in range(100))
    kinds = ("platelet_clump",) + ("precipitate",) * 99
    field = PreparedField(np.zeros((1, 8, 8), np.float32), (), boxes, kinds)
    rng = np.random.default_rng(0)
    picks = [pick_negative(field, rng) for _ in range(2000)]
    clumps = sum(p == boxes[0] for p in picks)
    assert 900 < clumps < 1100
    unknown = PreparedField(field.image, (), boxes)  # kinds unknown: every object alike
    assert sum(pick_negative(unknown, rng) == boxes[0] for _ in range(2000)) < 60


def test_crops_clip_cells_and_drop_slivers() -> None:
    image = np.zeros((1, 100, 100), np.float32)
    field = PreparedField(image, ((10.0, 10.0, 50.0, 50.0), (80.0, 80.0, 120.0, 120.0)))
    rng = np.random.default_rng(0)
    crop, boxes = random_crop(field, 100, rng, min_visible=0.6)
    assert crop.shape == (1, 100, 100)
    assert boxes == [(10.0, 10.0, 50.0, 50.0)]  # the other shows 20 of its 40 px
    _, boxes = random_crop(field, 100, rng, min_visible=0.5)
    assert len(boxes) == 2 and boxes[1] == (80.0, 80.0, 100.0, 100.0)


def test_crops_can_centre_on_a_smear_object() -> None:
    image = np.zeros((1, 400, 400), np.float32)
    image[0, 300:310, 40:50] = 1.0  # a platelet at (45, 305)
    field = PreparedField(image, (), negatives=((40.0, 300.0, 50.0, 310.0),))
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop, boxes = random_crop(field, 64, rng, min_visible=0.3, centre=(45.0, 305.0))
        assert crop.sum() == 100 and boxes == []  # in view, and no target


def test_flips_move_boxes_with_the_image() -> None:
    crop = np.zeros((1, 64, 64), np.float32)
    crop[0, 10:20, 30:50] = 1.0  # x 30..50, y 10..20
    for seed in range(8):
        out, (box,) = random_dihedral(crop, [(30.0, 10.0, 50.0, 20.0)], np.random.default_rng(seed))
        x0, y0, x1, y1 = (int(v) for v in box)
        assert out[0, y0:y1, x0:x1].sum() == 200 == out.sum()


# ----------------------------------------------------------------------------- the workload

# 4 steps, a new field after each (so a resumed pool must be redrawn), no random acquisition
RESUMABLE = TINY.model_copy(
    update={"steps": 4, "refresh_every": 1, "random_acquisition_fraction": 0.0}
)


def _weights(work: DetectorWorkload) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in work.model.state_dict().items()}


def test_a_workload_step_trains_at_the_schedule_rate_and_renews_the_pool() -> None:
    work = DetectorWorkload(TINY)
    assert list(work.labels) == [0, 1] and work.batch_size == 2
    assert len(work.modules) == 1 and len(work.optimizers) == 1
    before, first = _weights(work), work.pool.fields[0]
    logs = work.step([], 0)
    assert logs["lr"] == learning_rate(TINY, 0) == work.optimiser.param_groups[0]["lr"]
    assert {"detection", "heatmap", "size", "offset", "objects"} <= set(logs)
    after = work.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert work.pool.drawn == 3 and work.pool.fields[0] is not first  # refresh_every=1


def test_a_resumed_workload_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    alone = DetectorWorkload(RESUMABLE)
    for step in range(4):
        alone.step([], step)
    interrupted = DetectorWorkload(RESUMABLE)
    for step in range(2):
        interrupted.step([], step)
    torch.save(interrupted.state(2), tmp_path / CHECKPOINT)  # as rank 0 checkpoints

    resumed = DetectorWorkload(RESUMABLE)
    assert resumed.load(torch.load(tmp_path / CHECKPOINT, weights_only=False)) == 2
    assert resumed.pool.drawn == interrupted.pool.drawn == 4
    for ours, theirs in zip(resumed.pool.fields, interrupted.pool.fields, strict=True):
        assert np.array_equal(ours.image, theirs.image)
    for step in range(2, 4):
        resumed.step([], step)
    for name, value in alone.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_workers_train_on_fields_and_crops_of_their_own() -> None:
    config = TINY.model_copy(update={"pool_size": 1})
    first, second = FieldPool(config), FieldPool(config, rank=1)
    assert not np.array_equal(first.fields[0].image, second.fields[0].image)
    assert crop_rng(config, 0, 5).random() != crop_rng(config, 1, 5).random()
    assert crop_rng(config, 0, 5).random() == crop_rng(config, 0, 5).random()  # by the step
    a, b = DetectorWorkload(config), DetectorWorkload(config, rank=1)  # the same network
    for name, value in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[name], value), name


def test_a_distributed_checkpoint_becomes_a_detector_checkpoint(tmp_path: Path) -> None:
    work = DetectorWorkload(TINY)
    work.step([], 0)
    (tmp_path / "ray").mkdir()
    torch.save(work.state(1), tmp_path / "ray" / CHECKPOINT)
    path = detector_from_checkpoint(tmp_path / "ray", tmp_path / "out")
    assert path == tmp_path / "out" / CHECKPOINT_NAME
    saved = torch.load(path, weights_only=True)
    assert saved["training"] == TINY.model_dump(mode="json")
    for name, value in work.model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name
    written = yaml.safe_load((tmp_path / "out" / "detector.yaml").read_text())
    assert DetectorTrainConfig.model_validate(written) == TINY
    detector = LearnedDetector.load(path, pixel_um=0.075, threshold=0.0, max_detections=2)
    field = generate_field(phantom_config(width=256, height=256), field_rng(9, 0, 0))
    assert len(detector.detect(field.bf)) == 2

    torch.save({"step": 1, "generator": {}}, tmp_path / "ray" / CHECKPOINT)  # a translator's
    with pytest.raises(ValueError, match="no detector run's checkpoint"):
        detector_from_checkpoint(tmp_path / "ray", tmp_path / "other")
    with pytest.raises(ValueError, match="no detector run's checkpoint"):
        detector_from_checkpoint(tmp_path / "missing", tmp_path / "other")


def test_a_config_file_is_read_with_overrides_and_refused_with_a_reason(tmp_path: Path) -> None:
    assert load_detector_config(None, modality="dic") == DetectorTrainConfig(modality=Modality.DIC)
    path = tmp_path / "run.yaml"
    path.write_text("steps: 40\nmodality: dic\nwidth: 8\n")
    loaded = load_detector_config(path, modality="bf", steps=12)
    assert (loaded.steps, loaded.modality, loaded.width) == (12, Modality.BRIGHTFIELD, 8)
    with pytest.raises(ConfigError, match="cannot read detector config"):
        load_detector_config(tmp_path / "none.yaml")
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="a mapping"):
        load_detector_config(path)
    path.write_text("crop_px: 100\n")
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_detector_config(path)
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz: Extra inputs"):
        load_detector_config(path)
    with pytest.raises(ConfigError, match="modality"):
        load_detector_config(None, modality="phase")


# ----------------------------------------------------------------------------- a lab's fields


@pytest.fixture
def lab_dataset(tmp_path: Path) -> tuple[LocalObjectStore, str, list[tuple[int, int, int, int]]]:
    """A phantom brightfield field imported as a lab's YOLO-annotated field at 0.15 µm/px."""
    config = phantom_config(width=400, height=320, acquisition={"pixel_um": 0.15})
    field = generate_field(config, field_rng(3, 0, 0))
    boxes = truth_boxes(field, Modality.BRIGHTFIELD)
    folder = tmp_path / "lab" / "images"
    folder.mkdir(parents=True)
    Image.fromarray(field.bf).save(folder / "f1.png")
    (folder / "labels").mkdir()
    (folder / "labels" / "f1.txt").write_text(
        "".join(
            f"0 {(x0 + x1) / 800} {(y0 + y1) / 640} {(x1 - x0) / 400} {(y1 - y0) / 320}\n"
            for x0, y0, x1, y1 in boxes
        )
    )
    store = LocalObjectStore(tmp_path / "store")
    report = import_yolo(folder, store, name="lab", modality="bf", pixel_um=0.15)
    assert report.key is not None
    return store, report.key, boxes


def test_a_labs_annotated_fields_join_the_pool(
    lab_dataset: tuple[LocalObjectStore, str, list[tuple[int, int, int, int]]],
) -> None:
    store, key, boxes = lab_dataset
    config = TINY.model_copy(update={"dataset": key, "dataset_fraction": 1.0})
    (prepared,) = annotated_fields(config, store)
    scale = 0.15 / config.working_pixel_um  # the lab's pixels to the working pixels
    assert np.allclose(prepared.boxes, np.array(boxes) * scale, atol=1e-3)
    assert prepared.image.shape[1:] == (160, 200)
    pool = FieldPool(config, annotated=[prepared])
    assert all(f is prepared for f in pool.fields)  # every draw: the lab's field
    assert annotated_fields(TINY, None) == []  # no dataset: phantom fields only
    train_detector(config.model_copy(update={"steps": 1}), store.root / "run", store=store)


def test_a_dataset_of_the_other_modality_or_without_a_store_is_refused(
    lab_dataset: tuple[LocalObjectStore, str, list[tuple[int, int, int, int]]],
) -> None:
    store, key, _ = lab_dataset
    dic = TINY.model_copy(update={"dataset": key, "modality": Modality.DIC})
    with pytest.raises(DatasetError, match="holds bf fields"):
        annotated_fields(dic, store)
    with pytest.raises(DatasetError, match="needs the object store"):
        annotated_fields(TINY.model_copy(update={"dataset": key}), None)
