"""Model 3, the paired translator with an auxiliary classifier (thesis ch. 8)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from stainless.ml.models import blocks
from stainless.ml.models.configs import PairedConfig
from stainless.ml.models.paired import (
    GlobalGenerator,
    MultiScaleDiscriminator,
    PairedGenerator,
    PatchDiscriminator,
    build_paired_discriminator,
    build_paired_generator,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> PairedConfig:
    return PairedConfig.tiny()


def test_tiny_shapes_of_every_component(tiny: PairedConfig) -> None:
    generator = build_paired_generator(tiny).eval()
    critic = build_paired_discriminator(tiny)
    dic = torch.randn(2, 1, 64, 64)
    # Global branch at 32 px, two downsamplings: 64 channels at 8 px.
    assert generator.global_generator.encode(torch.randn(2, 1, 32, 32)).shape == (2, 64, 8, 8)
    h = generator.encode(dic)
    assert h.shape == (2, 16, 32, 32)
    image = generator.decode(h)
    assert image.shape == (2, 3, 64, 64)
    assert image.abs().max() <= 1.0
    assert torch.allclose(generator(dic), image)
    assert generator.global_image(dic).shape == (2, 3, 32, 32)
    outputs = critic(image, dic)
    assert len(outputs) == tiny.n_scales
    for scale, output in enumerate(outputs):
        side = 64 // 2**scale // 2**tiny.disc_layers
        assert output.patch.shape == (2, 1, side, side)
        assert output.class_logits.shape == (2, 7)
        assert len(output.features) == tiny.disc_layers + 1
        assert output.features[0].shape == (2, 16, 32 // 2**scale, 32 // 2**scale)
    assert MultiScaleDiscriminator.class_logits(outputs).shape == (2, 7)


def test_a_stained_class_head_reads_the_image_alone(tiny: PairedConfig) -> None:
    critic = build_paired_discriminator(dataclasses.replace(tiny, class_head="stained"))
    image, dic, other_dic = (
        torch.randn(2, 3, 64, 64),
        torch.randn(2, 1, 64, 64),
        torch.randn(2, 1, 64, 64),
    )
    outputs = critic(image, dic)
    assert all(o.class_logits.shape == (2, 7) for o in outputs)
    assert all(critic_.classifier is None for critic_ in critic.critics)
    logits = MultiScaleDiscriminator.class_logits(outputs)
    assert torch.equal(logits, MultiScaleDiscriminator.class_logits(critic(image, other_dic)))
    assert not torch.equal(logits, MultiScaleDiscriminator.class_logits(critic(-image, dic)))
    # the patch scores still judge the pair
    assert not torch.equal(outputs[0].patch, critic(image, other_dic)[0].patch)
    pair = build_paired_discriminator(tiny)
    pair_logits = MultiScaleDiscriminator.class_logits(pair(image, dic))
    assert not torch.equal(
        pair_logits, MultiScaleDiscriminator.class_logits(pair(image, other_dic))
    )


@pytest.mark.parametrize("class_head", ["pair", "stained"])
def test_a_critic_asked_not_to_classify_runs_no_head(tiny: PairedConfig, class_head: str) -> None:
    critic = build_paired_discriminator(dataclasses.replace(tiny, class_head=class_head))
    image, dic = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 64, 64)
    heads = [c.classifier for c in critic.critics if c.classifier is not None]
    heads += [critic.image_classifier] if critic.image_classifier is not None else []
    calls: list[nn.Module] = []
    for head in heads:
        head.register_forward_hook(lambda module, args, out: calls.append(module))
    full, bare = critic(image, dic), critic(image, dic, classify=False)
    assert len(calls) == len(heads) > 0  # the heads ran once, for the full pass
    for with_heads, without in zip(full, bare, strict=True):
        assert torch.equal(with_heads.patch, without.patch)
        assert without.class_logits.shape == (2, 0)


def test_a_class_conditioned_generator_paints_from_its_own_class_of_the_dic(
    tiny: PairedConfig,
) -> None:
    generator = build_paired_generator(dataclasses.replace(tiny, class_condition=True)).eval()
    dic = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        image, logits = generator.stain(dic)
        assert logits.shape == (2, 7)
        assert torch.equal(logits, generator.class_encoder(dic))  # type: ignore[misc]
        assert torch.allclose(generator(dic), image)
        # the latent follows the class probabilities: another class, another image
        classify = generator.class_encoder.classify  # type: ignore[union-attr]
        classify.bias += torch.arange(7.0) * 20
        assert not torch.allclose(generator(dic), image, atol=1e-3)
    plain = build_paired_generator(tiny)
    assert plain.class_encoder is None and plain.stain(dic)[1].shape == (2, 0)


def test_latent_noise_changes_the_image_in_one_batch(tiny: PairedConfig) -> None:
    generator = build_paired_generator(tiny).eval()
    with torch.no_grad():
        h = generator.encode(torch.randn(2, 1, 64, 64))
        clean = generator.decode(h)
        batch = h.repeat_interleave(3, dim=0)
        assert torch.allclose(generator.decode(batch)[::3], clean, atol=1e-5)
        noisy = batch + 3 * h.std(dim=(0, 2, 3), keepdim=True) * torch.randn_like(batch)
        out = generator.decode(noisy)
    assert out.shape == (6, 3, 64, 64)
    assert not torch.allclose(out[::3], clean)


def test_gradients_reach_both_branches(tiny: PairedConfig) -> None:
    generator = build_paired_generator(tiny)
    critic = build_paired_discriminator(tiny)
    dic = torch.randn(2, 1, 64, 64)
    fake = generator(dic)
    outputs = critic(fake, dic)
    loss: torch.Tensor = sum(
        ((o.patch - 1) ** 2).mean() for o in outputs
    ) + torch.nn.functional.cross_entropy(
        MultiScaleDiscriminator.class_logits(outputs), torch.tensor([1, 3])
    )
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for name, parameter in generator.named_parameters():
        if name.startswith("global_generator.output"):
            continue  # used only by global_image
        assert parameter.grad is not None, name


def test_thesis_config() -> None:
    config = PairedConfig.thesis()
    generator = build_paired_generator(config).eval()
    critic = build_paired_discriminator(config).eval()
    assert generator.parameter_count() > 100_000_000
    assert blocks.parameter_count(critic) > 1_000_000
    with torch.no_grad():
        dic = torch.randn(1, 1, 256, 256)
        assert generator.global_generator.encode(torch.randn(1, 1, 128, 128)).shape == (
            1,
            1024,
            8,
            8,
        )
        h = generator.encode(dic)
        assert h.shape == (1, 64, 128, 128)
        image = generator.decode(h)
        assert image.shape == (1, 3, 256, 256)
        outputs = critic(image, dic)
    assert [o.patch.shape[-1] for o in outputs] == [32, 16]


def test_small_config_doubles_the_tiny_resolution_at_its_widths() -> None:
    config = PairedConfig.of_size("small")
    generator = build_paired_generator(config).eval()
    critic = build_paired_discriminator(config).eval()
    assert config.global_channels == PairedConfig.tiny().global_channels
    with torch.no_grad():
        dic = torch.randn(2, 1, 128, 128)
        image = generator(dic)
        # The global branch (half the side) bottoms out at the tiny's 8 px: one more level.
        assert generator.global_generator.encode(torch.randn(1, 1, 64, 64)).shape[-1] == 8
        outputs = critic(image, dic)
    assert image.shape == (2, 3, 128, 128)
    assert [o.patch.shape[-1] for o in outputs] == [16, 8]
    assert PairedConfig.of_size("tiny") == PairedConfig.tiny()
    with pytest.raises(ValueError, match="no size 'huge'"):
        PairedConfig.of_size("huge")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 100},
        {"global_channels": 15},
        {"n_scales": 0},
        {"local_res": -2},
        {"class_head": "dic"},
    ],
)
def test_invalid_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        PairedConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_arguments_raise(tiny: PairedConfig) -> None:
    with pytest.raises(ValueError, match="global_channels"):
        PairedGenerator(
            in_channels=1,
            out_channels=3,
            global_channels=9,
            global_down=2,
            global_res=1,
            local_res=1,
        )
    with pytest.raises(ValueError, match="n_down"):
        GlobalGenerator(in_channels=1, out_channels=3, base_channels=8, n_down=0, n_res=1)
    with pytest.raises(ValueError, match="n_classes"):
        PatchDiscriminator(in_channels=4, base_channels=8, n_layers=2, n_classes=-1)
    with pytest.raises(ValueError, match="condition"):
        build_paired_discriminator(tiny)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible"):
        build_paired_generator(tiny).encode(torch.randn(1, 1, 60, 60))
