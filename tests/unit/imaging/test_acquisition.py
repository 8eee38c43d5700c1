"""Acquisition variability: presets, YAML, random draws and what each block renders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from stainless.domain.cells import MaskClass
from stainless.imaging.acquisition import (
    PRESETS,
    STAIN_SETS,
    CameraConfig,
    IlluminationConfig,
    StainProtocol,
    load_acquisition,
    merge,
    random_acquisition,
)
from stainless.imaging.phantom import PhantomConfig, generate_field
from stainless.imaging.phantom_set import field_rng, phantom_config

SMALL = {"width": 512, "height": 384}


def _digest(acquisition: str | dict[str, object], seed: int = 3) -> str:
    config = phantom_config(**SMALL, acquisition=acquisition)
    field = generate_field(config, field_rng(seed, 0, 0))
    return hashlib.sha256(field.dic.tobytes() + field.bf.tobytes()).hexdigest()


def test_every_preset_is_a_valid_configuration() -> None:
    axes = {preset.axis for preset in PRESETS.values()}
    assert axes == {"reference", "stain", "illumination", "camera", "optics", "smear"}
    for name in PRESETS:
        phantom_config(**SMALL, acquisition=name)


@pytest.mark.parametrize("name", ["wright", "vignetted", "jpeg", "binned", "platelets"])
def test_a_preset_is_deterministic_per_seed(name: str) -> None:
    assert _digest(name) == _digest(name)
    assert _digest(name) != _digest(name, seed=4)


def test_the_reference_preset_is_the_default() -> None:
    assert phantom_config(acquisition="reference") == PhantomConfig()


def test_presets_change_the_rendering() -> None:
    digests = {name: _digest(name) for name in ("reference", "wright", "dim", "prism-flipped")}
    assert len(set(digests.values())) == len(digests)


def test_yaml_file_and_merge(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("stain:\n  protocol: giemsa\nillumination: {vignetting: 0.2}\n")
    config = phantom_config(width=600, acquisition=str(path))
    assert config.stain.protocol is StainProtocol.GIEMSA
    assert config.illumination.vignetting == 0.2
    assert config.width == 600
    merged = merge(
        {"stain": {"protocol": "mgg", "strength": 1.2}}, {"stain": {"protocol": "wright"}}
    )
    assert merged == {"stain": {"protocol": "wright", "strength": 1.2}}


def test_bad_acquisitions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a preset"):
        load_acquisition("no-such-lab")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_acquisition(str(listed))
    with pytest.raises(ValueError, match="invalid phantom configuration"):
        phantom_config(acquisition={"stain": {"strength": 9.0}})
    with pytest.raises(ValidationError, match="jpeg_quality"):
        CameraConfig(bf_bit_depth=16, jpeg_quality=80)


def test_random_acquisitions_are_valid_and_seeded() -> None:
    draws = [random_acquisition(np.random.default_rng([5, k])) for k in range(20)]
    for overrides in draws:
        config = PhantomConfig.model_validate(overrides)
        assert 0.05 <= config.pixel_um <= 0.25
    assert random_acquisition(np.random.default_rng([5, 0])) == draws[0]
    assert len({d["stain"]["protocol"] for d in draws}) >= 3


def test_colour_temperature_tints_the_background() -> None:
    warm = IlluminationConfig(colour_temperature_k=3000.0).colour_gain()
    cool = IlluminationConfig(colour_temperature_k=7500.0).colour_gain()
    assert warm[0] == 1.0 and warm[2] < 0.6  # red dominates a halogen lamp
    assert cool[2] == 1.0 and cool[0] < 1.0
    assert IlluminationConfig().colour_gain() == (1.0, 1.0, 1.0)


def test_vignetting_darkens_the_corners() -> None:
    config = phantom_config(**SMALL, acquisition={"illumination": {"vignetting": 0.35}})
    field = generate_field(config, field_rng(1, 0, 0))
    background = field.mask == MaskClass.BACKGROUND  # close enough in the brightfield frame
    grey = field.bf.mean(axis=2)
    centre = np.median(grey[150:234, 200:312][background[150:234, 200:312]])
    corner = np.median(grey[:60, :60][background[:60, :60]])
    assert corner < 0.9 * centre


def test_camera_bit_depth_and_jpeg() -> None:
    twelve = generate_field(phantom_config(**SMALL, acquisition="12-bit"), field_rng(1, 0, 0))
    assert twelve.bf.dtype == np.uint16 and twelve.bf.max() <= 4095 and twelve.bf.max() > 255
    assert twelve.dic.max() <= 4095
    jpeg = generate_field(phantom_config(**SMALL, acquisition="jpeg"), field_rng(1, 0, 0))
    plain = generate_field(
        phantom_config(**SMALL, acquisition={"camera": {"gain": 2.0}}), field_rng(1, 0, 0)
    )
    assert jpeg.bf.dtype == np.uint8
    assert not np.array_equal(jpeg.bf, plain.bf)
    assert np.abs(jpeg.bf.astype(int) - plain.bf.astype(int)).mean() < 3


def test_prism_sign_mirrors_the_relief() -> None:
    flipped = generate_field(
        phantom_config(**SMALL, acquisition="prism-flipped"), field_rng(2, 0, 0)
    )
    normal = generate_field(phantom_config(**SMALL), field_rng(2, 0, 0))
    # Without noise the two would be mirror images about the background level; with it,
    # their deviations from the background are strongly anti-correlated.
    a = normal.dic.astype(np.float64) - np.median(normal.dic)
    b = flipped.dic.astype(np.float64) - np.median(flipped.dic)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < -0.5


def test_smear_objects_are_recorded_and_stay_out_of_the_mask() -> None:
    config = phantom_config(**SMALL, acquisition="platelets")
    with_objects = generate_field(config, field_rng(4, 0, 0))
    kinds = {str(obj.kind) for obj in with_objects.smear_objects}
    assert {"platelet", "platelet_clump"} <= kinds
    for obj in with_objects.smear_objects:
        x0, y0, x1, y1 = obj.box_dic
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 384
    # Platelets are not cells: the mask is what the same field has without them.
    without = generate_field(phantom_config(**SMALL), field_rng(4, 0, 0))
    assert np.array_equal(with_objects.mask, without.mask)


@pytest.mark.parametrize("protocol", list(StainProtocol))
def test_stain_sets_absorb_where_their_dyes_do(protocol: StainProtocol) -> None:
    stains = STAIN_SETS[protocol]
    assert np.argmax(stains.eosin) == 1  # eosin absorbs green: pink
    assert stains.azure[0] > stains.azure[2]  # azure absorbs red: blue
    assert stains.complex[1] > stains.complex[2]  # the azure-eosin complex: purple
    red = stains.red_cell
    assert red[1] > red[0] and red[2] > red[0]
