"""Size configurations of the three translators: ``tiny()`` for CPU tests, ``thesis()`` for GPUs
(model 3 also ``small()``, 128 px at the tiny widths).

The thesis does not list layer widths; where it names the architecture it extends, the
published defaults of that architecture are used: StarGAN (64 base channels, two
downsamplings, six residual blocks) for model 1 (ch. 5.3.1, 256 px), Pix2PixHD (64 / 32
channels, four global downsamplings, nine global and three local residual blocks) for
model 3 (ch. 8.2, 256 px), StarGAN v2 widths (64 base, 512 max, style code 64, noise 16)
for model 2 (ch. 6.1, 128 px).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

N_CELL_CLASSES = 7
"""ART BA EO LY MO SNE SMU (thesis Table 4.1)."""

N_SEGMENTATION_CLASSES = 4
"""Background, red cell, cytoplasm, nucleus (thesis ch. 5.2.3, 6.1)."""


def _check_positive_ints(values: dict[str, object]) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_divisible(image_size: int, levels: int, what: str) -> None:
    if image_size % (2**levels):
        raise ValueError(f"image_size {image_size} must be divisible by 2**{what} = {2**levels}")


@dataclass(frozen=True)
class MultiTaskConfig:
    """Model 1, the multi-task multi-domain translator (thesis ch. 5)."""

    image_size: int = 256
    in_channels: int = 3
    out_channels: int = 3
    n_domains: int = 3  # DIC, BF, CV
    n_classes: int = N_CELL_CLASSES
    n_segmentation_classes: int = N_SEGMENTATION_CLASSES
    base_channels: int = 64
    n_down: int = 2
    n_res_encoder: int = 3
    n_res_generator: int = 3
    head_channels: int = 256  # classifier / segmenter hidden width
    disc_channels: int = 64
    disc_layers: int = 6

    def __post_init__(self) -> None:
        _check_positive_ints(vars(self))
        _check_divisible(self.image_size, self.n_down, "n_down")
        _check_divisible(self.image_size, self.disc_layers, "disc_layers")

    @classmethod
    def tiny(cls) -> MultiTaskConfig:
        """64 px, 16 base channels: trains on two CPU cores."""
        return cls(
            image_size=64,
            base_channels=16,
            n_res_encoder=1,
            n_res_generator=1,
            head_channels=32,
            disc_channels=16,
            disc_layers=4,
        )

    @classmethod
    def thesis(cls) -> MultiTaskConfig:
        """256 px, StarGAN widths (thesis ch. 5.3.1)."""
        return cls()


PAIRED_CLASS_HEADS = ("pair", "stained")


@dataclass(frozen=True)
class PairedConfig:
    """Model 3, the paired Pix2PixHD-style translator with an AC-GAN critic (thesis ch. 8)."""

    image_size: int = 256
    in_channels: int = 1  # DIC
    out_channels: int = 3  # MGG brightfield
    n_classes: int = N_CELL_CLASSES
    global_channels: int = 64  # = 2 x local_channels, so the two branches add up
    global_down: int = 4
    global_res: int = 9
    local_res: int = 3
    disc_channels: int = 64
    disc_layers: int = 3
    n_scales: int = 2
    # what the critic's AC-GAN head reads: the (stained, DIC) pair as the thesis describes,
    # or the stained image alone ("stained"), which the DIC cannot stand in for
    class_head: str = "pair"
    # the generator classifies the DIC crop itself and conditions its latent on the class
    # probabilities: a cytoplasm's colour is a property of the class, not of local texture
    class_condition: bool = False

    def __post_init__(self) -> None:
        _check_positive_ints(
            {k: v for k, v in vars(self).items() if k not in {"class_head", "class_condition"}}
        )
        if self.class_head not in PAIRED_CLASS_HEADS:
            heads = ", ".join(PAIRED_CLASS_HEADS)
            raise ValueError(f"class_head must be one of {heads}, got {self.class_head!r}")
        if self.global_channels % 2:
            raise ValueError(f"global_channels must be even, got {self.global_channels}")
        _check_divisible(self.image_size, self.global_down + 1, "(global_down + 1)")
        _check_divisible(self.image_size, self.n_scales - 1 + self.disc_layers, "layers")

    @property
    def local_channels(self) -> int:
        """Width of the local enhancer's full-resolution features."""
        return self.global_channels // 2

    @classmethod
    def tiny(cls) -> PairedConfig:
        """64 px, 16 global channels: trains on two CPU cores."""
        return cls(
            image_size=64,
            global_channels=16,
            global_down=2,
            global_res=2,
            local_res=1,
            disc_channels=16,
            disc_layers=2,
            n_scales=2,
        )

    @classmethod
    def small(cls) -> PairedConfig:
        """128 px at the tiny widths, one more global and critic level: a 360 px crop keeps
        twice the detail (granules, nucleus edges) for four times the tiny's work."""
        return dataclasses.replace(cls.tiny(), image_size=128, global_down=3, disc_layers=3)

    @classmethod
    def thesis(cls) -> PairedConfig:
        """256 px, Pix2PixHD defaults (thesis ch. 8.2)."""
        return cls()

    @classmethod
    def of_size(cls, size: str) -> PairedConfig:
        """The config of a size name: ``tiny``, ``small`` or ``thesis``."""
        sizes = {"tiny": cls.tiny, "small": cls.small, "thesis": cls.thesis}
        if size not in sizes:
            raise ValueError(f"model 3 has no size {size!r}; one of {', '.join(sizes)}")
        return sizes[size]()


@dataclass(frozen=True)
class DisentangledConfig:
    """Model 2, the style/structure disentangled translator (thesis ch. 6)."""

    image_size: int = 128
    image_channels: int = 3
    n_domains: int = 2  # unstained, stained (thesis ch. 6.1: Y = {1, 2})
    base_channels: int = 64
    max_channels: int = 512
    n_down: int = 3  # background encoder / generator levels
    n_res: int = 2  # bottleneck blocks
    style_dim: int = 64
    style_noise_dim: int = 16
    mapping_hidden: int = 512
    structure_channels: int = 8
    structure_down: int = 2  # structure code lives at image_size / 2**structure_down
    structure_noise_dim: int = 16
    spade_hidden: int = 64
    disc_channels: int = 64
    disc_down: int = 4
    n_segmentation_classes: int = N_SEGMENTATION_CLASSES
    segmenter_channels: int = 32
    segmenter_depth: int = 3

    def __post_init__(self) -> None:
        _check_positive_ints(vars(self))
        _check_divisible(self.image_size, self.n_down, "n_down")
        _check_divisible(self.image_size, self.structure_down + 2, "(structure_down + 2)")
        _check_divisible(self.image_size, self.disc_down, "disc_down")
        _check_divisible(self.image_size, self.segmenter_depth, "segmenter_depth")

    @classmethod
    def tiny(cls) -> DisentangledConfig:
        """64 px, 16 base channels: trains on two CPU cores."""
        return cls(
            image_size=64,
            base_channels=16,
            max_channels=64,
            n_down=2,
            n_res=1,
            style_dim=16,
            style_noise_dim=8,
            mapping_hidden=32,
            structure_channels=4,
            structure_noise_dim=8,
            spade_hidden=16,
            disc_channels=16,
            disc_down=3,
            segmenter_channels=8,
            segmenter_depth=2,
        )

    @classmethod
    def thesis(cls) -> DisentangledConfig:
        """128 px, StarGAN v2 widths (thesis ch. 6.1)."""
        return cls()
