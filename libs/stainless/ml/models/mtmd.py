"""Model 1: the multi-task multi-domain translator (thesis ch. 5, Fig. 5.1).

``x_S --E--> h_S --G(., c_T)--> x_T``: the encoder never sees a domain label; the target
domain one-hot ``c_T`` is broadcast over the bottleneck and concatenated to ``h_S`` inside
the generator (thesis ch. 5.2.1). Because ``h_S`` has to serve every target domain it
becomes domain-agnostic, so a classifier (DAC, eq. 5.5) and a segmenter (eq. 5.7) on ``h``
transfer from stained to unstained images. The critic has a real/fake patch head
(WGAN-GP, so no sigmoid and no normalisation) and a domain-classification head (eqs.
5.2, 5.4).

Images are ``(B, C, S, S)`` in ``[-1, 1]``; with ``n_down`` downsamplings ``h`` is
``(B, base_channels * 2**n_down, S / 2**n_down, S / 2**n_down)``.
"""

from __future__ import annotations

from enum import StrEnum

from torch import Tensor, nn

from stainless.ml.models.blocks import (
    Activation,
    ConvNormAct,
    Downsample,
    Norm,
    ResBlock,
    Upsample,
    broadcast_concat,
    domain_onehot,
    parameter_count,
    require_positive,
)
from stainless.ml.models.configs import MultiTaskConfig


class Domain(StrEnum):
    """Image domains of thesis ch. 5.2; the member's position is its one-hot index."""

    DIC = "DIC"  # unstained, differential interference contrast
    BF = "BF"  # stained, brightfield (MGG)
    CV = "CV"  # stained, CellaVision scanner

    @property
    def position(self) -> int:
        """Position in the one-hot code."""
        return list(Domain).index(self)


class Encoder(nn.Module):
    """Image to domain-agnostic latent ``h`` (thesis ch. 5.2.1, ``h_S = E(x_S)``).

    Args:
        in_channels: image channels.
        base_channels: width of the 7x7 stem; doubled at every downsampling.
        n_down: stride-2 downsamplings.
        n_res: residual blocks at the bottleneck.
    """

    def __init__(self, *, in_channels: int, base_channels: int, n_down: int, n_res: int) -> None:
        super().__init__()
        require_positive(in_channels=in_channels, base_channels=base_channels, n_down=n_down)
        if n_res < 0:
            raise ValueError(f"n_res must be non-negative, got {n_res}")
        layers: list[nn.Module] = [
            ConvNormAct(in_channels=in_channels, out_channels=base_channels, kernel_size=7)
        ]
        width = base_channels
        for _ in range(n_down):
            layers.append(Downsample(in_channels=width, out_channels=2 * width))
            width *= 2
        layers += [ResBlock(channels=width) for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = width
        self.n_down = n_down

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.net(x)
        return h


class Generator(nn.Module):
    """Latent ``h`` plus target-domain one-hot to an image (thesis ch. 5.2.1, ``G(h, c_T)``).

    The one-hot is concatenated at the bottleneck, fused by a 3x3 convolution, refined by
    residual blocks and decoded by ``n_up`` upsamplings to a ``tanh`` image.

    Args:
        latent_channels: channels of ``h``.
        n_domains: length of the domain one-hot.
        out_channels: image channels produced.
        n_res: residual blocks after the fusion.
        n_up: upsamplings (equal to the encoder's ``n_down``).
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        n_domains: int,
        out_channels: int,
        n_res: int,
        n_up: int,
    ) -> None:
        super().__init__()
        require_positive(
            latent_channels=latent_channels,
            n_domains=n_domains,
            out_channels=out_channels,
            n_up=n_up,
        )
        if n_res < 0:
            raise ValueError(f"n_res must be non-negative, got {n_res}")
        if latent_channels % (2**n_up):
            raise ValueError(f"latent_channels {latent_channels} must be divisible by 2**n_up")
        self.n_domains = n_domains
        self.fuse = ConvNormAct(
            in_channels=latent_channels + n_domains, out_channels=latent_channels
        )
        layers: list[nn.Module] = [ResBlock(channels=latent_channels) for _ in range(n_res)]
        width = latent_channels
        for _ in range(n_up):
            layers.append(Upsample(in_channels=width, out_channels=width // 2))
            width //= 2
        layers.append(
            ConvNormAct(
                in_channels=width,
                out_channels=out_channels,
                kernel_size=7,
                norm=Norm.NONE,
                activation=Activation.TANH,
            )
        )
        self.decoder = nn.Sequential(*layers)

    def forward(self, h: Tensor, domain_code: Tensor) -> Tensor:
        """Decode ``h`` ``(B, C, s, s)`` for the target one-hot ``domain_code`` ``(B, K)``."""
        if domain_code.dim() != 2 or domain_code.shape[1] != self.n_domains:
            raise ValueError(
                f"domain_code must be (B, {self.n_domains}), got {tuple(domain_code.shape)}"
            )
        image: Tensor = self.decoder(self.fuse(broadcast_concat(h, domain_code)))
        return image


class Discriminator(nn.Module):
    """WGAN-GP critic with a real/fake patch head and a domain head (thesis eqs. 5.1-5.4).

    Args:
        in_channels: image channels.
        base_channels: width of the first stride-2 layer; doubled per layer up to 16x.
        n_layers: stride-2 4x4 convolutions (leaky ReLU, no normalisation).
        n_domains: domain logits of the classification head.
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, n_layers: int, n_domains: int
    ) -> None:
        super().__init__()
        require_positive(
            in_channels=in_channels,
            base_channels=base_channels,
            n_layers=n_layers,
            n_domains=n_domains,
        )
        layers: list[nn.Module] = []
        width, previous = base_channels, in_channels
        for _ in range(n_layers):
            layers.append(
                Downsample(
                    in_channels=previous,
                    out_channels=width,
                    norm=Norm.NONE,
                    activation=Activation.LEAKY_RELU,
                )
            )
            previous, width = width, min(2 * width, 16 * base_channels)
        self.trunk = nn.Sequential(*layers)
        self.source_head = nn.Conv2d(previous, 1, 3, padding=1, bias=False)
        self.domain_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, n_domains)
        )

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Return the real/fake patch scores ``(B, 1, p, p)`` and domain logits ``(B, K)``."""
        features = self.trunk(image)
        source: Tensor = self.source_head(features)
        domain: Tensor = self.domain_head(features)
        return source, domain


class LatentClassifier(nn.Module):
    """Domain-agnostic classifier (DAC) on the latent ``h`` (thesis eq. 5.5).

    Args:
        latent_channels: channels of ``h``.
        hidden_channels: width of its two stride-2 convolutions.
        n_classes: cell classes (7: ART BA EO LY MO SNE SMU).
    """

    def __init__(self, *, latent_channels: int, hidden_channels: int, n_classes: int) -> None:
        super().__init__()
        require_positive(
            latent_channels=latent_channels,
            hidden_channels=hidden_channels,
            n_classes=n_classes,
        )
        self.n_classes = n_classes
        self.net = nn.Sequential(
            ConvNormAct(
                in_channels=latent_channels,
                out_channels=hidden_channels,
                stride=2,
                activation=Activation.LEAKY_RELU,
            ),
            ConvNormAct(
                in_channels=hidden_channels,
                out_channels=hidden_channels,
                stride=2,
                activation=Activation.LEAKY_RELU,
            ),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(hidden_channels, n_classes),
        )

    def forward(self, h: Tensor) -> Tensor:
        logits: Tensor = self.net(h)
        return logits


class LatentSegmenter(nn.Module):
    """Segmentation head ``S(h)`` to per-pixel logits at input resolution (thesis eq. 5.7).

    Args:
        latent_channels: channels of ``h``.
        hidden_channels: width after the first upsampling; halved at each further one.
        n_up: upsamplings (equal to the encoder's ``n_down``).
        n_classes: mask classes (4: background, red cell, cytoplasm, nucleus).
    """

    def __init__(
        self, *, latent_channels: int, hidden_channels: int, n_up: int, n_classes: int
    ) -> None:
        super().__init__()
        require_positive(
            latent_channels=latent_channels,
            hidden_channels=hidden_channels,
            n_up=n_up,
            n_classes=n_classes,
        )
        layers: list[nn.Module] = []
        previous, width = latent_channels, hidden_channels
        for _ in range(n_up):
            layers.append(Upsample(in_channels=previous, out_channels=width))
            previous, width = width, max(width // 2, 8)
        layers.append(nn.Conv2d(previous, n_classes, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        logits: Tensor = self.net(h)
        return logits


class MultiTaskTranslator(nn.Module):
    """Encoder, generator, domain-agnostic classifier and segmenter of thesis Fig. 5.1.

    The critic is separate (``build_multitask_discriminator``): it has its own optimiser
    and five steps per generator step (thesis ch. 5.3.2).

    Args:
        in_channels: channels of the encoded images (3 when DIC is fed as replicated RGB,
            as the thesis does, so that cycles through every domain work).
        out_channels: channels of the generated images.
        n_domains: domains of the one-hot (``Domain`` order: DIC, BF, CV).
        n_classes: cell classes of the classifier.
        n_segmentation_classes: mask classes of the segmenter.
        base_channels: encoder stem width.
        n_down: downsamplings of the encoder (= upsamplings of generator and segmenter).
        n_res_encoder: residual blocks at the end of the encoder.
        n_res_generator: residual blocks at the start of the generator.
        head_channels: hidden width of classifier and segmenter.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        n_domains: int,
        n_classes: int,
        n_segmentation_classes: int,
        base_channels: int,
        n_down: int,
        n_res_encoder: int,
        n_res_generator: int,
        head_channels: int,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_domains = n_domains
        self.encoder = Encoder(
            in_channels=in_channels,
            base_channels=base_channels,
            n_down=n_down,
            n_res=n_res_encoder,
        )
        latent = self.encoder.out_channels
        self.generator = Generator(
            latent_channels=latent,
            n_domains=n_domains,
            out_channels=out_channels,
            n_res=n_res_generator,
            n_up=n_down,
        )
        self.classifier = LatentClassifier(
            latent_channels=latent, hidden_channels=head_channels, n_classes=n_classes
        )
        self.segmenter = LatentSegmenter(
            latent_channels=latent,
            hidden_channels=head_channels,
            n_up=n_down,
            n_classes=n_segmentation_classes,
        )

    def encode(self, x: Tensor) -> Tensor:
        """``h = E(x)``; no domain input."""
        h: Tensor = self.encoder(x)
        return h

    def decode(self, h: Tensor, domain_onehot: Tensor) -> Tensor:
        """``x_T = G(h, c_T)`` with ``c_T`` a ``(B, n_domains)`` one-hot."""
        image: Tensor = self.generator(h, domain_onehot)
        return image

    def translate(self, x: Tensor, target_domain: Domain | int | Tensor) -> Tensor:
        """Encode then decode into ``target_domain`` (a ``Domain``, an index, ``(B,)``
        indices or a ``(B, n_domains)`` one-hot)."""
        h = self.encode(x)
        target = target_domain.position if isinstance(target_domain, Domain) else target_domain
        code = domain_onehot(target, n_domains=self.n_domains, batch=x.shape[0], like=h)
        return self.decode(h, code)

    def classify(self, h: Tensor) -> Tensor:
        """Cell-class logits ``(B, n_classes)`` from ``h``."""
        logits: Tensor = self.classifier(h)
        return logits

    def segment(self, h: Tensor) -> Tensor:
        """Mask logits ``(B, n_segmentation_classes, S, S)`` from ``h``."""
        logits: Tensor = self.segmenter(h)
        return logits

    def parameter_count(self) -> int:
        """Scalar parameters of E, G, classifier and segmenter."""
        return parameter_count(self)


def build_multitask(config: MultiTaskConfig) -> MultiTaskTranslator:
    """The translator (E, G, DAC, S) of ``config``."""
    return MultiTaskTranslator(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        n_domains=config.n_domains,
        n_classes=config.n_classes,
        n_segmentation_classes=config.n_segmentation_classes,
        base_channels=config.base_channels,
        n_down=config.n_down,
        n_res_encoder=config.n_res_encoder,
        n_res_generator=config.n_res_generator,
        head_channels=config.head_channels,
    )


def build_multitask_discriminator(config: MultiTaskConfig) -> Discriminator:
    """The critic of ``config``; it judges generated images (``out_channels``)."""
    return Discriminator(
        in_channels=config.out_channels,
        base_channels=config.disc_channels,
        n_layers=config.disc_layers,
        n_domains=config.n_domains,
    )
