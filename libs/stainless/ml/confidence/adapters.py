"""Adapters that present the translators as the latent models noise injection expects."""

from __future__ import annotations

import torch
from torch import Tensor

from stainless.domain.cells import MaskClass
from stainless.ml.models.blocks import domain_onehot
from stainless.ml.models.disentangled import STAINED, DisentangledTranslator
from stainless.ml.models.mtmd import Domain, MultiTaskTranslator


class StainingLatentModel:
    """Model 1 seen as ``h = E(x)`` and ``D(h) = G(h, BF)``: DIC in, stained image out.

    A single-channel DIC batch is replicated to the translator's input channels.
    """

    def __init__(self, translator: MultiTaskTranslator, *, target: Domain = Domain.BF) -> None:
        self._translator = translator
        self._target = target

    @property
    def translator(self) -> MultiTaskTranslator:
        return self._translator

    def encode(self, x: Tensor) -> Tensor:
        channels = self._translator.in_channels
        if x.shape[1] == 1 and channels != 1:
            x = x.repeat(1, channels, 1, 1)
        return self._translator.encode(x)

    def decode(self, latent: Tensor) -> Tensor:
        code = domain_onehot(
            self._target.position,
            n_domains=self._translator.n_domains,
            batch=latent.shape[0],
            like=latent,
        )
        return self._translator.decode(latent, code)


def predicted_foreground(translator: MultiTaskTranslator, h: Tensor) -> Tensor:
    """The white cell (cytoplasm or nucleus) as the model's own segmenter sees it, ``[1,1,H,W]``.

    The whole-latent noise is masked to this foreground (DESIGN "Confidence"), as it would
    be for a clinical cell, whose true mask is unknown.
    """
    labels = translator.segment(h).argmax(dim=1, keepdim=True)
    return (labels >= MaskClass.CYTOPLASM).to(h.dtype)


class SampledStyleModel:
    """Model 2 as Algorithm 2 (thesis ch. 6.2) uses it: the structure ``t = En_T(x)`` and
    the background from the input, the style sampled from the mapping network,
    ``s~ = M_S(z_s)`` for the stained domain with ``z_s ~ N(0, I)`` drawn from
    ``generator`` at each ``encode`` (not the style encoder's code of the input).

    A single-channel DIC batch is replicated to the translator's image channels.
    """

    def __init__(
        self,
        translator: DisentangledTranslator,
        *,
        generator: torch.Generator | None = None,
        domain: int = STAINED,
    ) -> None:
        self._translator = translator
        self._generator = generator
        self._domain = domain

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        channels = self._translator.image_channels
        if x.shape[1] == 1 and channels != 1:
            x = x.repeat(1, channels, 1, 1)
        z = torch.randn(
            x.shape[0],
            self._translator.style_mapping.noise_dim,
            generator=self._generator,
            dtype=x.dtype,
            device=x.device,
        )
        code = self._translator.encode(x, self._domain, style_noise=z)
        return code.structure, code.style, code.background

    def decode(self, t: Tensor, s: Tensor, bg: Tensor) -> Tensor:
        return self._translator.decode(t, s, bg)
