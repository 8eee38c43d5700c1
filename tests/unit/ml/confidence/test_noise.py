"""Confidence by latent noise injection with toy models: δ, γ, heat map, batching, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from stainless.ml.confidence import (
    DISENTANGLED,
    WHOLE_LATENT,
    ChannelMode,
    ConfidenceResult,
    disentangled_confidence,
    image_delta,
    mutual_information,
    naive_whole_latent_confidence,
    whole_latent_confidence,
)

SIZE = 32


class ToyAutoencoder(nn.Module):
    """A tiny untrained conv encoder/decoder (latent [B, 8, 16, 16]); counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.dec = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        self.decode_batches: list[int] = []
        self.encodes = 0
        self.eval()

    def encode(self, x: Tensor) -> Tensor:
        self.encodes += 1
        h: Tensor = self.enc(x)
        return h

    def decode(self, latent: Tensor) -> Tensor:
        self.decode_batches.append(latent.shape[0])
        out: Tensor = self.dec(latent)
        return out


class ToyDisentangled(nn.Module):
    """Structure t [B,4,16,16], style s [B,6], background [B,2,16,16]; AdaIN-like decoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.structure = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.background = nn.Conv2d(3, 2, 3, stride=2, padding=1)
        self.style = nn.Linear(3, 6)
        self.body = nn.Conv2d(6, 8, 3, padding=1)
        self.affine = nn.Linear(6, 16)
        self.out = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1))
        self.decode_batches: list[int] = []
        self.eval()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.structure(x), self.style(x.mean(dim=(2, 3))), self.background(x)

    def decode(self, t: Tensor, s: Tensor, bg: Tensor) -> Tensor:
        self.decode_batches.append(t.shape[0])
        assert s.shape[0] == bg.shape[0] == t.shape[0]
        features = torch.relu(self.body(torch.cat([t, bg], dim=1)))
        scale, shift = self.affine(s).chunk(2, dim=1)
        features = features * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        out: Tensor = self.out(features)
        return out


def _cell_image() -> Tensor:
    """A disc 'cell' with a darker 'nucleus' on a flat background, plus a little noise."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    r = ((yy - 15.5) ** 2 + (xx - 13.5) ** 2).sqrt()
    base = 0.2 + 0.5 * (r < 11).float() - 0.3 * (r < 5).float()
    gen = torch.Generator().manual_seed(42)
    image = torch.stack([base, 0.8 * base, 1.2 * base]) + 0.02 * torch.randn(
        3, SIZE, SIZE, generator=gen
    )
    return image.unsqueeze(0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_whole_latent_result_shapes_and_single_batched_decode() -> None:
    model = ToyAutoencoder()
    result = whole_latent_confidence(model, _cell_image(), k=10, generator=_gen())
    assert isinstance(result, ConfidenceResult)
    assert model.decode_batches == [1, 10]  # the clean decode, then the k codes at once
    assert result.heatmap.shape == (SIZE, SIZE)
    assert result.heatmap.dtype == np.float32
    assert result.clean.shape == (1, 3, SIZE, SIZE)
    assert not result.clean.requires_grad
    assert result.delta > 0
    assert result.gamma > 0
    assert result.gamma == pytest.approx(float(result.heatmap.mean()), rel=1e-5)


def test_whole_latent_gamma_is_the_mean_per_pixel_variance() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    k = 5
    result = whole_latent_confidence(model, x, alpha=2.0, k=k, generator=_gen(3))
    # Redo by hand: same noise draw, decode, population variance over k.
    with torch.no_grad():
        h = model.encode(x)
        sigma = 2.0 * h.std(dim=(2, 3), correction=0, keepdim=True)
        noise = torch.randn((k, *h.shape[1:]), generator=_gen(3)) * sigma
        outputs = model.decode(h + noise).double()
        clean = model.decode(h)
    var = ((outputs - outputs.mean(dim=0)) ** 2).mean(dim=0).mean(dim=0)
    np.testing.assert_allclose(result.heatmap, var.float().numpy(), rtol=1e-5, atol=1e-9)
    assert result.gamma == pytest.approx(float(var.mean()), rel=1e-6)
    # δ: per channel MI (n = H·W pixels, ⌊√(n/5)⌋ bins), over channels and outputs
    per_channel = [
        mutual_information(clean[0, c], outputs[i, c]) for i in range(k) for c in range(3)
    ]
    assert result.delta == pytest.approx(float(np.mean(per_channel)), abs=1e-9)
    assert result.variant == WHOLE_LATENT and result.channels is ChannelMode.PER_CHANNEL
    # normalised: each channel's MI over its clean entropy, MI(X; X)
    ratios = [
        mutual_information(clean[0, c], outputs[i, c])
        / mutual_information(clean[0, c], clean[0, c])
        for i in range(k)
        for c in range(3)
    ]
    assert result.delta_normalised == pytest.approx(float(np.mean(ratios)), abs=1e-9)
    assert 0 < result.delta_normalised <= 1
    # the pooled option: every channel value in one histogram (n = C·H·W values)
    pooled = whole_latent_confidence(
        model, x, alpha=2.0, k=k, generator=_gen(3), channels=ChannelMode.POOLED
    )
    mis = [mutual_information(clean[0], outputs[i]) for i in range(k)]
    assert pooled.delta == pytest.approx(float(np.mean(mis)), abs=1e-9)
    assert pooled.channels is ChannelMode.POOLED


def test_noise_is_scaled_by_the_latent_inside_the_mask() -> None:
    """The same cell in a bigger crop: the noise inside it keeps its scale."""
    model = ToyAutoencoder()
    x = _cell_image()
    fg = torch.zeros(1, 1, SIZE, SIZE)
    fg[..., 8:24, 8:24] = 1
    k = 4
    result = whole_latent_confidence(model, x, alpha=2.0, k=k, foreground=fg, generator=_gen(3))
    with torch.no_grad():
        h = model.encode(x)
        inside = torch.zeros(1, 1, 16, 16)
        inside[..., 4:12, 4:12] = 1
        cell = h[..., 4:12, 4:12]
        sigma = 2.0 * cell.std(dim=(2, 3), correction=0, keepdim=True)
        noise = torch.randn((k, *h.shape[1:]), generator=_gen(3)) * sigma * inside
        outputs = model.decode(h + noise).double()
    var = ((outputs - outputs.mean(dim=0)) ** 2).mean(dim=0).mean(dim=0)
    np.testing.assert_allclose(result.heatmap, var.float().numpy(), rtol=1e-5, atol=1e-9)


def test_same_seed_same_result_and_different_seed_differs() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    a = whole_latent_confidence(model, x, generator=_gen(7))
    b = whole_latent_confidence(model, x, generator=_gen(7))
    c = whole_latent_confidence(model, x, generator=_gen(8))
    assert a.delta == b.delta
    assert a.gamma == b.gamma
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert a.delta != c.delta


def test_more_noise_lowers_delta_and_raises_gamma() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    results = [
        whole_latent_confidence(model, x, alpha=alpha, k=10, generator=_gen(1))
        for alpha in (0.1, 0.5, 1.0, 3.0, 10.0)
    ]
    deltas = [r.delta for r in results]
    gammas = [r.gamma for r in results]
    assert deltas == sorted(deltas, reverse=True)
    assert gammas == sorted(gammas)
    assert deltas[0] > deltas[-1] + 0.3
    assert gammas[-1] > 100 * gammas[0]


class ColourOnly:
    """A decoder whose latent noise changes the colour of its output but not its brightness:
    ``(g + h, g - h, g)`` has the channel mean ``g`` whatever ``h`` is."""

    def __init__(self) -> None:
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        self.grey = ((yy + 2 * xx) % 7).float()[None, None] / 7

    def encode(self, x: Tensor) -> Tensor:
        return x[:, :1]

    def decode(self, latent: Tensor) -> Tensor:
        g = self.grey.expand(latent.shape[0], -1, -1, -1)
        return torch.cat([g + latent, g - latent, g], dim=1)


def test_delta_sees_a_change_of_colour_at_the_same_brightness() -> None:
    model = ColourOnly()
    x = _cell_image()
    quiet = whole_latent_confidence(model, x, alpha=0.0, generator=_gen())
    noisy = whole_latent_confidence(model, x, alpha=3.0, generator=_gen())
    assert noisy.gamma > 0
    assert noisy.delta < 0.9 * quiet.delta


def test_naive_reference_equals_the_batched_version() -> None:
    x = _cell_image()
    batched_model, naive_model = ToyAutoencoder(), ToyAutoencoder()
    fg = torch.zeros(1, 1, SIZE, SIZE)
    fg[..., 4:28, 2:26] = 1
    for kwargs in ({}, {"alpha": 1.0, "k": 4, "foreground": fg}):
        batched = whole_latent_confidence(batched_model, x, generator=_gen(5), **kwargs)  # type: ignore[arg-type]
        naive = naive_whole_latent_confidence(naive_model, x, generator=_gen(5), **kwargs)  # type: ignore[arg-type]
        assert naive.delta == pytest.approx(batched.delta, abs=1e-9)
        assert naive.gamma == pytest.approx(batched.gamma, rel=1e-5)
        np.testing.assert_allclose(naive.heatmap, batched.heatmap, rtol=1e-4, atol=1e-8)
    assert naive_model.decode_batches == [1] * (1 + 10) + [1] * (1 + 4)
    assert naive_model.encodes == (1 + 10) + (1 + 4)  # k + 1 full passes
    assert batched_model.decode_batches == [1, 10, 1, 4]
    assert batched_model.encodes == 2
    assert batched.latent.shape == (1, 8, 16, 16)


def test_the_foreground_may_come_from_the_clean_latent() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    seen: list[Tensor] = []

    def foreground(h: Tensor) -> Tensor:
        seen.append(h)
        mask = torch.zeros(1, 1, *h.shape[2:])
        mask[..., 2:10, 2:10] = 1
        return mask

    given = whole_latent_confidence(model, x, foreground=foreground, generator=_gen(3))
    (h,) = seen
    fixed = foreground(h)
    assert torch.equal(given.latent, h)
    same = whole_latent_confidence(model, x, foreground=fixed, generator=_gen(3))
    assert given.delta == same.delta and given.gamma == same.gamma


def test_all_zero_foreground_means_no_noise() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    result = whole_latent_confidence(
        model, x, alpha=5.0, foreground=torch.zeros(1, 1, SIZE, SIZE), generator=_gen()
    )
    assert result.gamma == pytest.approx(0.0, abs=1e-12)
    assert float(np.abs(result.heatmap).max()) < 1e-12
    clean = result.clean[0]
    assert result.delta == pytest.approx(image_delta(clean, clean[None]), abs=1e-9)
    assert result.delta_normalised == pytest.approx(1.0, abs=1e-9)
    # alpha = 0 is the same thing
    still = whole_latent_confidence(model, x, alpha=0.0, generator=_gen())
    assert still.gamma == pytest.approx(0.0, abs=1e-12)
    assert still.delta == pytest.approx(result.delta, abs=1e-9)


def test_foreground_confines_the_noise() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    fg = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    fg[..., :, :16] = True  # left half -> latent columns 0..7
    result = whole_latent_confidence(model, x, alpha=3.0, foreground=fg, generator=_gen())
    # The decoder sees 2 latent columns past the mask edge: beyond that, no variance.
    assert float(result.heatmap[:, 24:].max()) < 1e-12
    assert float(result.heatmap[:, :12].mean()) > 1e-4
    free = whole_latent_confidence(model, x, alpha=3.0, generator=_gen())
    assert free.gamma > result.gamma


def test_disentangled_confidence() -> None:
    model = ToyDisentangled()
    x = _cell_image()
    result = disentangled_confidence(model, x, k=20, generator=_gen())
    assert model.decode_batches == [1, 20]
    assert result.heatmap.shape == (SIZE, SIZE)
    assert result.clean.shape == (1, 3, SIZE, SIZE)
    same = disentangled_confidence(model, x, k=20, generator=_gen())
    assert (same.delta, same.gamma) == (result.delta, result.gamma)
    low = disentangled_confidence(model, x, alpha=0.3, beta=0.7, generator=_gen(2))
    high = disentangled_confidence(model, x, alpha=6.0, beta=14.0, generator=_gen(2))
    assert low.delta > result.delta > high.delta
    assert low.gamma < result.gamma < high.gamma
    none = disentangled_confidence(model, x, alpha=0.0, beta=0.0, k=3, generator=_gen())
    assert none.gamma == pytest.approx(0.0, abs=1e-12)
    assert none.delta == pytest.approx(image_delta(none.clean[0], none.clean), abs=1e-9)
    assert none.variant == DISENTANGLED
    # k = 1: a single structure-corrupted sample, no variance
    one = disentangled_confidence(model, x, k=1, generator=_gen())
    assert one.gamma == 0.0
    assert one.delta > 0


def test_disentangled_splits_structure_and_style_noise() -> None:
    """ceil(k/2) structure-corrupted samples first, then floor(k/2) style-corrupted ones."""
    model = ToyDisentangled()
    x = _cell_image()
    captured: list[tuple[Tensor, Tensor, Tensor]] = []
    decode = model.decode

    def spy(t: Tensor, s: Tensor, bg: Tensor) -> Tensor:
        captured.append((t.clone(), s.clone(), bg.clone()))
        return decode(t, s, bg)

    model.decode = spy  # type: ignore[method-assign]
    disentangled_confidence(model, x, k=5, generator=_gen())
    (t0, s0, bg0), (ts, ss, bgs) = captured
    assert ts.shape[0] == ss.shape[0] == bgs.shape[0] == 5
    assert torch.equal(bgs, bg0.expand_as(bgs))
    assert all(not torch.equal(ts[i], t0[0]) for i in range(3))
    assert all(torch.equal(ss[i], s0[0]) for i in range(3))
    assert all(torch.equal(ts[i], t0[0]) for i in range(3, 5))
    assert all(not torch.equal(ss[i], s0[0]) for i in range(3, 5))


def test_bad_inputs_raise_value_error() -> None:
    model = ToyAutoencoder()
    x = _cell_image()
    with pytest.raises(ValueError, match=r"\[1, C, H, W\]"):
        whole_latent_confidence(model, x.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match=r"\[1, C, H, W\]"):
        whole_latent_confidence(model, x[0])
    with pytest.raises(ValueError, match="k must"):
        whole_latent_confidence(model, x, k=0)
    with pytest.raises(ValueError, match="alpha"):
        whole_latent_confidence(model, x, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        naive_whole_latent_confidence(model, x, alpha=float("nan"))
    with pytest.raises(ValueError, match="foreground"):
        whole_latent_confidence(model, x, foreground=torch.ones(1, SIZE, SIZE))
    disentangled = ToyDisentangled()
    with pytest.raises(ValueError, match=r"\[1, C, H, W\]"):
        disentangled_confidence(disentangled, x.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="k must"):
        disentangled_confidence(disentangled, x, k=0)
    with pytest.raises(ValueError, match="beta"):
        disentangled_confidence(disentangled, x, beta=-0.5)

    class WrongBatch(ToyAutoencoder):
        def decode(self, latent: Tensor) -> Tensor:
            return super().decode(latent)[:1]

    with pytest.raises(ValueError, match="decode"):
        whole_latent_confidence(WrongBatch(), x, k=3)
