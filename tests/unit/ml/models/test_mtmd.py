"""Model 1, the multi-task multi-domain translator (thesis ch. 5)."""

from __future__ import annotations

import time

import pytest
import torch

from stainless.ml.models import blocks
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import (
    Discriminator,
    Domain,
    Encoder,
    Generator,
    LatentClassifier,
    LatentSegmenter,
    MultiTaskTranslator,
    build_multitask,
    build_multitask_discriminator,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> MultiTaskConfig:
    return MultiTaskConfig.tiny()


def test_tiny_shapes_of_every_component(tiny: MultiTaskConfig) -> None:
    model = build_multitask(tiny).eval()
    critic = build_multitask_discriminator(tiny)
    x = torch.randn(2, tiny.in_channels, 64, 64)
    h = model.encode(x)
    latent = tiny.base_channels * 2**tiny.n_down
    assert h.shape == (2, latent, 16, 16)
    onehot = torch.nn.functional.one_hot(torch.tensor([1, 2]), tiny.n_domains).float()
    image = model.decode(h, onehot)
    assert image.shape == (2, tiny.out_channels, 64, 64)
    assert image.abs().max() <= 1.0
    assert model.translate(x, Domain.BF).shape == (2, 3, 64, 64)
    assert model.translate(x, torch.tensor([0, 2])).shape == (2, 3, 64, 64)
    assert model.classify(h).shape == (2, 7)
    assert model.segment(h).shape == (2, 4, 64, 64)
    source, domain = critic(image)
    assert source.shape == (2, 1, 4, 4)
    assert domain.shape == (2, tiny.n_domains)


def test_single_channel_dic_to_rgb() -> None:
    model = MultiTaskTranslator(
        in_channels=1,
        out_channels=3,
        n_domains=2,
        n_classes=7,
        n_segmentation_classes=4,
        base_channels=8,
        n_down=2,
        n_res_encoder=1,
        n_res_generator=1,
        head_channels=16,
    )
    assert model.translate(torch.randn(2, 1, 32, 32), 1).shape == (2, 3, 32, 32)


def test_domain_enters_at_the_bottleneck_only(tiny: MultiTaskConfig) -> None:
    model = build_multitask(tiny).eval()
    x = torch.randn(2, tiny.in_channels, 64, 64)
    # The encoder takes no domain argument at all.
    assert model.encoder.forward.__code__.co_argcount == 2
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == tiny.in_channels
    fuse_conv = model.generator.fuse[0]
    assert isinstance(fuse_conv, torch.nn.Conv2d)
    assert fuse_conv.in_channels == model.encoder.out_channels + tiny.n_domains
    with torch.no_grad():
        h1, h2 = model.encode(x), model.encode(x)
        to_bf = model.translate(x, Domain.BF)
        to_cv = model.translate(x, Domain.CV)
    assert torch.equal(h1, h2)
    assert not torch.allclose(to_bf, to_cv)


def test_gradients_reach_the_encoder(tiny: MultiTaskConfig) -> None:
    model = build_multitask(tiny)
    critic = build_multitask_discriminator(tiny)
    x = torch.randn(2, tiny.in_channels, 64, 64)
    h = model.encode(x)
    fake = model.decode(h, torch.eye(tiny.n_domains)[:2])
    source, domain = critic(fake)
    loss: torch.Tensor = (
        -source.mean()
        + domain.logsumexp(1).mean()
        + torch.nn.functional.cross_entropy(model.classify(h), torch.tensor([0, 5]))
        + torch.nn.functional.cross_entropy(model.segment(h), torch.zeros(2, 64, 64).long())
    )
    loss.backward()
    for name, parameter in model.encoder.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert all(p.grad is not None for p in model.generator.parameters())


def test_thesis_config_forward_at_256() -> None:
    config = MultiTaskConfig.thesis()
    model = build_multitask(config).eval()
    critic = build_multitask_discriminator(config).eval()
    assert 5_000_000 < model.parameter_count() < 40_000_000
    assert blocks.parameter_count(critic) > 1_000_000
    start = time.perf_counter()
    with torch.no_grad():
        x = torch.randn(1, 3, 256, 256)
        h = model.encode(x)
        image = model.decode(h, torch.eye(3)[1:2])
        source, domain = critic(image)
        assert h.shape == (1, 256, 64, 64)
        assert image.shape == (1, 3, 256, 256)
        assert model.classify(h).shape == (1, 7)
        assert model.segment(h).shape == (1, 4, 256, 256)
        assert source.shape == (1, 1, 4, 4)
        assert domain.shape == (1, 3)
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"image_size": 65},
        {"base_channels": -1},
        {"n_domains": 0},
        {"disc_layers": 9},
        {"n_classes": 2.5},
    ],
)
def test_invalid_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        MultiTaskConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_arguments_raise(tiny: MultiTaskConfig) -> None:
    with pytest.raises(ValueError, match="in_channels"):
        Encoder(in_channels=0, base_channels=8, n_down=2, n_res=1)
    with pytest.raises(ValueError, match="n_res"):
        Encoder(in_channels=1, base_channels=8, n_down=2, n_res=-1)
    with pytest.raises(ValueError, match="divisible"):
        Generator(latent_channels=6, n_domains=2, out_channels=3, n_res=0, n_up=2)
    with pytest.raises(ValueError, match="n_domains"):
        Discriminator(in_channels=3, base_channels=8, n_layers=2, n_domains=0)
    with pytest.raises(ValueError, match="n_classes"):
        LatentClassifier(latent_channels=8, hidden_channels=8, n_classes=0)
    with pytest.raises(ValueError, match="n_up"):
        LatentSegmenter(latent_channels=8, hidden_channels=8, n_up=0, n_classes=4)
    with pytest.raises(ValueError):  # noqa: PT011
        Domain("HE")
    with pytest.raises(ValueError):  # noqa: PT011
        blocks.Norm("group")
    model = build_multitask(tiny)
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="domain index"):
        model.translate(x, 3)
    with pytest.raises(ValueError, match="domain indices"):
        model.translate(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="domain_code"):
        model.decode(model.encode(x), torch.ones(2, 2))
