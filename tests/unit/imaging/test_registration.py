"""Registration of brightfield onto DIC: accuracy on phantoms, rejection, helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from stainless.imaging.detection import match_boxes
from stainless.imaging.phantom import PhantomConfig, PhantomField, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config
from stainless.imaging.registration import (
    MotionModel,
    Registrar,
    RegistrationResult,
    baseline_register,
    corner_error_px,
    invert_affine,
    pseudo_dic,
    warp_bf_to_dic,
)

SMALL = PhantomConfig(width=768, height=576)


def field(index: int, config: PhantomConfig = SMALL) -> PhantomField:
    return generate_field(config, field_rng(3, 0, index))


@pytest.fixture(scope="module")
def fields() -> list[PhantomField]:
    return [field(i) for i in range(3)]


def test_recovers_the_phantom_affine(fields: list[PhantomField]) -> None:
    registrar = Registrar()
    for f in fields:
        result = registrar.register(f.dic, f.bf)
        assert isinstance(result, RegistrationResult)
        assert result.accepted, result.reason
        assert result.reason is None
        assert result.affine_bf_to_dic.shape == (2, 3)
        assert result.affine_bf_to_dic.dtype == np.float64
        assert result.ecc >= registrar.min_ecc
        error = corner_error_px(result.affine_bf_to_dic, f.affine_bf_to_dic, 768, 576)
        assert error < 0.5, error
        assert result.seconds > 0


def test_full_resolution_refinement_is_at_least_as_good(fields: list[PhantomField]) -> None:
    f = fields[0]
    result = Registrar(finest_level=0).register(f.dic, f.bf)
    assert result.accepted
    assert corner_error_px(result.affine_bf_to_dic, f.affine_bf_to_dic, 768, 576) < 0.5


def test_unknown_shear_sign_is_found(fields: list[PhantomField]) -> None:
    """A DIC taken with the opposite prism setting: its relief is the negative one."""
    f = fields[1]
    flipped = (np.float32(2 * np.median(f.dic)) - f.dic.astype(np.float32)).clip(0, 65535)
    result = Registrar().register(flipped.astype(np.uint16), f.bf)
    assert result.accepted, result.reason
    assert corner_error_px(result.affine_bf_to_dic, f.affine_bf_to_dic, 768, 576) < 0.5
    # Without trying the other sign the correlation stays low.
    only_one = Registrar(try_opposite_shear=False).register(flipped.astype(np.uint16), f.bf)
    assert not only_one.accepted
    assert only_one.reason


def test_euclidean_and_translation_models_run(fields: list[PhantomField]) -> None:
    f = fields[2]
    for motion in (MotionModel.EUCLIDEAN, MotionModel.TRANSLATION):
        result = Registrar(motion=motion, min_ecc=0.0).register(f.dic, f.bf)
        assert result.ecc > 0.3
        assert corner_error_px(result.affine_bf_to_dic, f.affine_bf_to_dic, 768, 576) < 20


def test_unrelated_pair_is_rejected_with_a_reason(fields: list[PhantomField]) -> None:
    result = Registrar().register(fields[0].dic, fields[1].bf)
    assert not result.accepted
    assert result.reason is not None
    assert "ECC" in result.reason
    assert result.ecc < 0.7


def test_implausible_transform_is_rejected(fields: list[PhantomField]) -> None:
    f = fields[0]
    result = Registrar(max_shift_px=1.0).register(f.dic, f.bf)
    assert not result.accepted
    assert result.reason is not None and "implausible" in result.reason


@pytest.mark.parametrize(
    ("dic", "bf", "message"),
    [
        (np.zeros((64, 64, 3), np.uint16), np.zeros((64, 64, 3), np.uint8), "2-D"),
        (np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.uint8), "HxWx3"),
        (np.zeros((64, 64), np.uint16), np.zeros((64, 64, 4), np.uint8), "HxWx3"),
        (np.zeros((64, 64), np.uint16), np.zeros((64, 80, 3), np.uint8), "differ"),
        (np.zeros((64, 64), bool), np.zeros((64, 64, 3), np.uint8), "dtype"),
        (np.zeros((8, 8), np.uint16), np.zeros((8, 8, 3), np.uint8), "at least"),
    ],
)
def test_bad_shapes_are_refused(dic: np.ndarray, bf: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registrar().register(dic, bf)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"levels": 0},
        {"levels": 2, "finest_level": 2},
        {"max_iterations": 0},
        {"epsilon": 0.0},
        {"min_ecc": 1.5},
        {"gauss_filter_size": 4},
        {"od_weights": (0.0, 0.0, 0.0)},
        {"stain_mask_threshold": 0.0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|levels"):
        Registrar(**kwargs)  # type: ignore[arg-type]


def test_corner_error_of_a_translation_is_the_translation() -> None:
    identity = np.eye(2, 3)
    shifted = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -4.0]])
    assert corner_error_px(identity, shifted, 100, 80) == pytest.approx(5.0)
    assert corner_error_px(shifted, shifted, 100, 80) == 0.0


def test_corner_error_of_a_rotation_grows_with_the_field() -> None:
    angle = math.radians(1.0)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]]
    )
    # About the origin, the far corner (w-1, h-1) moves by |c| * 2 sin(a/2).
    expected = math.hypot(99, 79) * 2 * math.sin(angle / 2)
    assert corner_error_px(np.eye(2, 3), rotation, 100, 80) == pytest.approx(expected)
    with pytest.raises(ValueError, match="2x3"):
        corner_error_px(np.eye(3), rotation, 100, 80)


def test_warp_round_trips() -> None:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (200, 240, 3)).astype(np.uint8), (0, 0), 3)
    angle = math.radians(0.7)
    affine = np.array(
        [
            [1.005 * math.cos(angle), -1.005 * math.sin(angle), 6.4],
            [1.005 * math.sin(angle), 1.005 * math.cos(angle), -3.2],
        ]
    )
    there = warp_bf_to_dic(image, affine, (240, 200))
    assert there.shape == image.shape and there.dtype == image.dtype
    back = warp_bf_to_dic(there, invert_affine(affine), (240, 200))
    inner = (slice(20, -20), slice(20, -20))
    difference = np.abs(back[inner].astype(int) - image[inner].astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 4
    # A pure integer shift moves pixels exactly.
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 2.0]])
    moved = warp_bf_to_dic(image, shift, (240, 200))
    np.testing.assert_array_equal(moved[2:, 5:], image[:-2, :-5])


def test_warp_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="2x3"):
        warp_bf_to_dic(np.zeros((10, 10), np.uint8), np.eye(3), (10, 10))
    with pytest.raises(ValueError, match="positive"):
        warp_bf_to_dic(np.zeros((10, 10), np.uint8), np.eye(2, 3), (0, 10))


def test_pseudo_dic_responds_along_the_shear_only() -> None:
    """A vertical edge (varying along x) shows at 0 deg, not at 90 deg."""
    bf = np.full((64, 64, 3), 220, np.uint8)
    bf[:, 32:] = 120
    along_x = pseudo_dic(bf, 0.0)
    along_y = pseudo_dic(bf, 90.0)
    assert np.abs(along_x).max() > 0.05
    assert np.abs(along_y).max() < 1e-6
    assert along_x[32, 32] > 0  # OD rises to the right


def test_baseline_runs_and_reports(fields: list[PhantomField]) -> None:
    f = fields[0]
    affine, ecc, problem = baseline_register(f.dic, f.bf, max_iterations=5)
    assert (affine is None) == (problem is not None)
    if affine is not None:
        assert affine.shape == (2, 3) and ecc is not None
    with pytest.raises(ValueError, match="representation"):
        baseline_register(f.dic, f.bf, representation="magic")


def test_register_command_exit_codes(tmp_path: Path, fields: list[PhantomField]) -> None:
    from typer.testing import CliRunner

    from stainless.cli.main import app

    f, other = fields[0], fields[1]
    dic, bf, wrong = tmp_path / "dic.tif", tmp_path / "bf.png", tmp_path / "other.png"
    tifffile.imwrite(dic, f.dic, photometric="minisblack", compression="zlib")
    cv2.imwrite(str(bf), cv2.cvtColor(f.bf, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(wrong), cv2.cvtColor(other.bf, cv2.COLOR_RGB2BGR))
    runner = CliRunner()

    done = runner.invoke(app, ["register", str(dic), str(bf), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["accepted"] is True and report["reason"] is None
    assert corner_error_px(np.array(report["affine_bf_to_dic"]), f.affine_bf_to_dic, 768, 576) < 0.5
    truth = [c.box_dic for c in f.cells]
    found = [tuple(c["box"]) for c in report["cells"]]
    _, fp, fn = match_boxes(found, truth)
    assert fn == 0 and fp == 0

    rejected = runner.invoke(app, ["register", str(dic), str(wrong), "--json"])
    assert rejected.exit_code == 3
    report = json.loads(rejected.stdout.strip().splitlines()[-1])
    assert report["accepted"] is False and "ECC" in report["reason"] and report["cells"] == []

    readable = runner.invoke(app, ["register", str(dic), str(bf)])
    assert readable.exit_code == 0 and "accepted" in readable.stdout

    missing = runner.invoke(app, ["register", str(tmp_path / "none.tif"), str(bf)])
    assert missing.exit_code == 2
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    unreadable = runner.invoke(app, ["register", str(dic), str(garbage)])
    assert unreadable.exit_code == 2
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), f.bf[..., 0])
    assert runner.invoke(app, ["register", str(dic), str(grey)]).exit_code == 2


@pytest.mark.parametrize("acquisition", ["vignetted", "giemsa", "binned", "prism-flipped"])
def test_other_labs_register_without_their_constants(acquisition: str) -> None:
    """Uneven light, another stain, a coarser camera or a reversed prism: still aligned."""
    config = phantom_config(width=1024, height=768, acquisition=acquisition)
    for index in range(2):
        field = generate_field(config, field_rng(41, 0, index))
        result = Registrar(shear_angle_deg=config.shear_angle_deg).register(field.dic, field.bf)
        assert result.accepted, (acquisition, result.reason)
        error = corner_error_px(result.affine_bf_to_dic, field.affine_bf_to_dic, 1024, 768)
        assert error < 0.5, (acquisition, error)


def test_strong_vignetting_registers_at_full_size() -> None:
    """Full-size fields lit with strong vignetting (three that were rejected when the flat
    field was one polynomial over the field): accepted, within the 0.3 px target."""
    config = phantom_config(acquisition="vignetted")
    registrar = Registrar(shear_angle_deg=config.shear_angle_deg)
    for index in (2, 3, 4):
        field = generate_field(config, field_rng(99, 0, index))
        result = registrar.register(field.dic, field.bf)
        assert result.accepted, (index, result.reason)
        error = corner_error_px(
            result.affine_bf_to_dic, field.affine_bf_to_dic, config.width, config.height
        )
        assert error < 0.3, (index, error)
