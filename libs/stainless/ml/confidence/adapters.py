"""Adapters that present the translators as the latent models noise injection expects."""

from __future__ import annotations

from torch import Tensor

from stainless.domain.cells import MaskClass
from stainless.ml.models.blocks import domain_onehot
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
