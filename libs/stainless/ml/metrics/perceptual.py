"""LPIPS perceptual distance (Zhang et al. 2018) through the ``lpips`` package.

The ``lpips`` wheel ships only the small linear heads; the ImageNet backbone
(AlexNet, VGG or SqueezeNet from torchvision) must come from a configured file.
Without one the backbone is random (``pnet_rand=True``) and :attr:`provenance`
says so — every report prints it next to the number.
"""

from __future__ import annotations

from pathlib import Path

import lpips  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import torch


class PerceptualMetric:
    def __init__(
        self,
        *,
        net: str = "alex",
        backbone_weights: Path | None = None,
        seed: int = 0,
        source: str | None = None,
    ) -> None:
        """Args:
        net: ``alex``, ``vgg`` or ``squeeze`` (the LPIPS backbones).
        backbone_weights: a torchvision state dict of that backbone (e.g. ``alexnet`` ImageNet
            weights); ``None`` = random backbone, seeded for repeatable numbers.
        seed: seed of the random backbone.
        source: where the weights came from, for the provenance (default: their path).
        """
        if net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"net must be alex, vgg or squeeze, got {net!r}")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
        if backbone_weights is None:
            self.provenance = (
                f"LPIPS-{net} with a RANDOM backbone (pnet_rand=True, seed {seed}): no pretrained "
                "weights configured; values are not comparable with published LPIPS"
            )
            return
        if not backbone_weights.is_file():
            raise FileNotFoundError(f"LPIPS backbone weights not found at {backbone_weights}")
        _load_backbone(self._model.net, torch.load(backbone_weights, map_location="cpu"))
        self.provenance = f"LPIPS-{net} with the backbone weights from {source or backbone_weights}"

    def distance(self, a: npt.ArrayLike, b: npt.ArrayLike) -> float:
        """LPIPS between two RGB (or grey) images with values in [0, 1], HxWxC or HxW."""
        return float(self.distances(np.asarray(a)[None], np.asarray(b)[None])[0])

    def distances(self, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Per-pair LPIPS of two batches N x H x W (x C) in [0, 1]."""
        x, y = _tensor(a), _tensor(b)
        if x.shape != y.shape:
            raise ValueError(f"batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        with torch.no_grad():
            values = self._model(x * 2 - 1, y * 2 - 1)
        result: npt.NDArray[np.float64] = values.flatten().double().numpy()
        return result


def _tensor(images: npt.ArrayLike) -> torch.Tensor:
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected N x H x W (x 1|3) images, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _load_backbone(network: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision ``features.N.*`` state dict into lpips' ``sliceK.N.*`` modules."""
    names = {name.split(".", 1)[1]: name for name, _ in network.named_parameters() if "." in name}
    loaded = 0
    own = dict(network.named_parameters())
    for key, value in state.items():
        short = key.removeprefix("features.")
        if short in names:
            own[names[short]].data.copy_(value)
            loaded += 1
    if loaded == 0:
        raise ValueError("the backbone weights match no layer of the LPIPS network")
