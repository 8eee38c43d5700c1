"""Exported models match eager PyTorch within 1e-4 and carry valid Triton configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stainless.core.inference.manifest import read_manifest
from stainless.domain.cells import CellClass
from stainless.domain.served import ManifestError
from stainless.ml.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.ml.confidence.noise import whole_latent_confidence
from stainless.ml.export.triton import InstanceKind, load_served, write_repository
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import Domain, build_multitask

CONFIG = MultiTaskConfig.tiny()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    translator = build_multitask(CONFIG).eval()
    repo = tmp_path_factory.mktemp("repo")
    write_repository(
        translator,
        repo,
        name="mtmd-tiny",
        image_size=CONFIG.image_size,
        classes=[c.value for c in CellClass],
        n_mask_classes=CONFIG.n_segmentation_classes,
        review_threshold=0.5,
        k=6,
        instance=InstanceKind.CPU,
    )
    return translator, repo


def test_stain_classify_segment_match_eager(exported) -> None:  # type: ignore[no-untyped-def]
    translator, repo = exported
    dic = torch.rand(3, 1, CONFIG.image_size, CONFIG.image_size) * 2 - 1
    rgb = dic.repeat(1, 3, 1, 1)
    with torch.no_grad():
        h = translator.encode(rgb)
        expected = {
            "stain": translator.translate(rgb, Domain.BF),
            "classify": torch.softmax(translator.classify(h), dim=1),
            "segment": translator.segment(h),
        }
        for name, value in expected.items():
            served = load_served(repo, name)(dic)
            assert isinstance(served, torch.Tensor)
            assert served.shape == value.shape
            assert (served - value).abs().max().item() < 1e-4, name


def test_stain_confidence_runs_the_noise_loop_inside(exported) -> None:  # type: ignore[no-untyped-def]
    translator, repo = exported
    served = load_served(repo, "stain_confidence")
    dic = torch.rand(1, 1, CONFIG.image_size, CONFIG.image_size) * 2 - 1
    model = StainingLatentModel(translator)
    with torch.no_grad():
        torch.manual_seed(11)
        stained, delta, gamma, heat, probabilities = served(dic)
        h = model.encode(dic)
        foreground = predicted_foreground(translator, h)
        torch.manual_seed(11)
        eager = whole_latent_confidence(model, dic, k=6, foreground=foreground)
        expected_probabilities = torch.softmax(translator.classify(h), dim=1)
    assert 0 < foreground.mean().item() < 1  # the mask matters for this input
    assert (stained - eager.clean).abs().max().item() < 1e-4
    assert delta.item() == pytest.approx(eager.delta, abs=1e-4)
    assert gamma.item() == pytest.approx(eager.gamma, abs=1e-4)
    assert (heat[0] - torch.from_numpy(eager.heatmap)).abs().max().item() < 1e-4
    assert (probabilities - expected_probabilities).abs().max().item() < 1e-4
    batch = torch.rand(4, 1, CONFIG.image_size, CONFIG.image_size)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in served(batch)]
    assert shapes == [(4, 3, 64, 64), (4,), (4,), (4, 64, 64), (4, 7)]


def test_manifest_names_the_version_classes_and_threshold(exported) -> None:  # type: ignore[no-untyped-def]
    _, repo = exported
    manifest = read_manifest(repo)
    assert manifest.model_version == "mtmd-tiny/1"
    assert manifest.classes == tuple(c.value for c in CellClass)
    assert (manifest.image_size, manifest.k, manifest.review_threshold) == (64, 6, 0.5)


def test_a_repository_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="stainless export"):
        read_manifest(tmp_path)
    (tmp_path / "stainless.json").write_text('{"name": "x"}')
    with pytest.raises(ManifestError, match="not a valid model manifest"):
        read_manifest(tmp_path)


def test_configs_describe_the_served_tensors(exported) -> None:  # type: ignore[no-untyped-def]
    _, repo = exported
    formats = {
        "stain": ("onnxruntime_onnx", "model.onnx"),
        "classify": ("onnxruntime_onnx", "model.onnx"),
        "segment": ("onnxruntime_onnx", "model.onnx"),
        "stain_confidence": ("pytorch_libtorch", "model.pt"),
    }
    for name, (platform, filename) in formats.items():
        text = (repo / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in text and f'platform: "{platform}"' in text
        assert "dims: [ 1, 64, 64 ]" in text and "dynamic_batching" in text
        assert "KIND_CPU" in text and "max_batch_size: 32" in text
        assert [p.name for p in (repo / name / "1").iterdir()] == [filename]
    # The reason for the format is the config's last line.
    assert "RandomNormalLike" in (repo / "stain_confidence" / "config.pbtxt").read_text()
    confidence = (repo / "stain_confidence" / "config.pbtxt").read_text()
    assert confidence.count("reshape: { shape: [ ] }") == 2 and "OUTPUT__4" in confidence
    assert "dims: [ 7 ]" in (repo / "classify" / "config.pbtxt").read_text()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model 'stain' version 1"):
        load_served(tmp_path, "stain")
