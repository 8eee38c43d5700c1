"""Training configuration: typed, frozen, loaded from YAML and written beside every checkpoint."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stainless.domain.vocabulary import Vocabulary, vocabulary_of
from stainless.imaging.phantom import PhantomConfig
from stainless.imaging.phantom_set import phantom_config
from stainless.imaging.slides import SLIDES
from stainless.stages.retraining.jobs import ModelKind
from stainless_training.schedules import PhasedSchedule

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossWeights",
    "ModelKind",
    "ModelSize",
    "SegmenterConfig",
    "ThirdDomain",
    "TrainingConfig",
    "dump_config",
    "load_config",
    "validation_message",
]


class ModelSize(StrEnum):
    TINY = "tiny"  # trains on 2 CPU cores in minutes
    SMALL = "small"  # model 3 only: 128 px at the tiny widths, about four times the tiny's work
    THESIS = "thesis"  # the thesis' resolution and widths


class LossWeights(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gradient_penalty: float = Field(default=10.0, ge=0, description="WGAN-GP weight.")
    domain: float = Field(default=1.0, ge=0, description="Domain classification.")
    cycle: float = Field(default=10.0, ge=0, description="Cycle consistency.")
    reconstruction: float = Field(default=10.0, ge=0, description="Pair-wise reconstruction.")
    classification: float = Field(default=1.0, ge=0, description="Latent classifier CE.")
    segmentation: float = Field(default=1.0, ge=0, description="Latent segmentor CE.")
    translated_classification: float = Field(
        default=0.0,
        ge=0,
        description="Model 1, supervised phase: class CE on the latent of each labelled "
        "cell's translation, carrying its label into the target domain (not in the thesis; "
        "0 = off).",
    )
    latent_alignment: float = Field(
        default=0.0,
        ge=0,
        description="Model 1, supervised phase: L1 between the latents of each registered "
        "DIC/brightfield pair, so labels carry across domains through the shared latent (not "
        "in the thesis; 0 = off).",
    )
    paired_label_transfer: float = Field(
        default=0.0,
        ge=0,
        description="Model 1, supervised phase: class CE of each unlabelled DIC cell against "
        "the label of its registered brightfield, or the class probabilities the classifier "
        "gives that brightfield (label transfer through the pairing; 0 = off).",
    )
    style: float = Field(default=1.0, ge=0, description="Style reconstruction (model 2).")
    structure: float = Field(default=1.0, ge=0, description="Structure CE (model 2).")
    diversity: float = Field(default=3.0, ge=0, description="Diversity, λ = 3 (ch. 6).")
    feature_matching: float = Field(
        default=10.0, ge=0, description="Discriminator feature matching (model 3, Pix2PixHD)."
    )


DomainName = Literal["DIC", "BF", "CV"]
VocabularyName = Literal["healthy", "clinical"]


class ThirdDomain(BaseModel):
    """Model 1's third domain ``CV`` (thesis ch. 4.4: a second stained scanner): brightfield
    crops of phantom fields of its own under another acquisition, never paired with DIC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    acquisition: str | dict[str, Any] = Field(
        default="wright-giemsa",
        description="A phantom acquisition preset, a YAML file, or the overrides themselves.",
    )
    fields: int = Field(default=40, ge=1, description="Phantom fields to crop from.")
    seed: int = Field(
        default=1, ge=0, description="Seed of its fields; not data.phantom_seed (no shared cell)."
    )


class DataConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: str | None = Field(
        default=None, description="Dataset manifest key; none = phantom data made on the fly."
    )
    phantom_seed: int = Field(default=0, ge=0, description="Seed of phantom training data.")
    phantom_fields: int = Field(default=40, ge=1, description="Phantom fields to crop from.")
    cv: ThirdDomain | None = Field(
        default=None, description="Model 1's third domain; none = DIC and BF only."
    )
    labelled: tuple[DomainName, ...] = Field(
        default=("DIC", "BF", "CV"),
        min_length=1,
        description="Domains whose class labels model 1's classifier sees; the others train "
        "only the translation terms (label transfer, thesis ch. 5.2).",
    )
    slide: str | None = Field(
        default=None,
        description="Phantom slide preset of the training and held-out cells (stainless "
        "phantom --slide): healthy by default; clinical-balanced for twelve classes.",
    )
    classes: VocabularyName = Field(
        default="healthy",
        description="The class vocabulary the model learns: healthy (seven) or clinical "
        "(twelve, model 3 only; SNE counts as NE).",
    )
    crop_size: int = Field(
        default=256,
        ge=32,
        le=1024,
        description="Side of a cell crop before it is resized to the model: 256 px as in "
        "thesis ch. 4.4, 360 px for the clinical study (ch. 8.1.1).",
    )
    random_crop: float = Field(
        default=0.0,
        ge=0,
        le=0.25,
        description="Model 3: shift each crop by up to this fraction of its side "
        "(thesis ch. 8.2's random cropping; never a flip or rotation).",
    )
    random_resize: float = Field(
        default=0.0,
        ge=0,
        le=0.25,
        description="Model 3: rescale each crop by up to this fraction (thesis ch. 8.2's "
        "image resizing).",
    )

    @model_validator(mode="after")
    def _slide_and_classes(self) -> DataConfig:
        if self.slide is None:
            return self
        if self.slide not in SLIDES:
            raise ValueError(
                f"unknown slide preset {self.slide!r}: expected one of {', '.join(SLIDES)}"
            )
        vocabulary = vocabulary_of(self.classes)
        codes = {
            vocabulary.code_of(code)
            for code, share in SLIDES[self.slide].class_frequencies.items()
            if share > 0
        }
        if codes - set(vocabulary.classes):
            raise ValueError(
                f"slide {self.slide!r} holds classes the {self.classes} vocabulary lacks "
                f"({', '.join(sorted(codes - set(vocabulary.classes)))}): set classes: clinical"
            )
        return self

    def vocabulary(self) -> Vocabulary:
        """The classes the model's class indices stand for."""
        return vocabulary_of(self.classes)

    def phantom(self, **overrides: Any) -> PhantomConfig:
        """The phantom configuration of the training cells (``overrides``: an acquisition)."""
        return phantom_config(slide=self.slide, **overrides)

    @model_validator(mode="after")
    def _domains(self) -> DataConfig:
        if self.cv is not None and self.cv.seed == self.phantom_seed:
            raise ValueError(
                "cv.seed must differ from phantom_seed: CV cells come from other fields"
            )
        if self.cv is None and set(self.labelled) == {"CV"}:
            raise ValueError("labelled names only CV, but there is no cv domain")
        return self


class SegmenterConfig(BaseModel):
    """Model 2's structure critic: the U-Net of thesis eq. 6.3, frozen while the GAN trains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str | None = Field(
        default=None,
        description="U-Net weights to load (a state dict, or a model-2 checkpoint.pt); "
        "none = pre-train on the phantom masks at the start of the run.",
    )
    pretrain_steps: int = Field(default=300, ge=0, description="Pre-training steps.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam rate of pre-training.")
    batch_size: int = Field(default=8, ge=1, description="Crops per pre-training step.")


class TrainingConfig(BaseModel):
    """Everything a run depends on; a checkpoint plus this file reproduces the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelKind
    size: ModelSize = ModelSize.TINY
    class_head: Literal["pair", "stained"] = Field(
        default="pair",
        description="Model 3: what the critic's AC-GAN head reads, the (stained, DIC) pair "
        "or the stained image alone.",
    )
    class_condition: bool = Field(
        default=False,
        description="Model 3: the generator classifies the DIC crop and conditions its "
        "latent on the class probabilities.",
    )
    seed: int = Field(default=0, ge=0)
    batch_size: int = Field(default=7, ge=1)
    steps: int = Field(default=600, ge=1, description="Total optimisation steps.")
    schedule: PhasedSchedule | None = Field(
        default=None, description="Phases (model 1); none = the thesis proportions over `steps`."
    )
    balanced_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Final share of training with frequency balancing."
    )
    losses: LossWeights = LossWeights()
    data: DataConfig = DataConfig()
    segmenter: SegmenterConfig = Field(
        default=SegmenterConfig(), description="Frozen structure critic (model 2 only)."
    )
    checkpoint_every: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _third_domain_for_model_1(self) -> TrainingConfig:
        if self.model is not ModelKind.MTMD and (
            self.data.cv is not None or set(self.data.labelled) != {"DIC", "BF", "CV"}
        ):
            raise ValueError(
                f"data.cv and data.labelled are model 1's (mtmd); model {self.model} "
                "trains on DIC and BF with their labels"
            )
        return self

    @model_validator(mode="after")
    def _clinical_for_model_3(self) -> TrainingConfig:
        data = self.data
        if self.model is not ModelKind.PAIRED and (
            data.classes != "healthy"
            or data.slide is not None
            or data.crop_size != DataConfig().crop_size
            or data.random_crop
            or data.random_resize
        ):
            raise ValueError(
                "data.slide, classes, crop_size, random_crop and random_resize are model 3's "
                f"(paired); model {self.model} learns the healthy classes from 256 px crops"
            )
        return self

    @model_validator(mode="after")
    def _small_for_model_3(self) -> TrainingConfig:
        if self.size is ModelSize.SMALL and self.model is not ModelKind.PAIRED:
            raise ValueError(
                f"size small is model 3's (paired); model {self.model} is tiny or thesis"
            )
        if self.class_head != "pair" and self.model is not ModelKind.PAIRED:
            raise ValueError(f"class_head is model 3's (paired); model {self.model} has none")
        if self.class_condition and self.model is not ModelKind.PAIRED:
            raise ValueError(f"class_condition is model 3's (paired); model {self.model} has none")
        return self

    def phased_schedule(self) -> PhasedSchedule:
        return self.schedule or PhasedSchedule.scaled(self.steps)


class ConfigError(ValueError):
    """A training configuration file that cannot be used; the message says why."""


def load_config(path: Path) -> TrainingConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from None
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    """The first error of a validation as ``field.path: message`` (for a CLI's one line)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def dump_config(config: TrainingConfig) -> str:
    """YAML text of ``config`` that :func:`load_config` reads back to an equal object."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
