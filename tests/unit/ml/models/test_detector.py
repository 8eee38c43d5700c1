"""The learned white-cell detector: network, input preparation, target coding, loading."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor

from stainless.imaging.phantom import generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.ml.models.blocks import parameter_count
from stainless.ml.models.detector import (
    CHECKPOINT_FORMAT,
    DEFAULT_THRESHOLD,
    SERVED_MAPS,
    CellNet,
    DetectorConfig,
    DetectorOutput,
    LearnedDetector,
    Modality,
    ServedMaps,
    build_cell_net,
    centre_radius,
    decode,
    encode_targets,
    image_scale,
    load_network,
    map_shape,
    network_maps,
    pad_to_multiple,
    prepare,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def field_bf() -> np.ndarray:
    """A 512x512 reference brightfield field at 0.075 µm/px."""
    return generate_field(phantom_config(width=512, height=512), field_rng(3, 0, 0)).bf


# ----------------------------------------------------------------------------- config


def test_config_validates_its_fields() -> None:
    assert DetectorConfig(modality="dic").modality is Modality.DIC  # type: ignore[arg-type]
    assert DetectorConfig().channels == 3
    with pytest.raises(ValueError, match="phase"):
        Modality("phase")
    with pytest.raises(ValueError, match="phase"):
        DetectorConfig(modality="phase")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stride"):
        DetectorConfig(stride=3)
    with pytest.raises(ValueError, match="working_pixel_um"):
        DetectorConfig(working_pixel_um=0.0)


def test_config_round_trips_through_plain_values() -> None:
    config = DetectorConfig(modality=Modality.DIC, working_pixel_um=0.25, width=8, stride=8)
    data = config.to_dict()
    assert data["modality"] == "dic" and type(data["modality"]) is str
    assert DetectorConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        DetectorConfig.from_dict({**data, "depth": 3})


# ----------------------------------------------------------------------------- network


@pytest.mark.parametrize(("channels", "stride"), [(3, 4), (1, 4), (3, 8), (1, 2)])
def test_cell_net_maps_have_the_output_stride(channels: int, stride: int) -> None:
    net = CellNet(in_channels=channels, width=8, stride=stride)
    out = net(torch.randn(2, channels, 64, 96))
    assert isinstance(out, DetectorOutput)
    h, w = map_shape(64, 96, stride)
    assert out.heatmap.shape == (2, 1, h, w)
    assert out.size.shape == (2, 2, h, w)
    assert out.offset.shape == (2, 2, h, w)
    assert bool((out.size > 0).all())


def test_cell_net_takes_sides_that_are_not_multiples_of_16() -> None:
    out = CellNet(in_channels=3, width=4).eval()(torch.randn(1, 3, 50, 70))
    assert out.heatmap.shape == (1, 1, 13, 18)  # ceil(50 / 4), ceil(70 / 4)


def test_tiny_network_is_small_and_starts_near_the_prior() -> None:
    net = build_cell_net(DetectorConfig())
    assert 50_000 < parameter_count(net) < 500_000
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 64, 64))
    # Heatmap bias -2.19: sigmoid 0.1 before training, as CenterNet initialises it.
    assert float(torch.sigmoid(out.heatmap).mean()) == pytest.approx(0.1, abs=0.05)
    final = net.heatmap[-1]
    assert isinstance(final, torch.nn.Conv2d) and final.bias is not None
    assert final.bias.item() == pytest.approx(-2.19, abs=0.01)
    assert float(out.size.mean()) == pytest.approx(32.0, rel=0.5)


def test_cell_net_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stride"):
        CellNet(in_channels=3, stride=3)
    with pytest.raises(ValueError, match="width"):
        CellNet(in_channels=3, width=0)


# ----------------------------------------------------------------------------- targets


BOXES = [(10, 12, 50, 60), (100, 30, 141, 77), (3, 5, 20, 19), (180, 200, 251, 255)]


def test_encode_targets_marks_each_centre() -> None:
    maps = encode_targets(BOXES, (64, 64), 4)
    assert maps.heatmap.shape == (1, 64, 64) and maps.size.shape == (2, 64, 64)
    assert int(maps.mask.sum()) == len(BOXES)
    assert int((maps.heatmap == 1).sum()) == len(BOXES)
    # BOXES[1]: centre (120.5, 53.5) -> cell (30, 13), offset (0.125, 0.375), size 41 x 47
    assert maps.mask[0, 13, 30] == 1
    assert maps.size[:, 13, 30].tolist() == [41.0, 47.0]
    assert maps.offset[:, 13, 30].tolist() == pytest.approx([0.125, 0.375])
    # A Gaussian around it, falling off with distance; size and offset only at centres.
    assert 0.2 < maps.heatmap[0, 13, 31] < 1 and maps.heatmap[0, 13, 32] < maps.heatmap[0, 13, 31]
    assert maps.heatmap[0, 13, 40] == 0
    assert maps.size[:, 13, 31].tolist() == [0.0, 0.0]
    assert float(maps.size.sum()) == pytest.approx(
        sum((b[2] - b[0]) + (b[3] - b[1]) for b in BOXES)
    )


def test_encode_targets_skips_empty_and_outside_boxes() -> None:
    maps = encode_targets([(10, 10, 10, 30), (300, 300, 340, 340), (-40, 0, -2, 20)], (16, 16), 4)
    assert not maps.mask.any() and not maps.heatmap.any()


def test_gaussian_radius_keeps_the_promised_overlap() -> None:
    w, h = 12.0, 9.0
    d = centre_radius(w, h, 0.7)
    shifted = (w - d) * (h - d)
    assert shifted / (2 * w * h - shifted) == pytest.approx(0.7)
    assert centre_radius(2 * w, 2 * h) == pytest.approx(2 * d)  # scales with the box


def test_encode_then_decode_recovers_the_boxes_exactly() -> None:
    maps = encode_targets(BOXES, (64, 64), 4)
    found = decode(maps.heatmap, maps.size, maps.offset, threshold=0.5, stride=4)
    assert sorted(d.box for d in found) == sorted(BOXES)
    assert all(d.score == 1.0 for d in found)


def test_decode_maps_back_to_the_image_pixels() -> None:
    image_boxes = [(40, 48, 200, 240), (400, 120, 564, 308)]
    scale = 0.25  # e.g. 0.075 µm/px images at 0.3 µm working pixels
    working = [tuple(v * scale for v in b) for b in image_boxes]
    maps = encode_targets(working, (64, 160), 4)
    found = decode(maps.heatmap, maps.size, maps.offset, threshold=0.5, scale=scale)
    assert sorted(d.box for d in found) == sorted(image_boxes)
    per_axis = decode(maps.heatmap, maps.size, maps.offset, threshold=0.5, scale=(scale, 0.5))
    assert sorted(d.box for d in per_axis)[0] == (40, 24, 200, 120)


def test_decode_keeps_local_peaks_above_the_threshold() -> None:
    heatmap = torch.zeros(1, 16, 16)
    heatmap[0, 4, 4], heatmap[0, 4, 5] = 0.9, 0.8  # the lower one is no peak (3x3 max)
    heatmap[0, 10, 10] = 0.6
    heatmap[0, 2, 12] = 0.2
    size = torch.full((2, 16, 16), 8.0)
    offset = torch.zeros(2, 16, 16)
    found = decode(heatmap, size, offset, threshold=0.3)
    assert [d.score for d in found] == pytest.approx([0.9, 0.6])
    assert found[0].box == (12, 12, 20, 20)
    assert len(decode(heatmap, size, offset, threshold=0.1)) == 3
    assert [d.score for d in decode(heatmap, size, offset, 0.1, 1)] == pytest.approx([0.9])
    with pytest.raises(ValueError, match="size"):
        decode(heatmap, size[:, :8], offset)


# ----------------------------------------------------------------------------- input


def test_prepare_gives_od_and_relative_dic() -> None:
    field = generate_field(phantom_config(width=256, height=256), field_rng(1, 0, 0))
    bf, scale = prepare(field.bf, 0.075, "bf")
    assert scale == pytest.approx(0.25)
    assert bf.shape == (3, 64, 64) and bf.dtype == np.float32 and bf.flags.c_contiguous
    assert abs(float(np.median(bf))) < 0.05  # background is OD 0
    assert float(bf.max()) > 0.3  # stained cells absorb
    dic, _ = prepare(field.dic, 0.075, Modality.DIC)
    assert dic.shape == (1, 64, 64)
    assert abs(float(np.median(dic))) < 0.05  # relative intensity 1 on background
    assert float(dic.std()) > 0.01  # the relief


def test_prepare_is_pixel_size_independent(field_bf: np.ndarray) -> None:
    """The same field seen at 0.075 and at 0.15 µm/px gives the same map in µm."""
    coarse = cv2.resize(field_bf, (256, 256), interpolation=cv2.INTER_AREA)
    fine_map, fine_scale = prepare(field_bf, 0.075, "bf")
    coarse_map, coarse_scale = prepare(coarse, 0.15, "bf")
    assert fine_map.shape == coarse_map.shape == (3, 128, 128)  # 38.4 µm at 0.3 µm/px
    assert coarse_scale == pytest.approx(2 * fine_scale)
    diff = np.abs(fine_map - coarse_map)
    assert float(np.median(diff)) < 0.02
    assert float(diff.mean()) < 0.1 * float(np.abs(fine_map).mean()) + 0.01


def test_prepare_rejects_the_wrong_image() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        prepare(np.zeros((64, 64), np.uint16), 0.075, "bf")
    with pytest.raises(ValueError, match="HxW"):
        prepare(np.zeros((64, 64, 3), np.uint8), 0.075, "dic")
    with pytest.raises(ValueError, match="pixel_um"):
        prepare(np.zeros((64, 64), np.uint16), 0.0, "dic")
    with pytest.raises(ValueError, match="phase"):
        prepare(np.zeros((64, 64), np.uint16), 0.075, "phase")


def test_pad_and_scale_helpers() -> None:
    image = np.arange(3 * 50 * 60, dtype=np.float32).reshape(3, 50, 60)
    padded = pad_to_multiple(image)
    assert padded.shape == (3, 64, 64)
    assert np.array_equal(padded[:, :50, :60], image)  # nothing moves
    assert np.array_equal(padded[:, 63, :60], image[:, 49])  # the edge row repeats
    assert np.array_equal(padded[:, :50, 63], image[:, :, 59])
    assert pad_to_multiple(padded) is padded
    assert image_scale((1544, 2064, 3), (3, 386, 516)) == pytest.approx((0.25, 0.25))


# ----------------------------------------------------------------------------- detector


class _FixedMaps(CellNet):
    """A CellNet whose output is one peak at output cell (12, 8), 40 x 20 working px."""

    def forward(self, x: Tensor) -> DetectorOutput:
        h, w = math.ceil(x.shape[2] / 4), math.ceil(x.shape[3] / 4)
        heatmap = torch.full((1, 1, h, w), -10.0)
        heatmap[0, 0, 8, 12] = 10.0
        size = torch.zeros(1, 2, h, w)
        size[0, :, 8, 12] = torch.tensor([40.0, 20.0])
        offset = torch.full((1, 2, h, w), 0.5)
        return DetectorOutput(heatmap, size, offset)


def test_detector_maps_peaks_back_to_the_image() -> None:
    config = DetectorConfig(width=4)
    detector = LearnedDetector(
        maps=network_maps(_FixedMaps(in_channels=3, width=4)), config=config, pixel_um=0.15
    )
    (found,) = detector.detect(np.full((200, 300, 3), 220, np.uint8))
    # Centre (12.5, 8.5) cells = (50, 34) working px = (100, 68) image px at 0.5 working/image.
    assert found.box == (60, 48, 140, 88)
    assert found.score == pytest.approx(1.0, abs=1e-4)


def test_detector_clips_boxes_to_the_image() -> None:
    detector = LearnedDetector(
        maps=network_maps(_FixedMaps(in_channels=3, width=4)),
        config=DetectorConfig(width=4),
        pixel_um=0.3,
    )
    # Working px = image px; the box (30, 24, 70, 44) sticks out of a 40 x 60 image.
    (found,) = detector.detect(np.full((40, 60, 3), 220, np.uint8))
    assert found.box == (30, 24, 60, 40)


def test_load_names_the_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "detector.pt"
    with pytest.raises(FileNotFoundError, match=r"nowhere[/\\]detector\.pt"):
        LearnedDetector.load(missing, pixel_um=0.075)


def test_load_refuses_other_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"other\.pt"):
        LearnedDetector.load(path, pixel_um=0.075)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"other\.pt"):
        LearnedDetector.load(path, pixel_um=0.075)
    small = build_cell_net(DetectorConfig(width=4)).state_dict()
    wider = DetectorConfig(width=8).to_dict()
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": small, "config": wider}, path)
    with pytest.raises(ValueError, match="does not match"):
        LearnedDetector.load(path, pixel_um=0.075)


def test_load_restores_the_network(tmp_path: Path, field_bf: np.ndarray) -> None:
    config = DetectorConfig(width=4)
    net = build_cell_net(config)
    path = tmp_path / "detector.pt"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "state_dict": net.state_dict(), "config": config.to_dict()},
        path,
    )
    loaded, loaded_config, threshold = load_network(path)
    assert loaded_config == config
    assert threshold == DEFAULT_THRESHOLD  # no calibration in the checkpoint
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not loaded.training  # batch norm on its running statistics
    torch.save({**torch.load(path), "threshold": 0.45}, path)  # a calibrated one
    assert LearnedDetector.load(path, pixel_um=0.075).threshold == 0.45
    detector = LearnedDetector.load(path, pixel_um=0.075, threshold=0.0, max_detections=5)
    found = detector.detect(field_bf)
    assert 0 < len(found) <= 5
    assert all(0 <= d.box[0] < d.box[2] <= 512 and 0 <= d.box[1] < d.box[3] <= 512 for d in found)


def test_served_maps_hold_scores_size_and_offset() -> None:
    net = build_cell_net(DetectorConfig(width=4)).eval()
    x = torch.randn(2, 3, 64, 48)
    maps = ServedMaps(net)(x)
    out = net(x)
    assert maps.shape == (2, 5, 16, 12)
    assert torch.allclose(maps[:, :1], torch.sigmoid(out.heatmap))
    assert torch.equal(maps[:, 1:3], out.size) and torch.equal(maps[:, 3:], out.offset)


def test_detector_refuses_maps_of_the_wrong_shape() -> None:
    detector = LearnedDetector(
        maps=lambda batch: np.zeros((1, 5, 3, 3), np.float32),
        config=DetectorConfig(width=4),
        pixel_um=0.3,
    )
    with pytest.raises(ValueError, match="maps of shape"):
        detector.detect(np.full((64, 64, 3), 200, np.uint8))


def test_a_peak_in_the_padding_beyond_the_field_is_not_reported() -> None:
    config = DetectorConfig(width=4, working_pixel_um=0.3)

    def maps(batch: np.ndarray) -> np.ndarray:
        _, _, height, width = batch.shape
        out = np.zeros((1, SERVED_MAPS, height // 4, width // 4), np.float32)
        out[0, 1:3] = 10.0  # 10 x 10 boxes
        out[0, 0, 5, 10] = 0.9  # centre at x ≈ 40: inside the 100-px field
        out[0, 0, 5, 26] = 0.8  # centre at x ≈ 104: in the padding to 112
        return out

    detector = LearnedDetector(maps=maps, config=config, pixel_um=0.3, threshold=0.5)
    image = np.full((100, 100, 3), 200, np.uint8)
    found = detector.detect(image)
    assert len(found) == 1 and found[0].score == pytest.approx(0.9)
