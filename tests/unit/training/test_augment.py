"""Random cropping and resizing of DIC/brightfield pairs keeps the DIC shear direction."""

from __future__ import annotations

import pytest
import torch

from stainless_training.augment import paired_jitter


def _ramps(batch: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """DIC relief rising left to right; its 'brightfield' rising top to bottom."""
    x = torch.linspace(-1, 1, size)
    dic = x.view(1, 1, 1, size).expand(batch, 1, size, size).clone()
    bf = x.view(1, 1, size, 1).expand(batch, 3, size, size).clone()
    return dic, bf


def test_the_pair_is_moved_alike_and_no_axis_turns() -> None:
    dic, bf = _ramps()
    generator = torch.Generator().manual_seed(0)
    moved_dic, moved_bf = paired_jitter(dic, bf, shift=0.1, scale=0.2, generator=generator)
    assert not torch.equal(moved_dic, dic)  # something moved
    # the relief still rises left to right, the brightfield ramp top to bottom: no flip,
    # no rotation, no transposition
    assert (moved_dic[..., 1:] - moved_dic[..., :-1] >= -1e-6).all()
    assert (moved_dic[..., 1:, :] - moved_dic[..., :-1, :]).abs().max() < 1e-6
    assert (moved_bf[..., 1:, :] - moved_bf[..., :-1, :] >= -1e-6).all()
    # the same transform on both: a brightfield that is the DIC image comes out as it does
    same_dic, same_bf = paired_jitter(
        dic, dic.expand(-1, 3, -1, -1), shift=0.1, scale=0.2, generator=generator
    )
    assert torch.allclose(same_bf, same_dic.expand(-1, 3, -1, -1))
    assert not torch.allclose(same_dic, moved_dic)  # another draw


def test_no_jitter_is_the_identity_and_draws_nothing() -> None:
    dic, bf = _ramps()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    assert paired_jitter(dic, bf, shift=0, scale=0, generator=generator) == (dic, bf)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(("shift", "scale"), [(-0.1, 0), (0.6, 0), (0, 1.0)])
def test_out_of_range_jitter_is_refused(shift: float, scale: float) -> None:
    dic, bf = _ramps()
    with pytest.raises(ValueError, match="shift must lie"):
        paired_jitter(dic, bf, shift=shift, scale=scale, generator=torch.Generator())


def test_unpaired_crops_are_refused() -> None:
    dic, bf = _ramps()
    with pytest.raises(ValueError, match="unpaired"):
        paired_jitter(dic, bf[:2], shift=0.1, scale=0, generator=torch.Generator())
