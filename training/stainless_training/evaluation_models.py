"""Which evaluation a checkpoint gets: model 1 with its chapter-7 δ, model 2 with its
chapter-6 δ, and model 3's networks loaded for its own evaluation (``stainless-evaluate``
and the training jobs share them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stainless.ml.models.configs import PairedConfig
from stainless.ml.models.disentangled import build_disentangled
from stainless.ml.models.mtmd import build_multitask
from stainless.ml.models.paired import (
    MultiScaleDiscriminator,
    PairedGenerator,
    build_paired_discriminator,
    build_paired_generator,
)
from stainless_training.config import ModelKind, TrainingConfig
from stainless_training.disentangled import model_config as disentangled_config
from stainless_training.evaluate import Confidence, evaluate, whole_latent
from stainless_training.evaluate_disentangled import algorithm2, evaluate_disentangled
from stainless_training.mtmd import model_config as mtmd_config
from stainless_training.paired import model_config as paired_config


@dataclass(frozen=True)
class ModelEvaluation:
    """What the evaluation of one kind of model needs: the size of its cells, its
    evaluation over held-out cells and its confidence for the sample grid."""

    image_size: int
    evaluate: Callable[..., dict[str, Any]]
    confidence: Confidence


def model_evaluation(config: TrainingConfig, checkpoint: Path) -> ModelEvaluation:
    """Model 1 with its chapter-7 δ or model 2 with its chapter-6 δ, loaded from ``checkpoint``.

    Raises:
        ValueError: model 3, which has no δ evaluation (:func:`paired_models`).
    """
    state = torch.load(checkpoint, weights_only=False)["translator"]
    if config.model is ModelKind.MTMD:
        net = mtmd_config(config)
        translator = build_multitask(net)
        translator.load_state_dict(state)
        return ModelEvaluation(
            net.image_size, functools.partial(evaluate, translator), whole_latent(translator)
        )
    if config.model is ModelKind.DISENTANGLED:
        net2 = disentangled_config(config)
        model2 = build_disentangled(net2)
        model2.load_state_dict(state)
        return ModelEvaluation(
            net2.image_size,
            functools.partial(evaluate_disentangled, model2),
            algorithm2(model2),
        )
    raise ValueError(f"no δ evaluation of {config.model} (models 1 and 2 have one)")


def paired_models(
    config: TrainingConfig, checkpoint: Path
) -> tuple[PairedConfig, PairedGenerator, MultiScaleDiscriminator]:
    """Model 3's network config, generator and critic (with its AC-GAN head), loaded from
    ``checkpoint`` for :func:`~stainless_training.evaluate_paired.evaluate_paired`."""
    net = paired_config(config)
    state = torch.load(checkpoint, weights_only=False)
    generator, critic = build_paired_generator(net), build_paired_discriminator(net)
    generator.load_state_dict(state["generator"])
    critic.load_state_dict(state["critic"])
    return net, generator, critic
