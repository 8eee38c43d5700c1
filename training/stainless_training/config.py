"""Training configuration: typed, frozen, loaded from YAML and written beside every checkpoint."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stainless.stages.retraining.jobs import ModelKind
from stainless_training.schedules import PhasedSchedule

__all__ = [
    "ConfigError",
    "DataConfig",
    "LossWeights",
    "ModelKind",
    "ModelSize",
    "SegmenterConfig",
    "TrainingConfig",
    "dump_config",
    "load_config",
    "validation_message",
]


class ModelSize(StrEnum):
    TINY = "tiny"  # trains on 2 CPU cores in minutes
    THESIS = "thesis"  # the thesis' resolution and widths


class LossWeights(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gradient_penalty: float = Field(default=10.0, ge=0, description="WGAN-GP weight.")
    domain: float = Field(default=1.0, ge=0, description="Domain classification.")
    cycle: float = Field(default=10.0, ge=0, description="Cycle consistency.")
    reconstruction: float = Field(default=10.0, ge=0, description="Pair-wise reconstruction.")
    classification: float = Field(default=1.0, ge=0, description="Latent classifier CE.")
    segmentation: float = Field(default=1.0, ge=0, description="Latent segmentor CE.")
    style: float = Field(default=1.0, ge=0, description="Style reconstruction (model 2).")
    structure: float = Field(default=1.0, ge=0, description="Structure CE (model 2).")
    diversity: float = Field(default=3.0, ge=0, description="Diversity, λ = 3 (ch. 6).")
    feature_matching: float = Field(
        default=10.0, ge=0, description="Discriminator feature matching (model 3, Pix2PixHD)."
    )


class DataConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: str | None = Field(
        default=None, description="Dataset manifest key; none = phantom data made on the fly."
    )
    phantom_seed: int = Field(default=0, ge=0, description="Seed of phantom training data.")
    phantom_fields: int = Field(default=40, ge=1, description="Phantom fields to crop from.")


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
