"""Served forms of model 1: what each Triton model computes, as eager and TorchScript modules.

``stain``, ``classify`` and ``segment`` take a DIC batch ``[B, 1, H, W]`` in [-1, 1].
``stain_confidence`` runs the whole noise-injection loop of thesis ch. 7.1 inside the
served model (latents never cross the network): encode once, classify, find the white
cell with the segmentation head, k corrupted codes per cell (noise masked to that
foreground) decoded together with the clean one, and per cell δ (raw mutual information
per channel, ⌊√(n/5)⌋ bins for the n pixels, averaged over channels and outputs), γ (mean
per-pixel variance), the heat map and the class probabilities.
The networks are traced; the loop around them is scripted so the batch size stays free.
:func:`eager_models` are the same computations as plain modules, what the ONNX exporter
and the parity checks start from.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from stainless.domain.cells import MaskClass
from stainless.ml.confidence.mutual_information import channel_mutual_information, default_bins
from stainless.ml.confidence.noise import masked_std
from stainless.ml.metrics.class_calibration import Scaling
from stainless.ml.models.blocks import domain_onehot
from stainless.ml.models.mtmd import Domain, MultiTaskTranslator


class _Encode(nn.Module):
    def __init__(self, translator: MultiTaskTranslator) -> None:
        super().__init__()
        self.translator = translator
        self.in_channels = translator.in_channels

    def forward(self, dic: Tensor) -> Tensor:
        return self.translator.encode(dic.expand(-1, self.in_channels, -1, -1))


class _Decode(nn.Module):
    def __init__(self, translator: MultiTaskTranslator, target: Domain) -> None:
        super().__init__()
        self.translator = translator
        self.target = target

    def forward(self, h: Tensor) -> Tensor:
        code = domain_onehot(
            self.target.position, n_domains=self.translator.n_domains, batch=1, like=h
        ).expand(h.shape[0], -1)
        return self.translator.decode(h, code)


class CalibratedSoftmax(nn.Module):
    """``softmax(scale * logits + bias)``: class probabilities calibrated on held-out cells
    when a :class:`Scaling` is given (the plain softmax otherwise)."""

    def __init__(self, classes: int, calibration: Scaling | None) -> None:
        super().__init__()
        scaling = calibration or Scaling(1.0, (0.0,) * classes)
        if len(scaling.bias) != classes:
            raise ValueError(f"the calibration has {len(scaling.bias)} classes, not {classes}")
        self.scale: Tensor
        self.bias: Tensor
        self.register_buffer("scale", torch.tensor(scaling.scale, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(scaling.bias, dtype=torch.float32))

    def forward(self, logits: Tensor) -> Tensor:
        return torch.softmax(self.scale * logits + self.bias, dim=1)


class _Probabilities(nn.Module):
    """The classifier's probabilities (:class:`CalibratedSoftmax`)."""

    def __init__(self, translator: MultiTaskTranslator, calibration: Scaling | None) -> None:
        super().__init__()
        self.translator = translator
        self.softmax = CalibratedSoftmax(translator.classifier.n_classes, calibration)

    def forward(self, h: Tensor) -> Tensor:
        result: Tensor = self.softmax(self.translator.classify(h))
        return result


class _Segment(nn.Module):
    def __init__(self, translator: MultiTaskTranslator) -> None:
        super().__init__()
        self.translator = translator

    def forward(self, h: Tensor) -> Tensor:
        return self.translator.segment(h)


class Chain(nn.Module):
    """``second(first(x))``: a traced encoder followed by a traced head."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.second(self.first(x))
        return result


class StainConfidence(nn.Module):
    """Stained image, δ, γ, heat map and class probabilities per cell (thesis ch. 7.1).

    The noise is zero outside the white cell (cytoplasm or nucleus) as the segmentation
    head sees it, resized to the latent (nearest), and has std α times h's channel std
    inside it (as ``whole_latent_confidence``).

    It stays TorchScript: ONNX can express the graph (``randn_like`` becomes
    ``RandomNormalLike``, the histogram ``ScatterElements`` with ``reduction="add"``), but
    not faithfully. onnxruntime draws the noise with its own generator, seeded once in the
    file, so δ, γ and the heat map differ from eager PyTorch by far more than 1e-4 (about
    5e-3 in δ and 0.1 in the heat map for the tiny model) and a request cannot be replayed
    with the per-request torch seed the in-process adapter and the v2 test server use. The
    exporter finds the random operators in the graph and keeps this model as TorchScript.
    """

    def __init__(
        self,
        encode: nn.Module,
        decode: nn.Module,
        segment: nn.Module,
        probabilities: nn.Module,
        *,
        k: int,
        alpha: float,
        pixels: int,
    ) -> None:
        super().__init__()
        check_noise(k=k, alpha=alpha, pixels=pixels)
        self.encode = encode
        self.decode = decode
        self.segment = segment
        self.probabilities = probabilities
        self.k = k
        self.alpha = alpha
        self.bins = default_bins(pixels)
        self.foreground_from = int(MaskClass.CYTOPLASM)

    def forward(self, dic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        h = self.encode(dic)
        labels = self.segment(h).argmax(dim=1, keepdim=True)
        foreground = (labels >= self.foreground_from).to(torch.float32)
        mask = torch.nn.functional.interpolate(foreground, size=[h.shape[2], h.shape[3]])
        inside = (mask > 0).to(h.dtype)
        out = self.decode(noised_codes(h, inside, self.k, self.alpha))
        clean, corrupted = split_decodes(out, self.k)
        delta, gamma, heat = summarise(clean, corrupted, self.bins)
        return clean, delta, gamma, heat, self.probabilities(h)


def check_noise(*, k: int, alpha: float, pixels: int) -> None:
    """k corrupted codes (≥ 1), noise scale α (≥ 0), at least 5 pixels per image."""
    if k < 1 or alpha < 0 or pixels < 5:
        raise ValueError(
            f"need k ≥ 1, alpha ≥ 0 and at least 5 pixels per image, got {k}, {alpha}, {pixels}"
        )


def noised_codes(h: Tensor, inside: Tensor, k: int, alpha: float) -> Tensor:
    """Each latent ``[B, C, H', W']`` followed by k copies with noise of std α times its
    channel std inside ``inside`` (``[B, 1, H', W']``, 0 outside), flattened to
    ``[B·(k + 1), C, H', W']`` for one decode (TorchScript)."""
    sigma = alpha * masked_std(h, inside)
    base = h.unsqueeze(1).expand(-1, k, -1, -1, -1)
    noise = torch.randn_like(base) * sigma.unsqueeze(1) * inside.unsqueeze(1)
    return torch.cat([h.unsqueeze(1), base + noise], dim=1).flatten(0, 1)


def split_decodes(out: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The clean outputs ``[B, C, H, W]`` and the corrupted ones ``[B, k, C, H, W]`` of a
    decode of :func:`noised_codes` (TorchScript)."""
    out = out.reshape(-1, k + 1, out.shape[1], out.shape[2], out.shape[3])
    return out[:, 0], out[:, 1:]


def summarise(clean: Tensor, corrupted: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """δ ``[B]``, γ ``[B]`` and the heat map ``[B, H, W]`` (float32) of clean outputs
    ``[B, C, H, W]`` and their corrupted ones ``[B, k, C, H, W]`` (TorchScript)."""
    heat = corrupted.to(torch.float64).var(dim=1, correction=0).mean(dim=1)
    delta = channel_mutual_information(
        clean.flatten(2).to(torch.float64), corrupted.flatten(3).to(torch.float64), bins
    ).mean(dim=1)
    return delta.float(), heat.mean(dim=(1, 2)).float(), heat.float()


def eager_models(
    translator: MultiTaskTranslator,
    *,
    image_size: int,
    k: int = 10,
    alpha: float = 3.0,
    calibration: Scaling | None = None,
) -> dict[str, nn.Module]:
    """The four served computations as eval-mode eager modules, keyed by Triton model name;
    ``calibration`` scales the class logits before their softmax."""
    translator = translator.eval()
    encode = _Encode(translator)
    segment = _Segment(translator)
    probabilities = _Probabilities(translator, calibration)
    decode = _Decode(translator, Domain.BF)
    models: dict[str, nn.Module] = {
        "stain": Chain(encode, decode),
        "classify": Chain(encode, probabilities),
        "segment": Chain(encode, segment),
        "stain_confidence": StainConfidence(
            encode, decode, segment, probabilities, k=k, alpha=alpha, pixels=image_size**2
        ),
    }
    return {name: model.eval() for name, model in models.items()}


def served_models(
    translator: MultiTaskTranslator,
    *,
    image_size: int,
    k: int = 10,
    alpha: float = 3.0,
    calibration: Scaling | None = None,
) -> dict[str, torch.jit.ScriptModule]:
    """The four TorchScript modules of a trained model 1, keyed by Triton model name."""
    translator = translator.eval()
    example = torch.zeros(2, 1, image_size, image_size)
    # The networks check their input shapes in Python; traced at a fixed size that is fine.
    # TorchScript is deprecated in favour of torch.export, but it is what Triton's libtorch
    # backend loads.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit._trace.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        encode = torch.jit.trace(_Encode(translator), example)
        h = encode(example)
        decode = torch.jit.trace(_Decode(translator, Domain.BF), h)
        probabilities = torch.jit.trace(_Probabilities(translator, calibration), h)
        segment = torch.jit.trace(_Segment(translator), h)
        confidence = StainConfidence(
            encode, decode, segment, probabilities, k=k, alpha=alpha, pixels=image_size**2
        )
        return {
            "stain": torch.jit.script(Chain(encode, decode)),
            "classify": torch.jit.script(Chain(encode, probabilities)),
            "segment": torch.jit.script(Chain(encode, segment)),
            "stain_confidence": torch.jit.script(confidence),
        }
