"""Training of model 1, the multi-task multi-domain translator (thesis ch. 5.3.2, Algorithm 1).

Each step runs the passes :meth:`PhasedSchedule.passes` names, in order: the
critic every step; every ``critic_steps``-th step also the domain-agnostic
classifier and the segmentor (supervised phase only) and then encoder+generator.
DIC crops are fed as replicated RGB so cycles through every domain work; a batch
holds the DIC crops and their brightfield pairs, each translated to the other
domain, and, when the run has a third domain (``data.cv``), as many CV crops of
other cells, translated to DIC without a pair.

Labels come only from the domains ``data.labelled`` names (label transfer, thesis
ch. 5.2): the rows of the other domains carry :data:`IGNORE` and train the
adversarial, cycle and reconstruction terms alone, except that with
``losses.paired_label_transfer`` an unlabelled DIC cell also trains the classifier
against its registered brightfield's label or class probabilities. The class-balanced
batches are drawn over the labelled cells; the cells of the other domains are drawn at
random.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from stainless.imaging.phantom_set import phantom_config
from stainless.ml.losses.adversarial import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from stainless.ml.losses.classification import (
    classification_loss,
    domain_classification_loss,
    paired_targets,
    segmentation_loss,
    soft_classification_loss,
)
from stainless.ml.losses.reconstruction import (
    cycle_loss,
    latent_alignment_loss,
    pairwise_reconstruction_loss,
)
from stainless.ml.models.blocks import domain_onehot
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import (
    Discriminator,
    Domain,
    MultiTaskTranslator,
    build_multitask,
    build_multitask_discriminator,
)
from stainless_training.config import LossWeights, ModelSize, TrainingConfig
from stainless_training.phantom_data import CellDataset, phantom_samples
from stainless_training.plumbing import (
    Samples,
    SampleSource,
    Stateful,
    TrainerWorkload,
    load_state,
    save_state,
)
from stainless_training.runs import paired_cells, train_in_process
from stainless_training.schedules import Pass, PhasedSchedule

Logs = dict[str, float]
IGNORE = -1  # mask label of pixels without annotation (segmentation_loss's ignore_index)


@dataclass(frozen=True)
class Batch:
    """A batch of cells from every domain: DIC crops, their brightfield pairs, CV crops."""

    images: Tensor  # (N, 3, H, W) in [-1, 1]
    source: Tensor  # (N,) domain index of each image
    target: Tensor  # (N,) domain each image is translated to
    paired: Tensor  # (N,) bool: the row has a real image of its target domain
    pairs: Tensor  # (P, 3, H, W): those real images, for the P paired rows in order
    labels: Tensor  # (N,) cell classes; IGNORE for rows of unlabelled domains
    masks: Tensor  # (N, H, W) segmentation masks

    @property
    def cells(self) -> int:
        """Registered cells: rows ``[:cells]`` are their DIC, ``[cells:2 * cells]`` their BF."""
        return self.pairs.shape[0] // 2

    @classmethod
    def from_items(
        cls,
        items: dict[str, Tensor],
        third: dict[str, Tensor] | None = None,
        labelled: Collection[Domain] = tuple(Domain),
    ) -> Batch:
        """``items``: DIC crops with their registered brightfield (``dic``, ``bf``, ``label``,
        ``mask``); ``third``: CV crops of other cells (``bf`` holds the image)."""
        dic = items["dic"].repeat(1, 3, 1, 1)
        bf = items["bf"]
        rows = [(Domain.DIC, dic, Domain.BF, items), (Domain.BF, bf, Domain.DIC, items)]
        if third is not None:
            rows.append((Domain.CV, third["bf"], Domain.DIC, third))
        size = [image.shape[0] for _, image, _, _ in rows]

        def per_row(values: list[int]) -> Tensor:
            return torch.cat([torch.full((n,), v) for n, v in zip(size, values, strict=True)])

        labels = [
            data["label"] if domain in labelled else torch.full_like(data["label"], IGNORE)
            for domain, _, _, data in rows
        ]
        return cls(
            images=torch.cat([image for _, image, _, _ in rows]),
            source=per_row([domain.position for domain, _, _, _ in rows]),
            target=per_row([target.position for _, _, target, _ in rows]),
            paired=per_row([domain is not Domain.CV for domain, _, _, _ in rows]).bool(),
            pairs=torch.cat([bf, dic]),
            labels=torch.cat(labels),
            masks=torch.cat([data["mask"] for _, _, _, data in rows]),
        )


class MultiTaskTrainer:
    """Owns the networks' optimisers; :meth:`step` runs one step of Algorithm 1."""

    def __init__(
        self,
        *,
        translator: MultiTaskTranslator,
        critic: Discriminator,
        schedule: PhasedSchedule,
        weights: LossWeights,
        seed: int = 0,
    ) -> None:
        self.translator = translator
        self.critic = critic
        self.schedule = schedule
        self.weights = weights
        betas = (0.5, 0.999)
        rate = schedule.learning_rate(0)
        self.translator_optimiser = torch.optim.Adam(translator.parameters(), lr=rate, betas=betas)
        self.critic_optimiser = torch.optim.Adam(critic.parameters(), lr=rate, betas=betas)
        self.random = torch.Generator().manual_seed(seed)

    def _onehot(self, domains: Tensor) -> Tensor:
        return domain_onehot(
            domains,
            n_domains=self.translator.n_domains,
            batch=domains.shape[0],
            like=self.translator_anchor,
        )

    @property
    def translator_anchor(self) -> Tensor:
        return next(self.translator.parameters())

    def step(self, batch: Batch, step: int) -> Logs:
        rate = self.schedule.learning_rate(step)
        for optimiser in (self.translator_optimiser, self.critic_optimiser):
            for group in optimiser.param_groups:
                group["lr"] = rate
        supervised = self.schedule.phase_at(step).supervised
        logs: Logs = {"lr": rate}
        for kind in self.schedule.passes(step):
            if kind is Pass.CRITIC:
                logs |= self._critic(batch)
            elif kind is Pass.CLASSIFIER:
                logs |= self._update(self._classification(batch), self.weights.classification)
            elif kind is Pass.SEGMENTOR:
                logs |= self._update(
                    segmentation_loss(
                        self.translator.segment(self.translator.encode(batch.images)), batch.masks
                    ),
                    self.weights.segmentation,
                )
            else:
                logs |= self._generator(batch, supervised=supervised)
        return logs

    def _classification(self, batch: Batch) -> tuple[Tensor, Logs]:
        """The classifier's CE on the labelled rows and, with ``paired_label_transfer``, on
        the unlabelled DIC cells against their registered brightfield's label or class
        probabilities (:func:`paired_targets`)."""
        logits = self.translator.classify(self.translator.encode(batch.images))
        loss, logs = classification_loss(logits, batch.labels, ignore_index=IGNORE)
        n = batch.cells
        unlabelled = batch.labels[:n] == IGNORE
        if self.weights.paired_label_transfer > 0 and bool(unlabelled.any()):
            targets = paired_targets(
                batch.labels[n : 2 * n][unlabelled],
                logits[n : 2 * n][unlabelled],
                ignore_index=IGNORE,
            )
            transferred, transferred_logs = soft_classification_loss(
                logits[:n][unlabelled], targets
            )
            loss = loss + self.weights.paired_label_transfer * transferred
            logs |= {f"paired_{k}": v for k, v in transferred_logs.items()}
        return loss, logs

    def _update(self, loss_and_logs: tuple[Tensor, Logs], weight: float) -> Logs:
        loss, logs = loss_and_logs
        self.translator_optimiser.zero_grad(set_to_none=True)
        (weight * loss).backward()  # type: ignore[no-untyped-call]
        self.translator_optimiser.step()
        return logs

    def _critic(self, batch: Batch) -> Logs:
        with torch.no_grad():
            fake = self.translator.decode(
                self.translator.encode(batch.images), self._onehot(batch.target)
            )
        real_scores, real_domains = self.critic(batch.images)
        fake_scores, _ = self.critic(fake)
        adversarial, logs = wgan_critic_loss(real_scores, fake_scores)
        penalty, penalty_logs = gradient_penalty(
            lambda x: self.critic(x)[0],
            batch.images,
            fake,
            weight=self.weights.gradient_penalty,
            generator=self.random,
        )
        domain, domain_logs = domain_classification_loss(real_domains, batch.source)
        loss = adversarial + penalty + self.weights.domain * domain
        self.critic_optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.critic_optimiser.step()
        return {f"critic_{k}": v for k, v in (logs | penalty_logs | domain_logs).items()}

    def _generator(self, batch: Batch, *, supervised: bool) -> Logs:
        h = self.translator.encode(batch.images)
        fake = self.translator.decode(h, self._onehot(batch.target))
        scores, domains = self.critic(fake)
        adversarial, logs = wgan_generator_loss(scores)
        domain, domain_logs = domain_classification_loss(domains, batch.target)
        h_fake = self.translator.encode(fake)
        back = self.translator.decode(h_fake, self._onehot(batch.source))
        cycle, cycle_logs = cycle_loss(batch.images, back)
        loss = adversarial + self.weights.domain * domain + self.weights.cycle * cycle
        logs |= domain_logs | cycle_logs
        if supervised:  # phase 3 adds the pair-wise reconstruction (thesis Eq. 5.6)
            reconstruction, reconstruction_logs = pairwise_reconstruction_loss(
                fake[batch.paired], batch.pairs
            )
            loss = loss + self.weights.reconstruction * reconstruction
            logs |= reconstruction_logs
            if self.weights.translated_classification > 0:
                carried, carried_logs = classification_loss(
                    self.translator.classify(h_fake), batch.labels, ignore_index=IGNORE
                )
                loss = loss + self.weights.translated_classification * carried
                logs |= {f"translated_{k}": v for k, v in carried_logs.items()}
            if self.weights.latent_alignment > 0:
                n = batch.cells
                alignment, alignment_logs = latent_alignment_loss(h[:n], h[n : 2 * n])
                loss = loss + self.weights.latent_alignment * alignment
                logs |= alignment_logs
        self.translator_optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.translator_optimiser.step()
        return {f"generator_{k}": v for k, v in logs.items()}

    def _parts(self) -> dict[str, Stateful]:
        return {
            "translator": self.translator,
            "critic": self.critic,
            "translator_optimiser": self.translator_optimiser,
            "critic_optimiser": self.critic_optimiser,
        }

    def state(self, step: int) -> dict[str, object]:
        return save_state(step, self.random, self._parts())

    def load(self, state: dict[str, object]) -> int:
        """Restore a :meth:`state`; return the step to continue from."""
        return load_state(state, self.random, self._parts())


def model_config(config: TrainingConfig) -> MultiTaskConfig:
    return MultiTaskConfig.tiny() if config.size is ModelSize.TINY else MultiTaskConfig.thesis()


class MultiTaskWorkload(TrainerWorkload):
    """Model 1 as a :class:`~stainless_training.distributed.Workload`: trainer and samples.

    Samples without a brightfield pair cannot be translated both ways and are left out;
    pixels of samples without a mask do not count in the segmentation loss. ``third``
    holds the CV cells; ``labelled`` the domains whose labels the classifier sees. The
    class-balanced plan runs over the paired cells when DIC or BF is labelled, else over
    the CV cells; the other side's cells of a step are drawn at random (seeded by the
    step and its cells), so no unlabelled domain's class shapes a batch.
    """

    trainer: MultiTaskTrainer

    def __init__(
        self,
        trainer: MultiTaskTrainer,
        dataset: Samples,
        batch_size: int,
        *,
        third: Samples | None = None,
        labelled: Collection[Domain] = tuple(Domain),
        seed: int = 0,
    ) -> None:
        self._indices, labels = paired_cells(dataset, "model 1")
        self.labelled = frozenset(labelled)
        self.third = third
        self._plan_on_third = not self.labelled & {Domain.DIC, Domain.BF}
        if self._plan_on_third:
            if third is None:
                raise ValueError("labels only from CV, but the run has no CV cells")
            labels = third.labels
        super().__init__(trainer, dataset, labels)
        self.batch_size = min(batch_size, len(set(labels)))
        self.seed = seed

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.trainer.translator, self.trainer.critic]

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.trainer.translator_optimiser, self.trainer.critic_optimiser]

    def step(self, indices: list[int], step: int) -> Logs:
        random = np.random.default_rng([self.seed, step, *indices])

        def draw(n: int) -> list[int]:
            return [int(i) for i in random.choice(n, size=len(indices), replace=n < len(indices))]

        if self._plan_on_third:
            paired, third = [self._indices[i] for i in draw(len(self._indices))], indices
        else:
            paired = [self._indices[i] for i in indices]
            third = draw(len(self.third)) if self.third is not None else []
        items = self._collate(self.dataset, paired)
        cv = self._collate(self.third, third) if self.third is not None else None
        return self.trainer.step(Batch.from_items(items, cv, self.labelled), step)

    def _collate(self, dataset: Samples, indices: list[int]) -> dict[str, Tensor]:
        items: dict[str, Tensor] = default_collate([dataset[i] for i in indices])
        if "has_mask" in items:
            items["mask"][~items["has_mask"]] = IGNORE
        return {k: v.to(self.device) for k, v in items.items()}


def workload(config: TrainingConfig, samples: SampleSource | None = None) -> MultiTaskWorkload:
    """Networks, optimisers and training cells of a model-1 run (seeded by the caller).

    ``samples`` gives the training cells for an image size (a dataset snapshot); without
    it the run crops phantom cells as its config says. The third domain (``data.cv``) is
    always cropped from phantom fields under its acquisition.
    """
    net_config = model_config(config)
    trainer = MultiTaskTrainer(
        translator=build_multitask(net_config),
        critic=build_multitask_discriminator(net_config),
        schedule=config.phased_schedule(),
        weights=config.losses,
        seed=config.seed,
    )
    data = config.data
    dataset: Samples = (
        samples(net_config.image_size)
        if samples is not None
        else CellDataset(
            phantom_samples(
                fields=data.phantom_fields, seed=data.phantom_seed, image_size=net_config.image_size
            )
        )
    )
    third = (
        CellDataset(
            phantom_samples(
                fields=data.cv.fields,
                seed=data.cv.seed,
                image_size=net_config.image_size,
                config=phantom_config(acquisition=data.cv.acquisition),
            )
        )
        if data.cv is not None
        else None
    )
    return MultiTaskWorkload(
        trainer,
        dataset,
        config.batch_size,
        third=third,
        labelled=[Domain(name) for name in data.labelled],
        seed=config.seed,
    )


def train(
    config: TrainingConfig,
    out: Path,
    *,
    on_step: Callable[[int, Logs], None] | None = None,
) -> Path:
    """Train model 1 on phantom cells; checkpoints, config and metrics log go to ``out``.

    A run finding ``out/checkpoint.pt`` continues from it (resumable).
    """
    torch.manual_seed(config.seed)
    return train_in_process(config, out, workload(config), on_step=on_step)
