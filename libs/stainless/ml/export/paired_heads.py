"""Served forms of model 3 (thesis ch. 8): stain, classify and stain_confidence.

``stain`` is the generator (global generator plus local enhancer). ``classify`` is the
critic's AC-GAN head on the (stained, DIC) pair: the probabilities of the cell classes the
model was trained on (the twelve clinical classes for a clinical model). ``stain_confidence``
is the chapter-7 δ as the thesis wrote it for a model without a segmenter: noise of std α
times the latent's own std on the *whole* latent (no foreground mask: model 3 has no
segmentation head), k corrupted codes decoded with the clean one in one batch, then δ, γ
and the heat map as for model 1 (:func:`~stainless.ml.export.heads.summarise`) and the
probabilities of the clean stained cell. Its variant is ``whole-latent-unmasked``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from stainless.domain.served import ConfidenceVariant, ServedManifest
from stainless.ml.confidence.mutual_information import default_bins
from stainless.ml.export.heads import (
    CalibratedSoftmax,
    Chain,
    check_noise,
    noised_codes,
    split_decodes,
    summarise,
)
from stainless.ml.export.triton import (
    InstanceKind,
    served_outputs,
    write_manifest,
    write_served_model,
)
from stainless.ml.metrics.class_calibration import Scaling
from stainless.ml.models.paired import MultiScaleDiscriminator, PairedGenerator

__all__ = ["PairedStainConfidence", "paired_models", "write_paired_repository"]


class _Encode(nn.Module):
    def __init__(self, generator: PairedGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, dic: Tensor) -> Tensor:
        return self.generator.encode(dic)


class _Decode(nn.Module):
    def __init__(self, generator: PairedGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, h: Tensor) -> Tensor:
        return self.generator.decode(h)


class _Judge(nn.Module):
    """Class probabilities of a stained cell given its DIC crop (the AC-GAN head),
    calibrated when a :class:`Scaling` is given."""

    def __init__(self, critic: MultiScaleDiscriminator, calibration: Scaling | None) -> None:
        super().__init__()
        self.critic = critic
        self.softmax = CalibratedSoftmax(critic.n_classes, calibration)

    def forward(self, stained: Tensor, dic: Tensor) -> Tensor:
        result: Tensor = self.softmax(
            MultiScaleDiscriminator.class_logits(self.critic(stained, dic))
        )
        return result


class _Classify(nn.Module):
    def __init__(self, stain: nn.Module, judge: nn.Module) -> None:
        super().__init__()
        self.stain = stain
        self.judge = judge

    def forward(self, dic: Tensor) -> Tensor:
        result: Tensor = self.judge(self.stain(dic), dic)
        return result


class PairedStainConfidence(nn.Module):
    """Stained image, δ, γ, heat map and class probabilities per cell: the whole latent
    corrupted (no mask), one batched decode. TorchScript only: it draws noise (see
    :class:`~stainless.ml.export.heads.StainConfidence`)."""

    def __init__(
        self,
        encode: nn.Module,
        decode: nn.Module,
        judge: nn.Module,
        *,
        k: int,
        alpha: float,
        pixels: int,
    ) -> None:
        super().__init__()
        check_noise(k=k, alpha=alpha, pixels=pixels)
        self.encode = encode
        self.decode = decode
        self.judge = judge
        self.k = k
        self.alpha = alpha
        self.bins = default_bins(pixels)

    def forward(self, dic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        h = self.encode(dic)
        out = self.decode(noised_codes(h, torch.ones_like(h[:, :1]), self.k, self.alpha))
        clean, corrupted = split_decodes(out, self.k)
        delta, gamma, heat = summarise(clean, corrupted, self.bins)
        return clean, delta, gamma, heat, self.judge(clean, dic)


def paired_models(
    generator: PairedGenerator,
    critic: MultiScaleDiscriminator,
    *,
    image_size: int,
    k: int = 10,
    alpha: float = 3.0,
    scripted: bool = True,
    calibration: Scaling | None = None,
) -> dict[str, nn.Module]:
    """The three served computations, keyed by Triton model name: eval-mode eager modules,
    or (``scripted``) their TorchScript forms, networks traced at ``image_size``.
    ``calibration`` scales the head's class logits before their softmax."""
    generator, critic = generator.eval(), critic.eval()
    encode: nn.Module = _Encode(generator)
    decode: nn.Module = _Decode(generator)
    judge: nn.Module = _Judge(critic, calibration)
    if scripted:
        example = torch.zeros(2, 1, image_size, image_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit._trace.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            encode = torch.jit.trace(encode, example)
            h = encode(example)
            decode = torch.jit.trace(decode, h)
            judge = torch.jit.trace(judge, (decode(h), example))
    stain = Chain(encode, decode)
    models: dict[str, nn.Module] = {
        "stain": stain,
        "classify": _Classify(stain, judge),
        "stain_confidence": PairedStainConfidence(
            encode, decode, judge, k=k, alpha=alpha, pixels=image_size**2
        ),
    }
    if not scripted:
        return {name: model.eval() for name, model in models.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return {name: torch.jit.script(model) for name, model in models.items()}


def write_paired_repository(
    generator: PairedGenerator,
    critic: MultiScaleDiscriminator,
    repo: Path,
    *,
    name: str,
    image_size: int,
    crop_size: int,
    classes: Sequence[str],
    review_threshold: float,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    max_batch_size: int = 32,
    k: int = 10,
    alpha: float = 3.0,
    calibration: Scaling | None = None,
) -> list[Path]:
    """Export model 3 under ``repo``; return the folders. The manifest says the crop size
    the model takes (``crop_size`` px crops resized to ``image_size``), its classes, the
    ``whole-latent-unmasked`` variant of its δ and whether its probabilities are calibrated
    (``calibration``, fitted by ``stainless-evaluate``)."""
    eager, served = (
        paired_models(
            generator,
            critic,
            image_size=image_size,
            k=k,
            alpha=alpha,
            scripted=scripted,
            calibration=calibration,
        )
        for scripted in (False, True)
    )
    folders = [
        write_served_model(
            repo / model,
            eager=eager[model],
            scripted=module,  # type: ignore[arg-type]
            outputs=served_outputs(model, image_size, len(classes), 0),
            version=version,
            image_size=image_size,
            instance=instance,
            max_batch_size=max_batch_size,
            onnx=model != "stain_confidence",  # it draws noise: TorchScript
        )
        for model, module in served.items()
    ]
    manifest = ServedManifest(
        name=name,
        version=version,
        image_size=image_size,
        crop_size=crop_size,
        classes=tuple(classes),
        k=k,
        alpha=alpha,
        review_threshold=review_threshold,
        confidence_variant=ConfidenceVariant.WHOLE_LATENT_UNMASKED,
        calibrated_probabilities=calibration is not None,
    )
    write_manifest(repo, manifest)
    return folders
