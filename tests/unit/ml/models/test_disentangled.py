"""Model 2, the style/structure disentangled translator, and its frozen U-Net (thesis ch. 6)."""

from __future__ import annotations

import pytest
import torch

from stainless.ml.models import blocks
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import (
    DisentangledCode,
    DisentangledTranslator,
    Generator,
    MultiHeadDiscriminator,
    StructureMapping,
    StyleMapping,
    build_disentangled,
    build_disentangled_discriminator,
)
from stainless.ml.models.segmentation import UNet, build_segmenter, build_structure_critic


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny() -> DisentangledConfig:
    return DisentangledConfig.tiny()


def test_tiny_shapes_of_every_component(tiny: DisentangledConfig) -> None:
    model = build_disentangled(tiny).eval()
    critic = build_disentangled_discriminator(tiny)
    x = torch.randn(2, 3, 64, 64)
    z_s, z_t = torch.randn(2, tiny.style_noise_dim), torch.randn(2, tiny.structure_noise_dim)
    assert model.sample_style(z_s, 1).shape == (2, tiny.style_dim)
    assert model.style_mapping.all_domains(z_s).shape == (2, 2, tiny.style_dim)
    assert model.encode_style(x, torch.tensor([0, 1])).shape == (2, tiny.style_dim)
    t_tilde = model.sample_structure(z_t)
    assert t_tilde.shape == (2, tiny.structure_channels, 16, 16)
    code = model.encode(x, 1)
    assert code.structure.shape == t_tilde.shape
    assert code.style.shape == (2, tiny.style_dim)
    assert code.background.shape == (2, 64, 16, 16)
    image = model.decode(*code)
    assert image.shape == (2, 3, 64, 64)
    assert image.abs().max() <= 1.0
    # The three outputs of thesis ch. 6.1.
    s_tilde = model.sample_style(z_s, 1)
    for structure, style in ((t_tilde, s_tilde), (t_tilde, code.style), (code.structure, s_tilde)):
        assert model.decode(structure, style, code.background).shape == (2, 3, 64, 64)
    assert model.translate(x, 1, style_noise=z_s).shape == (2, 3, 64, 64)
    assert critic(image, torch.tensor([0, 1])).shape == (2,)
    assert critic.all_domains(image).shape == (2, 2)
    segmenter = build_structure_critic(tiny)
    assert segmenter(image).shape == (2, 4, 64, 64)


def test_style_heads_and_style_select_per_sample(tiny: DisentangledConfig) -> None:
    mapping = StyleMapping(noise_dim=4, style_dim=3, hidden=8, n_domains=2)
    z = torch.randn(2, 4)
    all_heads = mapping.all_domains(z)
    mixed = mapping(z, torch.tensor([1, 0]))
    assert torch.equal(mixed[0], all_heads[0, 1])
    assert torch.equal(mixed[1], all_heads[1, 0])
    assert not torch.allclose(mapping(z, 0), mapping(z, 1))


def test_style_and_structure_both_change_the_output(tiny: DisentangledConfig) -> None:
    model = build_disentangled(tiny).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        code = model.encode(x, 1)
        t, s, bg = model.encode(x)  # the stained style by default
        assert torch.equal(s, code.style)
        assert torch.equal(model.decode(t, s, bg), model.decode(*code))
        clean = model.decode(*code)
        new_style = model.decode(code.structure, torch.randn_like(code.style), code.background)
        new_structure = model.decode(
            7 * torch.randn_like(code.structure), code.style, code.background
        )
        batch = code.repeat(3)
        assert isinstance(batch, DisentangledCode)
        assert batch.structure.shape[0] == 6
        assert torch.allclose(model.decode(*batch)[::3], clean, atol=1e-5)
    assert not torch.allclose(new_style, clean, atol=1e-4)
    assert not torch.allclose(new_structure, clean, atol=1e-4)


def test_gradients_flow_through_the_frozen_segmenter(tiny: DisentangledConfig) -> None:
    model = build_disentangled(tiny)
    critic = build_disentangled_discriminator(tiny)
    segmenter = build_structure_critic(tiny)
    x = torch.randn(2, 3, 64, 64)
    code = model.encode(x, 0)
    s_tilde = model.sample_style(torch.randn(2, tiny.style_noise_dim), 1)
    fake = model.decode(code.structure, s_tilde, code.background)
    masks = torch.randint(0, 4, (2, 64, 64))
    loss: torch.Tensor = (
        torch.nn.functional.softplus(-critic(fake, 1)).mean()
        + torch.nn.functional.cross_entropy(segmenter(fake), masks)
        + (s_tilde - model.encode_style(fake, 1)).abs().mean()
    )
    loss.backward()
    for encoder in (model.structure_encoder, model.background_encoder, model.style_encoder):
        for name, parameter in encoder.named_parameters():
            assert parameter.grad is not None, name
    assert all(p.grad is not None for p in model.style_mapping.shared.parameters())
    assert all(p.grad is None for p in segmenter.parameters())
    assert not segmenter.training


def test_thesis_config_at_128() -> None:
    config = DisentangledConfig.thesis()
    model = build_disentangled(config).eval()
    critic = build_disentangled_discriminator(config).eval()
    segmenter = build_structure_critic(config)
    assert model.parameter_count() > 10_000_000
    assert blocks.parameter_count(critic) > 1_000_000
    assert segmenter.parameter_count() > 100_000
    with torch.no_grad():
        x = torch.randn(1, 3, 128, 128)
        code = model.encode(x, 1, style_noise=torch.randn(1, config.style_noise_dim))
        assert code.structure.shape == (1, 8, 32, 32)
        assert code.background.shape == (1, 512, 16, 16)
        image = model.decode(*code)
        assert image.shape == (1, 3, 128, 128)
        assert critic(image, 1).shape == (1,)
        assert segmenter(image).shape == (1, 4, 128, 128)


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 100}, {"style_dim": 0}, {"n_domains": -1}, {"n_down": 8}]
)
def test_invalid_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        DisentangledConfig(**kwargs)  # type: ignore[arg-type]


def _kwargs(config: DisentangledConfig) -> dict[str, int]:
    return {
        "image_channels": 3,
        "n_domains": 2,
        "base_channels": 8,
        "max_channels": 16,
        "n_down": 2,
        "n_res": 1,
        "style_dim": 4,
        "style_noise_dim": 4,
        "mapping_hidden": 8,
        "structure_channels": 2,
        "structure_down": 2,
        "structure_size": config.image_size // 4,
        "structure_noise_dim": 4,
        "spade_hidden": 8,
        "style_down": 2,
    }


def test_invalid_arguments_raise(tiny: DisentangledConfig) -> None:
    with pytest.raises(ValueError, match="n_domains"):
        StyleMapping(noise_dim=4, style_dim=3, hidden=8, n_domains=0)
    with pytest.raises(ValueError, match="z must be"):
        StyleMapping(noise_dim=4, style_dim=3, hidden=8, n_domains=2)(torch.randn(2, 5), 0)
    with pytest.raises(ValueError, match="structure_size"):
        StructureMapping(noise_dim=4, structure_channels=2, structure_size=0, hidden=8)
    with pytest.raises(ValueError, match="n_res"):
        Generator(
            out_channels=3,
            base_channels=8,
            max_channels=32,
            n_up=2,
            n_res=-1,
            style_dim=4,
            structure_channels=2,
            spade_hidden=8,
        )
    with pytest.raises(ValueError, match="n_domains"):
        MultiHeadDiscriminator(
            in_channels=3, base_channels=8, max_channels=32, n_down=2, n_domains=0
        )
    with pytest.raises(ValueError, match="depth"):
        UNet(in_channels=3, n_classes=4, base_channels=8, depth=0)
    with pytest.raises(ValueError, match="divisible"):
        build_segmenter(tiny)(torch.randn(1, 3, 30, 30))
    model = build_disentangled(tiny)
    with pytest.raises(ValueError, match="domain index"):
        model.encode(torch.randn(1, 3, 64, 64), 2)
    with pytest.raises(ValueError, match="target_domain"):
        DisentangledTranslator(**{**_kwargs(tiny), "target_domain": 2})
    with pytest.raises(ValueError, match="style must be"):
        model.decode(torch.zeros(1, 4, 16, 16), torch.zeros(1, 3), torch.zeros(1, 64, 16, 16))
