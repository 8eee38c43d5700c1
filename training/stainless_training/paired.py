"""Training of model 3, the paired DIC → brightfield translator with an AC-GAN critic (ch. 8.2).

The multi-scale generator (global generator + local enhancer) stains a DIC crop; the
multi-scale PatchGAN critics judge the (DIC, brightfield) pair and, through their
auxiliary heads, classify the cell. Each step runs the passes of
:meth:`PhasedSchedule.passes` that concern this model — the critic every step, the
generator every ``critic_steps``-th step — and the phases set the learning rate.

* critic: WGAN-GP on the patch scores (mean over scales) plus the cell-class CE of its
  auxiliary heads on the real pairs and on the generated ones (AC-GAN as Odena et al.
  define it, the thesis' ref. [81]: the critic learns the class of every image it judges,
  so the served head classifies stained cells it has learned to read, not only brightfield);
* generator: adversarial + pair-wise L1 reconstruction + feature matching on the critics'
  intermediate features + the class CE of the critics' heads on the generated pair (the
  generator is pushed to keep the class-specific features, ch. 8.2). A head on the pair
  can read the class from the DIC instead; ``class_head: stained`` puts it on the stained
  image alone, so the class CE rewards only what the generator paints. With
  ``class_condition`` the generator's own classifier of the DIC (whose probabilities
  condition its latent) learns the cell's class with the same CE (``generator_dic_*``).

Batches hold one cell of each of ``batch_size`` different classes; in the last
``balanced_fraction`` of the epochs the class CE is weighted by inverse class frequency
(thesis ch. 8.2: the first 80 of 100 epochs without, the last 20 with). No flips or
rotations (they would reverse the DIC shear): ``data.random_crop`` and ``data.random_resize``
shift and rescale each pair alike. :class:`PairedWorkload` is the step
function of both the single-process :func:`train` and the Ray workers
(``stainless_training.distributed``); cells without a brightfield pair are left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import default_collate

from stainless.ml.losses.adversarial import (
    feature_matching_loss,
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from stainless.ml.losses.classification import classification_loss
from stainless.ml.losses.reconstruction import pairwise_reconstruction_loss
from stainless.ml.models.configs import PairedConfig
from stainless.ml.models.paired import (
    DiscriminatorOutput,
    MultiScaleDiscriminator,
    PairedGenerator,
    build_paired_discriminator,
    build_paired_generator,
)
from stainless_training.augment import paired_jitter
from stainless_training.config import LossWeights, TrainingConfig
from stainless_training.phantom_data import CellDataset, phantom_samples
from stainless_training.plumbing import (
    Samples,
    SampleSource,
    Stateful,
    TrainerWorkload,
    load_state,
    save_state,
)
from stainless_training.runs import batches_per_epoch, paired_cells, train_in_process
from stainless_training.sampling import frequency_weights
from stainless_training.schedules import Pass, PhasedSchedule, use_frequency_balancing

Logs = dict[str, float]


@dataclass(frozen=True)
class PairedBatch:
    """DIC crops, their registered brightfield crops and the cells' classes."""

    dic: Tensor  # (B, 1, H, W) in [-1, 1]
    bf: Tensor  # (B, 3, H, W) in [-1, 1]
    labels: Tensor  # (B,)

    @classmethod
    def from_items(cls, items: dict[str, Tensor]) -> PairedBatch:
        return cls(dic=items["dic"], bf=items["bf"], labels=items["label"])


def patch_scores(outputs: list[DiscriminatorOutput]) -> Tensor:
    """One critic score per sample ``(B,)``: the mean patch score, averaged over scales."""
    return torch.stack([o.patch.mean(dim=(1, 2, 3)) for o in outputs]).mean(dim=0)


class PairedTrainer:
    """Owns the optimisers of generator and critic; :meth:`step` runs one training step.

    Args:
        generator: the global generator + local enhancer.
        critic: the conditional multi-scale critic with AC-GAN heads.
        schedule: learning rates and the critic-to-generator step ratio.
        weights: loss weights (``reconstruction``, ``feature_matching``, ``classification``,
            ``gradient_penalty``).
        class_weights: inverse-frequency weights ``(n_classes,)`` used when a step is
            frequency balanced.
        seed: seed of the gradient penalty's mixing.
    """

    def __init__(
        self,
        *,
        generator: PairedGenerator,
        critic: MultiScaleDiscriminator,
        schedule: PhasedSchedule,
        weights: LossWeights,
        class_weights: Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.generator = generator
        self.critic = critic
        self.schedule = schedule
        self.weights = weights
        self.class_weights = class_weights
        betas = (0.5, 0.999)
        rate = schedule.learning_rate(0)
        self.generator_optimiser = torch.optim.Adam(generator.parameters(), lr=rate, betas=betas)
        self.critic_optimiser = torch.optim.Adam(critic.parameters(), lr=rate, betas=betas)
        self.random = torch.Generator().manual_seed(seed)

    def step(self, batch: PairedBatch, step: int, *, balanced: bool = False) -> Logs:
        """One step; ``balanced`` weights the class CE by inverse class frequency."""
        if balanced and self.class_weights is None:
            raise ValueError("frequency balancing needs class_weights")
        rate = self.schedule.learning_rate(step)
        for optimiser in (self.generator_optimiser, self.critic_optimiser):
            for group in optimiser.param_groups:
                group["lr"] = rate
        class_weights = self.class_weights if balanced else None
        logs: Logs = {"lr": rate, "frequency_balancing": float(balanced)}
        for kind in self.schedule.passes(step):
            if kind is Pass.CRITIC:
                logs |= self._critic(batch, class_weights)
            elif kind is Pass.GENERATOR:
                logs |= self._generator(batch, class_weights)
            # the classifier and segmentor passes belong to model 1
        return logs

    def _critic(self, batch: PairedBatch, class_weights: Tensor | None) -> Logs:
        with torch.no_grad():
            fake = self.generator(batch.dic)
        real_outputs = self.critic(batch.bf, batch.dic)
        fake_outputs = self.critic(fake, batch.dic)
        adversarial, logs = wgan_critic_loss(patch_scores(real_outputs), patch_scores(fake_outputs))
        penalty, penalty_logs = gradient_penalty(
            lambda mixed: patch_scores(self.critic(mixed, batch.dic, classify=False)),
            batch.bf,
            fake,
            weight=self.weights.gradient_penalty,
            generator=self.random,
        )
        classification, class_logs = classification_loss(
            MultiScaleDiscriminator.class_logits(real_outputs),
            batch.labels,
            class_weights=class_weights,
        )
        generated, generated_logs = classification_loss(
            MultiScaleDiscriminator.class_logits(fake_outputs),
            batch.labels,
            class_weights=class_weights,
        )
        loss = adversarial + penalty + self.weights.classification * (classification + generated)
        self.critic_optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.critic_optimiser.step()
        logs |= penalty_logs | class_logs | {f"{k}_generated": v for k, v in generated_logs.items()}
        return {f"critic_{k}": v for k, v in logs.items()}

    def _generator(self, batch: PairedBatch, class_weights: Tensor | None) -> Logs:
        w = self.weights
        fake, own_logits = self.generator.stain(batch.dic)
        fake_outputs = self.critic(fake, batch.dic)
        with torch.no_grad():
            real_outputs = self.critic(batch.bf, batch.dic)
        adversarial, logs = wgan_generator_loss(patch_scores(fake_outputs))
        matching, matching_logs = feature_matching_loss(
            [o.features for o in real_outputs],
            [o.features for o in fake_outputs],
            weight=w.feature_matching,
        )
        reconstruction, reconstruction_logs = pairwise_reconstruction_loss(fake, batch.bf)
        classification, class_logs = classification_loss(
            MultiScaleDiscriminator.class_logits(fake_outputs),
            batch.labels,
            class_weights=class_weights,
        )
        loss = (
            adversarial
            + matching
            + w.reconstruction * reconstruction
            + w.classification * classification
        )
        if own_logits.shape[1]:  # the generator's class pathway learns the DIC's class
            own, own_logs = classification_loss(
                own_logits, batch.labels, class_weights=class_weights
            )
            loss = loss + w.classification * own
            logs |= {f"dic_{k}": v for k, v in own_logs.items()}
        self.generator_optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.generator_optimiser.step()
        logs |= matching_logs | reconstruction_logs | class_logs
        return {k if k == "generator" else f"generator_{k}": v for k, v in logs.items()}

    def _parts(self) -> dict[str, Stateful]:
        return {
            "generator": self.generator,
            "critic": self.critic,
            "generator_optimiser": self.generator_optimiser,
            "critic_optimiser": self.critic_optimiser,
        }

    def state(self, step: int) -> dict[str, object]:
        return save_state(step, self.random, self._parts())

    def load(self, state: dict[str, object]) -> int:
        """Restore a :meth:`state`; return the step to continue from."""
        return load_state(state, self.random, self._parts())


def model_config(config: TrainingConfig) -> PairedConfig:
    """The network of the run's size, with a class head for the data's vocabulary."""
    net = PairedConfig.of_size(config.size)
    return dataclasses.replace(
        net,
        n_classes=len(config.data.vocabulary().classes),
        class_head=config.class_head,
        class_condition=config.class_condition,
    )


class PairedWorkload(TrainerWorkload):
    """Model 3 as a :class:`~stainless_training.distributed.Workload`: trainer and samples.

    * Pairs: the brightfield crop is the target (reconstruction, the critic's real pair),
      so cells without one (``has_pair`` False) are left out.
    * Masks: not used (``has_mask`` does not matter).
    * Frequency balancing follows the step, not the batch plan's epoch: step ``s`` is in
      epoch ``s // batches_per_epoch`` of a one-worker run, so every worker of a
      distributed run balances the same steps, the last ``balanced_fraction`` of the run.
    """

    trainer: PairedTrainer

    def __init__(
        self, trainer: PairedTrainer, dataset: Samples, batch_size: int, config: TrainingConfig
    ) -> None:
        self._indices, labels = paired_cells(dataset, "model 3")
        super().__init__(trainer, dataset, labels)
        self.batch_size = min(batch_size, len(set(labels)))
        self.per_epoch = batches_per_epoch(self._labels, batch_size=self.batch_size)
        self.epochs = math.ceil(config.steps / self.per_epoch)
        self.balanced_fraction = config.balanced_fraction
        self.jitter = (config.data.random_crop, config.data.random_resize)

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.trainer.generator, self.trainer.critic]

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.trainer.generator_optimiser, self.trainer.critic_optimiser]

    def to(self, device: torch.device) -> None:
        super().to(device)
        if self.trainer.class_weights is not None:
            self.trainer.class_weights = self.trainer.class_weights.to(device)

    def epoch(self, step: int) -> int:
        return step // self.per_epoch

    def step(self, indices: list[int], step: int) -> Logs:
        items = default_collate([self.dataset[self._indices[i]] for i in indices])
        shift, scale = self.jitter
        items["dic"], items["bf"] = paired_jitter(
            items["dic"], items["bf"], shift=shift, scale=scale, generator=self.trainer.random
        )
        batch = PairedBatch.from_items({k: v.to(self.device) for k, v in items.items()})
        balanced = use_frequency_balancing(
            self.epoch(step), epochs=self.epochs, balanced_fraction=self.balanced_fraction
        )
        return self.trainer.step(batch, step, balanced=balanced)


def workload(config: TrainingConfig, samples: SampleSource | None = None) -> PairedWorkload:
    """Networks, optimisers and training cells of a model-3 run (seeded by the caller).

    ``samples`` gives the training cells for an image size (a dataset snapshot); without
    it the run crops phantom cells as its config says (``data.slide``, ``data.crop_size``,
    labelled in ``data.classes``). The class weights of frequency balancing are those of
    the cells with a pair.

    Raises:
        ValueError: a snapshot for a clinical run (snapshots carry the healthy classes).
    """
    net_config = model_config(config)
    data = config.data
    if samples is not None and data.classes != "healthy":
        raise ValueError("a dataset snapshot trains the healthy classes; this run's are clinical")
    dataset: Samples = (
        samples(net_config.image_size)
        if samples is not None
        else CellDataset(
            phantom_samples(
                fields=data.phantom_fields,
                seed=data.phantom_seed,
                crop_size=data.crop_size,
                image_size=net_config.image_size,
                config=data.phantom(),
                vocabulary=data.vocabulary(),
            )
        )
    )
    _, labels = paired_cells(dataset, "model 3")
    class_weights = torch.as_tensor(
        frequency_weights(labels, n_classes=net_config.n_classes), dtype=torch.float32
    )
    trainer = PairedTrainer(
        generator=build_paired_generator(net_config),
        critic=build_paired_discriminator(net_config),
        schedule=config.phased_schedule(),
        weights=config.losses,
        class_weights=class_weights,
        seed=config.seed,
    )
    return PairedWorkload(trainer, dataset, config.batch_size, config)


def train(
    config: TrainingConfig,
    out: Path,
    *,
    on_step: Callable[[int, Logs], None] | None = None,
) -> Path:
    """Train model 3 on phantom cells; checkpoint, config and metrics log go to ``out``.

    A run finding ``out/checkpoint.pt`` continues from it and ends as the uninterrupted
    run would (same batches, balancing and optimiser state).
    """
    torch.manual_seed(config.seed)
    return train_in_process(config, out, workload(config), on_step=on_step)
