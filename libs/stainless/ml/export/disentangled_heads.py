"""Served form of model 2 (the disentangled translator, thesis ch. 6): the chapter-6
confidence as a TorchScript module.

``stain_confidence`` takes a DIC batch ``[B, 1, H, W]`` in [-1, 1] (replicated to the
translator's image channels) and runs Algorithm 2 inside the served
model for every cell of the batch: the style sampled from the mapping network for the
stained domain (``s~ = M_S(z_s)``, ``z_s ~ N(0, I)``), the structure ``t`` and the
background from the input, ``x_trg = G(b, s~, t)``; ``ceil(k/2)`` outputs with the structure
corrupted (``t + η``, std α·Ω(t)) and ``floor(k/2)`` with the style corrupted (``s~ + ψ``,
std β·Ω(s~)), decoded with the clean one as one batch; δ (raw MI per channel, averaged), γ
and the heat map as model 1's head computes them. It returns ``(stained, delta, gamma,
heatmap)``: model 2 has no classifier (:class:`WithProbabilities` adds model 1's for
serving, :func:`write_disentangled_repository`). For one cell the draws (``z_s``, then η, then ψ)
are those of ``disentangled_confidence`` on ``SampledStyleModel`` with a generator seeded
as the global one, so the served δ can be checked against the eager one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from stainless.domain.served import ConfidenceVariant, ServedManifest
from stainless.ml.confidence.mutual_information import default_bins
from stainless.ml.export.heads import eager_models, served_models, summarise
from stainless.ml.export.triton import (
    InstanceKind,
    served_outputs,
    write_manifest,
    write_served_model,
)
from stainless.ml.metrics.class_calibration import Scaling
from stainless.ml.models.disentangled import STAINED, DisentangledTranslator
from stainless.ml.models.mtmd import MultiTaskTranslator


class _Replicated(nn.Module):
    """One encoder of ``x`` replicated from one DIC channel to the image channels."""

    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.channels = channels

    def forward(self, dic: Tensor) -> Tensor:
        result: Tensor = self.encoder(dic.expand(-1, self.channels, -1, -1))
        return result


class _StainedStyle(nn.Module):
    def __init__(self, translator: DisentangledTranslator) -> None:
        super().__init__()
        self.translator = translator

    def forward(self, z: Tensor) -> Tensor:
        return self.translator.sample_style(z, STAINED)


class _Generate(nn.Module):
    def __init__(self, translator: DisentangledTranslator) -> None:
        super().__init__()
        self.translator = translator

    def forward(self, background: Tensor, style: Tensor, structure: Tensor) -> Tensor:
        return self.translator.decode(structure, style, background)


class DisentangledStainConfidence(nn.Module):
    """Stained image, δ, γ and heat map per cell by Algorithm 2 (see the module docstring)."""

    def __init__(
        self,
        structure: nn.Module,
        background: nn.Module,
        style: nn.Module,
        generate: nn.Module,
        *,
        noise_dim: int,
        k: int,
        alpha: float,
        beta: float,
        pixels: int,
    ) -> None:
        super().__init__()
        if k < 1 or alpha < 0 or beta < 0 or pixels < 5 or noise_dim < 1:
            raise ValueError(
                f"need k ≥ 1, alpha and beta ≥ 0, at least 5 pixels and a noise length, got "
                f"{k}, {alpha}, {beta}, {pixels}, {noise_dim}"
            )
        self.structure = structure
        self.background = background
        self.style = style
        self.generate = generate
        self.noise_dim = noise_dim
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.bins = default_bins(pixels)

    def forward(self, dic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch = dic.shape[0]
        k_t = self.k - self.k // 2
        k_s = self.k // 2
        z = torch.randn(batch, self.noise_dim, dtype=dic.dtype, device=dic.device)
        s = self.style(z)
        t = self.structure(dic)
        b = self.background(dic)
        sigma_t = self.alpha * t.flatten(1).std(dim=1, correction=0)
        eta = torch.randn(
            batch, k_t, t.shape[1], t.shape[2], t.shape[3], dtype=t.dtype, device=t.device
        )
        sigma_s = self.beta * s.std(dim=1, correction=0)
        psi = torch.randn(batch, k_s, s.shape[1], dtype=s.dtype, device=s.device)
        t_clean = t.unsqueeze(1)
        s_clean = s.unsqueeze(1)
        structures = torch.cat(
            [
                t_clean,
                t_clean + eta * sigma_t.view(batch, 1, 1, 1, 1),
                t_clean.expand(-1, k_s, -1, -1, -1),
            ],
            dim=1,
        )
        styles = torch.cat(
            [
                s_clean,
                s_clean.expand(-1, k_t, -1),
                s_clean + psi * sigma_s.view(batch, 1, 1),
            ],
            dim=1,
        )
        backgrounds = b.unsqueeze(1).expand(-1, self.k + 1, -1, -1, -1)
        out = self.generate(
            backgrounds.flatten(0, 1), styles.flatten(0, 1), structures.flatten(0, 1).contiguous()
        )
        out = out.reshape(batch, self.k + 1, out.shape[1], out.shape[2], out.shape[3])
        clean = out[:, 0]
        delta, gamma, heat = summarise(clean, out[:, 1:], self.bins)
        return clean, delta, gamma, heat


def served_disentangled_models(
    translator: DisentangledTranslator,
    *,
    image_size: int,
    k: int = 20,
    alpha: float = 3.0,
    beta: float = 7.0,
) -> dict[str, torch.jit.ScriptModule]:
    """``stain_confidence`` of a trained model 2 as TorchScript, keyed by the Triton model
    name (Algorithm 2's defaults: k = 20, α = 3, β = 7)."""
    translator = translator.eval()
    channels = translator.image_channels
    noise_dim = translator.style_mapping.noise_dim
    example = torch.zeros(2, 1, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit._trace.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        structure = torch.jit.trace(_Replicated(translator.structure_encoder, channels), example)
        background = torch.jit.trace(_Replicated(translator.background_encoder, channels), example)
        style = torch.jit.trace(_StainedStyle(translator), torch.zeros(2, noise_dim))
        generate = torch.jit.trace(
            _Generate(translator),
            (background(example), style(torch.zeros(2, noise_dim)), structure(example)),
        )
        confidence = DisentangledStainConfidence(
            structure,
            background,
            style,
            generate,
            noise_dim=noise_dim,
            k=k,
            alpha=alpha,
            beta=beta,
            pixels=image_size**2,
        )
        return {"stain_confidence": torch.jit.script(confidence)}


class WithProbabilities(nn.Module):
    """Model 2's ``stain_confidence`` with another model's class probabilities appended, so
    it answers the served contract (stained, δ, γ, heat map, probabilities) of every
    production stain model. The classifier draws no noise: the head's draws are unchanged."""

    def __init__(self, confidence: nn.Module, classify: nn.Module) -> None:
        super().__init__()
        self.confidence = confidence
        self.classify = classify

    def forward(self, dic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        stained, delta, gamma, heat = self.confidence(dic)
        return stained, delta, gamma, heat, self.classify(dic)


def write_disentangled_repository(
    translator: DisentangledTranslator,
    classifier: MultiTaskTranslator,
    repo: Path,
    *,
    name: str,
    classifier_name: str,
    image_size: int,
    classes: Sequence[str],
    review_threshold: float,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    max_batch_size: int = 32,
    k: int = 20,
    alpha: float = 3.0,
    beta: float = 7.0,
    calibration: Scaling | None = None,
) -> list[Path]:
    """Export model 2 as the production stain model under ``repo``; return the folders.

    ``stain_confidence`` runs Algorithm 2 (the chapter-6 δ) and takes the class
    probabilities from ``classifier`` (a model 1 of the same ``image_size``, named
    ``classifier_name`` in the manifest); ``classify`` is that classifier alone. The
    manifest says ``confidence_variant`` disentangled, k, α and β. ``calibration`` is the
    classifier's (its class logits scaled before the softmax).
    """
    stain = served_disentangled_models(
        translator, image_size=image_size, k=k, alpha=alpha, beta=beta
    )["stain_confidence"]
    classify = served_models(classifier, image_size=image_size, calibration=calibration)["classify"]
    with warnings.catch_warnings():  # deprecated, but what Triton's libtorch backend loads
        warnings.simplefilter("ignore", FutureWarning)
        served = torch.jit.script(WithProbabilities(stain, classify))
    folders = [
        # It draws noise: TorchScript (see heads.StainConfidence), ONNX is not tried.
        write_served_model(
            repo / "stain_confidence",
            eager=stain,
            scripted=served,
            outputs=served_outputs("stain_confidence", image_size, len(classes), 0),
            version=version,
            image_size=image_size,
            instance=instance,
            max_batch_size=max_batch_size,
            onnx=False,
        ),
        write_served_model(
            repo / "classify",
            eager=eager_models(classifier, image_size=image_size, calibration=calibration)[
                "classify"
            ],
            scripted=classify,
            outputs=served_outputs("classify", image_size, len(classes), 0),
            version=version,
            image_size=image_size,
            instance=instance,
            max_batch_size=max_batch_size,
        ),
    ]
    manifest = ServedManifest(
        name=name,
        version=version,
        image_size=image_size,
        classes=tuple(classes),
        k=k,
        alpha=alpha,
        beta=beta,
        review_threshold=review_threshold,
        confidence_variant=ConfidenceVariant.DISENTANGLED,
        classifier=classifier_name,
        calibrated_probabilities=calibration is not None,
    )
    write_manifest(repo, manifest)
    return folders
