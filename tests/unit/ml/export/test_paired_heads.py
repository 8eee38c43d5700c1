"""Model 3 served: stain, the AC-GAN head as classifier, the unmasked chapter-7 δ; exported
with the classes and crop size it was trained on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.domain.vocabulary import CLINICAL
from stainless.ml.confidence.noise import whole_latent_confidence
from stainless.ml.export.checkpoint import ExportError, export_checkpoint
from stainless.ml.export.paired_heads import paired_models
from stainless.ml.export.triton import InstanceKind, load_served
from stainless.ml.models.configs import PairedConfig
from stainless.ml.models.paired import (
    MultiScaleDiscriminator,
    build_paired_discriminator,
    build_paired_generator,
)

ROOT = Path(__file__).parents[4]
CONFIG = dataclasses.replace(PairedConfig.tiny(), n_classes=len(CLINICAL.classes))
SIZE = CONFIG.image_size


@pytest.fixture(scope="module")
def networks():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_paired_generator(CONFIG).eval(), build_paired_discriminator(CONFIG).eval()


def test_the_served_confidence_is_the_eager_unmasked_whole_latent_delta(networks) -> None:  # type: ignore[no-untyped-def]
    generator, critic = networks
    head = paired_models(generator, critic, image_size=SIZE, k=6)["stain_confidence"]
    dic = torch.rand(1, 1, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(5)
        stained, delta, gamma, heat, probabilities = head(dic)
        eager = whole_latent_confidence(
            generator, dic, k=6, alpha=3.0, generator=torch.Generator().manual_seed(5)
        )
        judged = torch.softmax(
            MultiScaleDiscriminator.class_logits(critic(eager.clean, dic)), dim=1
        )
    assert (stained - eager.clean).abs().max().item() < 1e-4
    assert delta.item() == pytest.approx(eager.delta, abs=1e-4)
    assert gamma.item() == pytest.approx(eager.gamma, abs=1e-4)
    assert (heat[0] - torch.from_numpy(eager.heatmap)).abs().max().item() < 1e-4
    assert (probabilities - judged).abs().max().item() < 1e-5
    assert probabilities.shape == (1, 12)


def _model_3(  # type: ignore[no-untyped-def]
    folder: Path, networks, class_head: str = "pair", class_condition: bool = False, **data: object
) -> Path:
    folder.mkdir()
    config = yaml.safe_load((ROOT / "training/configs/paired-clinical.yaml").read_text())
    config["data"] |= data
    config["class_head"] = class_head
    config["class_condition"] = class_condition
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    generator, critic = networks
    state = {"generator": generator.state_dict(), "critic": critic.state_dict()}
    torch.save(state, folder / "checkpoint.pt")
    return folder / "checkpoint.pt"


def test_a_clinical_model_3_exports_with_its_classes_and_360_px_crops(
    tmp_path: Path, networks
) -> None:  # type: ignore[no-untyped-def]
    checkpoint = _model_3(tmp_path / "model-3", networks)
    with pytest.raises(ExportError, match="no review_threshold"):
        export_checkpoint(checkpoint, tmp_path / "repo")
    export_checkpoint(
        checkpoint, tmp_path / "repo", review_threshold=1.5, instance=InstanceKind.CPU
    )
    local = LocalInference(tmp_path / "repo")
    manifest = local.manifest
    assert manifest.model_version == "paired-tiny-clinical/1"
    assert (manifest.crop_size, manifest.image_size) == (360, SIZE)
    assert manifest.classes == CLINICAL.classes and manifest.k == 10
    assert manifest.confidence_variant == "whole-latent-unmasked"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir()) == [
        "classify",
        "stain",
        "stain_confidence",
    ]
    batch = np.random.default_rng(0).random((2, SIZE, SIZE)).astype(np.float32)
    outputs = local.infer(batch)
    assert len(outputs) == 2 and list(outputs[0].probabilities) == list(CLINICAL.classes)
    assert sum(outputs[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert outputs[0].stained.shape == (SIZE, SIZE, 3)


def test_a_head_on_the_stained_image_alone_is_exported_and_served(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = dataclasses.replace(CONFIG, class_head="stained")
    generator, critic = build_paired_generator(config).eval(), build_paired_discriminator(config)
    checkpoint = _model_3(tmp_path / "model-3", (generator, critic.eval()), class_head="stained")
    export_checkpoint(
        checkpoint, tmp_path / "repo", review_threshold=1.0, instance=InstanceKind.CPU
    )
    dic = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    stained, *_, probabilities = load_served(tmp_path / "repo", "stain_confidence", 1)(dic)
    with torch.no_grad():
        expected = torch.softmax(critic.image_classifier(stained), dim=1)  # type: ignore[misc]
    assert (probabilities - expected).abs().max().item() < 1e-5


def test_a_class_conditioned_generator_is_exported_and_served(tmp_path: Path) -> None:
    torch.manual_seed(2)
    config = dataclasses.replace(CONFIG, class_condition=True)
    generator, critic = build_paired_generator(config).eval(), build_paired_discriminator(config)
    checkpoint = _model_3(tmp_path / "model-3", (generator, critic.eval()), class_condition=True)
    export_checkpoint(
        checkpoint, tmp_path / "repo", review_threshold=1.0, instance=InstanceKind.CPU
    )
    dic = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    stained = load_served(tmp_path / "repo", "stain", 1)(dic)
    with torch.no_grad():
        expected = generator(dic)
    assert (stained - expected).abs().max().item() < 1e-4


def test_an_unknown_class_vocabulary_is_refused(tmp_path: Path, networks) -> None:  # type: ignore[no-untyped-def]
    checkpoint = _model_3(tmp_path / "model-3", networks, classes="martian")
    with pytest.raises(ExportError, match="unknown class vocabulary 'martian'"):
        export_checkpoint(checkpoint, tmp_path / "repo", review_threshold=1.0)


def test_model_3_serves_the_probabilities_its_evaluation_calibrated(
    tmp_path: Path, networks
) -> None:  # type: ignore[no-untyped-def]
    checkpoint = _model_3(tmp_path / "model-3", networks)
    export_checkpoint(checkpoint, tmp_path / "raw", review_threshold=1.0)
    assert not read_manifest(tmp_path / "raw").calibrated_probabilities
    scale, bias = 2.5, [0.1 * c for c in range(len(CLINICAL.classes))]
    calibration = {"probability_calibration": {"scaling": {"scale": scale, "bias": bias}}}
    (checkpoint.parent / "metrics.json").write_text(json.dumps(calibration))
    export_checkpoint(checkpoint, tmp_path / "repo", review_threshold=1.0)
    assert read_manifest(tmp_path / "repo").calibrated_probabilities
    generator, critic = networks
    dic = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        logits = MultiScaleDiscriminator.class_logits(critic(generator(dic), dic))
        expected = torch.softmax(scale * logits + torch.tensor(bias), dim=1)
        served = load_served(tmp_path / "repo", "classify", 1)(dic)
    assert torch.allclose(served, expected, atol=1e-5)
