"""Model 3: the paired translator with an auxiliary classifier (thesis ch. 8.2).

A coarse-to-fine generator in the manner of Pix2PixHD, written for Stainless:

* the *global* generator works on the input average-pooled to half resolution:
  stem, ``global_down`` stride-2 downsamplings, residual bottleneck, as many upsamplings
  back to half resolution;
* the *local enhancer* encodes the full-resolution input to half resolution with the same
  width as the global generator's last features; the two are **added**, refined by
  residual blocks and upsampled to the full-resolution ``tanh`` image.

``encode(x)`` runs both encoders, the global bottleneck and the global upsampling up to
the point where the branches are added: the latent ``h`` ``(B, global_channels, S / 2,
S / 2)`` carries everything the image is made from. ``decode(h)`` runs the rest (local
residual blocks, upsampling, output), so the whole-latent confidence of thesis ch. 7.1 can
corrupt ``h`` and decode the corrupted copies as one batch.

With ``PairedConfig.class_condition`` the generator also classifies the DIC crop (a
:class:`CropClassifier`, trained on the cells' labels) and ``h`` is instance-normalised and
re-scaled by the class probabilities (AdaIN): a cytoplasm's colour belongs to the cell's
class, which a fully convolutional translator has to infer from the whole cell and which
its L1 loss pulls towards the commonest colour.

The critic is a set of PatchGAN discriminators on the (condition, image) pair at
``n_scales`` resolutions; each returns its intermediate features (feature-matching loss)
and, through an AC-GAN head on its last features, cell-class logits (thesis ch. 8.2).
With ``PairedConfig.class_head = "stained"`` one :class:`CropClassifier` of the judged
image alone replaces those heads: a head on the pair can read the class from the DIC, so
its loss does not make the generator show the class in the stained image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from stainless.ml.models.blocks import (
    Activation,
    AdaIN,
    ConvNormAct,
    Downsample,
    Norm,
    ResBlock,
    Upsample,
    parameter_count,
    require_positive,
)
from stainless.ml.models.classifier import CropClassifier
from stainless.ml.models.configs import PairedConfig


def _halve(x: Tensor) -> Tensor:
    """Average-pool to half resolution (3x3 window, stride 2, padding not counted)."""
    return nn.functional.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def _to_image(in_channels: int, out_channels: int) -> ConvNormAct:
    return ConvNormAct(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=7,
        norm=Norm.NONE,
        activation=Activation.TANH,
    )


class GlobalGenerator(nn.Module):
    """The coarse generator; ``encode`` to the bottleneck, ``features`` back up.

    Args:
        in_channels: input image channels.
        out_channels: output image channels (of the stand-alone ``output`` layer).
        base_channels: stem width; doubled per downsampling.
        n_down: stride-2 downsamplings (and as many upsamplings).
        n_res: residual blocks at the bottleneck.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        base_channels: int,
        n_down: int,
        n_res: int,
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=base_channels,
            n_down=n_down,
            n_res=n_res,
        )
        down: list[nn.Module] = [
            ConvNormAct(in_channels=in_channels, out_channels=base_channels, kernel_size=7)
        ]
        width = base_channels
        for _ in range(n_down):
            down.append(Downsample(in_channels=width, out_channels=2 * width))
            width *= 2
        down += [ResBlock(channels=width) for _ in range(n_res)]
        self.down = nn.Sequential(*down)
        self.latent_channels = width
        up: list[nn.Module] = []
        for _ in range(n_down):
            up.append(Upsample(in_channels=width, out_channels=width // 2))
            width //= 2
        self.up = nn.Sequential(*up)
        self.output = _to_image(base_channels, out_channels)

    def encode(self, x: Tensor) -> Tensor:
        h: Tensor = self.down(x)
        return h

    def features(self, h: Tensor) -> Tensor:
        """Last features ``(B, base_channels, s, s)`` at the input's resolution."""
        out: Tensor = self.up(h)
        return out

    def forward(self, x: Tensor) -> Tensor:
        image: Tensor = self.output(self.features(self.encode(x)))
        return image


class PairedGenerator(nn.Module):
    """Global generator plus local enhancer (thesis ch. 8.2).

    Args:
        in_channels: input channels (1 for DIC).
        out_channels: output channels (3 for MGG brightfield).
        global_channels: stem width of the global generator; the local enhancer's stem is
            half of it, so its downsampled features match the global features.
        global_down: downsamplings of the global generator.
        global_res: residual blocks of the global bottleneck.
        local_res: residual blocks of the local enhancer.
        class_encoder: classifies the input crop; its class probabilities condition the
            latent (AdaIN). None: an unconditioned latent.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        global_channels: int,
        global_down: int,
        global_res: int,
        local_res: int,
        class_encoder: CropClassifier | None = None,
    ) -> None:
        super().__init__()
        require_positive(global_channels=global_channels, local_res=local_res)
        if global_channels % 2:
            raise ValueError(f"global_channels must be even, got {global_channels}")
        self.global_generator = GlobalGenerator(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=global_channels,
            n_down=global_down,
            n_res=global_res,
        )
        local = global_channels // 2
        self.local_front = nn.Sequential(
            ConvNormAct(in_channels=in_channels, out_channels=local, kernel_size=7),
            Downsample(in_channels=local, out_channels=global_channels),
        )
        self.local_back = nn.Sequential(
            *[ResBlock(channels=global_channels) for _ in range(local_res)],
            Upsample(in_channels=global_channels, out_channels=local),
            _to_image(local, out_channels),
        )
        self.scale = 2 ** (global_down + 1)
        self.class_encoder = class_encoder
        self.class_modulation = (
            AdaIN(channels=global_channels, style_dim=class_encoder.classify.out_features)
            if class_encoder is not None
            else None
        )

    def encode_classified(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Latent ``h`` ``(B, global_channels, S / 2, S / 2)`` of ``x`` ``(B, C, S, S)`` and
        the generator's own class logits of ``x`` (``(B, 0)`` without a class encoder).

        ``S`` must be divisible by ``2**(global_down + 1)``.
        """
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"image sides must be divisible by {self.scale}, got {x.shape}")
        coarse = self.global_generator.features(self.global_generator.encode(_halve(x)))
        h: Tensor = self.local_front(x) + coarse
        if self.class_encoder is None or self.class_modulation is None:
            return h, x.new_zeros(len(x), 0)
        logits: Tensor = self.class_encoder(x)
        return self.class_modulation(h, logits.softmax(dim=1)), logits

    def encode(self, x: Tensor) -> Tensor:
        """The latent of :meth:`encode_classified`."""
        return self.encode_classified(x)[0]

    def decode(self, h: Tensor) -> Tensor:
        """The full-resolution image from a (possibly corrupted) latent."""
        image: Tensor = self.local_back(h)
        return image

    def global_image(self, x: Tensor) -> Tensor:
        """The global generator's own half-resolution image (for its warm-up training)."""
        image: Tensor = self.global_generator(_halve(x))
        return image

    def stain(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The stained image and the generator's class logits of ``x`` (training)."""
        h, logits = self.encode_classified(x)
        return self.decode(h), logits

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def parameter_count(self) -> int:
        """Scalar parameters of both branches."""
        return parameter_count(self)


class DiscriminatorOutput(NamedTuple):
    """One scale's verdict.

    Attributes:
        features: intermediate activations, first layer first (feature matching).
        patch: real/fake patch scores ``(B, 1, p, p)`` (no sigmoid).
        class_logits: AC-GAN cell-class logits ``(B, n_classes)``.
    """

    features: list[Tensor]
    patch: Tensor
    class_logits: Tensor


class PatchDiscriminator(nn.Module):
    """PatchGAN critic with an auxiliary classifier head (thesis ch. 8.2, AC-GAN).

    Args:
        in_channels: channels of the judged input (condition and image concatenated).
        base_channels: width of the first layer; doubled per stride-2 layer up to 8x.
        n_layers: stride-2 4x4 convolutions; the patch map is ``S / 2**n_layers``.
        n_classes: cell classes of the AC-GAN head; 0 for none (its ``class_logits`` are
            then ``(B, 0)``).
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, n_layers: int, n_classes: int
    ) -> None:
        super().__init__()
        require_positive(in_channels=in_channels, base_channels=base_channels, n_layers=n_layers)
        if n_classes < 0:
            raise ValueError(f"n_classes must be >= 0, got {n_classes}")
        layers: list[nn.Module] = []
        previous, width = in_channels, base_channels
        for index in range(n_layers):
            layers.append(
                Downsample(
                    in_channels=previous,
                    out_channels=width,
                    norm=Norm.NONE if index == 0 else Norm.INSTANCE,
                    activation=Activation.LEAKY_RELU,
                )
            )
            previous, width = width, min(2 * width, 8 * base_channels)
        layers.append(
            ConvNormAct(
                in_channels=previous,
                out_channels=width,
                activation=Activation.LEAKY_RELU,
            )
        )
        self.layers = nn.ModuleList(layers)
        self.patch = nn.Conv2d(width, 1, 3, padding=1)
        # A convolution before the pooling: the last features are instance-normalised, so
        # their spatial mean is all but constant and a head on it alone cannot tell the
        # classes apart (on 12 phantom classes: 0.18 accuracy against 0.68 with it, 600
        # steps on real pairs).
        self.classifier = (
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(width, n_classes),
            )
            if n_classes
            else None
        )

    def forward(self, x: Tensor, *, classify: bool = True) -> DiscriminatorOutput:
        """Features, patch scores and, unless ``classify`` is off (or the critic has no
        head), AC-GAN logits (else ``[B, 0]``)."""
        features: list[Tensor] = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        head = self.classifier if classify else None
        logits = head(x) if head is not None else x.new_zeros(len(x), 0)
        return DiscriminatorOutput(features, self.patch(x), logits)


class MultiScaleDiscriminator(nn.Module):
    """``n_scales`` PatchGAN critics on the pair at full, half, quarter ... resolution.

    Args:
        condition_channels: channels of the input image (DIC); 0 for an unconditional critic.
        image_channels: channels of the judged image (brightfield).
        base_channels: width of each critic's first layer.
        n_layers: stride-2 layers per critic.
        n_scales: critics (2-3 in Pix2PixHD).
        n_classes: cell classes of the AC-GAN heads.
        image_classifier: the AC-GAN head of every scale, reading the judged image alone;
            none: a head on each scale's last features of the pair.
    """

    def __init__(
        self,
        *,
        condition_channels: int,
        image_channels: int,
        base_channels: int,
        n_layers: int,
        n_scales: int,
        n_classes: int,
        image_classifier: CropClassifier | None = None,
    ) -> None:
        super().__init__()
        require_positive(image_channels=image_channels, n_scales=n_scales)
        if condition_channels < 0:
            raise ValueError(f"condition_channels must be >= 0, got {condition_channels}")
        self.condition_channels = condition_channels
        self.n_classes = n_classes
        self.critics = nn.ModuleList(
            PatchDiscriminator(
                in_channels=condition_channels + image_channels,
                base_channels=base_channels,
                n_layers=n_layers,
                n_classes=0 if image_classifier is not None else n_classes,
            )
            for _ in range(n_scales)
        )
        self.image_classifier = image_classifier

    def forward(
        self, image: Tensor, condition: Tensor | None = None, *, classify: bool = True
    ) -> list[DiscriminatorOutput]:
        """Judge ``image`` (given ``condition``); one output per scale, finest first.

        ``classify=False`` leaves the AC-GAN heads out (logits ``[B, 0]``): a pass that
        needs only the patch scores (the gradient penalty) does not run them."""
        if (condition is None) != (self.condition_channels == 0):
            raise ValueError("pass a condition exactly when condition_channels > 0")
        x = image if condition is None else torch.cat([condition, image], dim=1)
        outputs: list[DiscriminatorOutput] = []
        for index, critic in enumerate(self.critics):
            if index:
                x = _halve(x)
            outputs.append(critic(x, classify=classify))
        if classify and self.image_classifier is not None:
            logits = self.image_classifier(image)
            outputs = [output._replace(class_logits=logits) for output in outputs]
        return outputs

    @staticmethod
    def class_logits(outputs: list[DiscriminatorOutput]) -> Tensor:
        """AC-GAN logits averaged over the scales."""
        return torch.stack([o.class_logits for o in outputs]).mean(dim=0)


def build_paired_generator(config: PairedConfig) -> PairedGenerator:
    """The generator of ``config``."""
    return PairedGenerator(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        global_channels=config.global_channels,
        global_down=config.global_down,
        global_res=config.global_res,
        local_res=config.local_res,
        class_encoder=(
            _classifier(config, in_channels=config.in_channels, width=config.global_channels)
            if config.class_condition
            else None
        ),
    )


def _classifier(config: PairedConfig, *, in_channels: int, width: int) -> CropClassifier:
    """A classifier of ``in_channels`` crops into ``config``'s classes."""
    return CropClassifier(
        in_channels=in_channels,
        n_classes=config.n_classes,
        image_size=config.image_size,
        width=width,
    )


def build_paired_discriminator(config: PairedConfig) -> MultiScaleDiscriminator:
    """The conditional multi-scale critic of ``config``, its AC-GAN head on the pair or on
    the stained image alone (``config.class_head``)."""
    return MultiScaleDiscriminator(
        condition_channels=config.in_channels,
        image_channels=config.out_channels,
        base_channels=config.disc_channels,
        n_layers=config.disc_layers,
        n_scales=config.n_scales,
        n_classes=config.n_classes,
        image_classifier=(
            _classifier(config, in_channels=config.out_channels, width=config.disc_channels)
            if config.class_head == "stained"
            else None
        ),
    )
