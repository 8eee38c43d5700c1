"""Training of model 2, the style/structure disentangled translator (thesis ch. 6.1, 6.3).

DIC ↔ brightfield: DIC crops (replicated to RGB) are domain ``UNSTAINED``, their
brightfield pairs ``STAINED``; every image is translated to the other domain. The model
needs no registered pairs: a cell without a brightfield crop gives its DIC crop only.
Before the GAN trains, the U-Net structure critic is pre-trained on the masks (or loaded)
and frozen; the structure loss (eq. 6.3) back-propagates through it into the translator,
its weights never change. :class:`DisentangledWorkload` is the step function of both the
single-process :func:`train` and the Ray workers (``stainless_training.distributed``).

Each step runs the passes of :meth:`PhasedSchedule.passes` that concern this model: the
critic every step, the translator (mappings, encoders, generator) every
``critic_steps``-th step; the phases set the learning rate. A translator step makes the
three outputs of ch. 6.1 — ``G(x, s̃, t̃)``, ``G(x, s, t̃)``, ``G(x, s̃, t)`` — and
minimises adversarial (6.1, WGAN form), style reconstruction (6.2), structure CE (6.3),
diversity (6.4, λ from the config) and cycle (6.5) losses.

Where the thesis is loose, this module decides (and says so):

* ``G(x, s, t̃)`` keeps the input's own style, so the head of the input's domain judges
  it (eq. 6.1 writes ``D_ỹ`` for all three outputs);
* the structure targets are the phantom masks of the input — the aligned pseudo-masks
  ``Seg(x_match)`` of the thesis;
* the target domain is the other domain (the task is DIC ↔ brightfield), not a random one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import default_collate

from stainless.ml.losses.adversarial import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from stainless.ml.losses.classification import segmentation_loss, structure_loss
from stainless.ml.losses.reconstruction import cycle_loss, diversity_loss, style_reconstruction_loss
from stainless.ml.models.blocks import freeze
from stainless.ml.models.configs import DisentangledConfig
from stainless.ml.models.disentangled import (
    STAINED,
    UNSTAINED,
    DisentangledTranslator,
    MultiHeadDiscriminator,
    build_disentangled,
    build_disentangled_discriminator,
)
from stainless.ml.models.segmentation import UNet, build_segmenter
from stainless_training.config import (
    LossWeights,
    ModelSize,
    SegmenterConfig,
    TrainingConfig,
)
from stainless_training.phantom_data import CellDataset, phantom_samples
from stainless_training.plumbing import (
    Samples,
    SampleSource,
    Stateful,
    TrainerWorkload,
    load_state,
    save_state,
)
from stainless_training.runs import train_in_process
from stainless_training.schedules import Pass, PhasedSchedule

Logs = dict[str, float]


BACKGROUND_AND_RED_CELLS = (0, 1)
"""Mask classes the structure loss keeps for an output with a generated structure (6.3)."""
IGNORE = -1  # mask label of pixels without annotation (the losses' ignore_index)


@dataclass(frozen=True)
class Batch:
    """Both domains of a batch of cells: the DIC crops (as RGB), then the brightfield ones.

    A cell without a brightfield pair (``has_pair`` False) gives only its DIC crop; a cell
    without a mask (``has_mask`` False) gives masks of ``IGNORE`` (no structure target).
    """

    images: Tensor  # (B + P, 3, H, W) in [-1, 1]: B DIC crops, P brightfield crops
    source: Tensor  # (B + P,) domain of each image
    target: Tensor  # (B + P,) domain each image is translated to
    pairs: Tensor  # (B + P, 3, H, W) a real image of the target domain (see from_items)
    masks: Tensor  # (B + P, H, W) segmentation masks, aligned in both domains

    @classmethod
    def from_items(cls, items: dict[str, Tensor]) -> Batch:
        """The batch of collated ``items`` (``CellDataset`` / ``ManifestDataset`` keys).

        The real image of the target domain a DIC crop is mixed with in the gradient
        penalty is its own brightfield pair; for a cell without one, the brightfield crop
        of another cell of the batch (WGAN-GP mixes real and generated samples, which need
        not be registered), or the DIC crop itself when the batch holds no brightfield crop.
        """
        dic = items["dic"].repeat(1, 3, 1, 1)
        size = dic.shape[0]
        paired = items.get("has_pair", torch.ones(size, dtype=torch.bool)).to(torch.bool)
        masks = items["mask"]
        if "has_mask" in items:
            annotated = items["has_mask"].to(torch.bool)[:, None, None]
            masks = torch.where(annotated, masks, torch.full_like(masks, IGNORE))
        bf = items["bf"][paired]
        n_bf = bf.shape[0]
        if n_bf == 0:
            dic_targets = dic
        else:
            position = torch.cumsum(paired.long(), 0) - 1  # of each paired cell's crop in bf
            unpaired = (~paired).nonzero().flatten()
            position[unpaired] = torch.arange(len(unpaired)) % n_bf
            dic_targets = bf[position]
        return cls(
            images=torch.cat([dic, bf]),
            source=torch.cat([torch.full((size,), UNSTAINED), torch.full((n_bf,), STAINED)]),
            target=torch.cat([torch.full((size,), STAINED), torch.full((n_bf,), UNSTAINED)]),
            pairs=torch.cat([dic_targets, dic[paired]]),
            masks=torch.cat([masks, masks[paired]]),
        )

    def to(self, device: torch.device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def pretrain_segmenter(
    segmenter: UNet,
    dataset: Samples,
    *,
    settings: SegmenterConfig,
    seed: int,
    on_step: Callable[[int, Logs], None] | None = None,
) -> UNet:
    """Train ``segmenter`` on the masks of both domains, then freeze it; returns it.

    Each step draws ``settings.batch_size`` cells with a mask at random (all cells when
    the dataset does not say which have one) and segments their DIC and brightfield crops
    (the structure loss judges outputs in both domains). Deterministic for a ``seed``
    and the global torch seed the U-Net was built under.
    """
    flags = getattr(dataset, "has_mask", None)
    annotated = [i for i in range(len(dataset)) if flags is None or flags[i]]
    if not annotated and settings.pretrain_steps:
        raise ValueError("pre-training the U-Net needs cells with a mask; the dataset has none")
    for parameter in segmenter.parameters():
        parameter.requires_grad_(True)
    segmenter.train()
    device = next(segmenter.parameters()).device
    optimiser = torch.optim.Adam(segmenter.parameters(), lr=settings.learning_rate)
    random = torch.Generator().manual_seed(seed)
    for step in range(settings.pretrain_steps):
        picks = torch.randint(len(annotated), (settings.batch_size,), generator=random)
        items = default_collate([dataset[annotated[int(i)]] for i in picks])
        batch = Batch.from_items(items).to(device)
        loss, logs = segmentation_loss(segmenter(batch.images), batch.masks)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if on_step is not None:
            on_step(step + 1, logs)
    freeze(segmenter)
    return segmenter


def load_segmenter_state(path: Path) -> dict[str, Tensor]:
    """U-Net weights from a state dict file or a model-2 ``checkpoint.pt``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("segmenter"), dict):
        state = state["segmenter"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no U-Net state dict")
    return state


class DisentangledTrainer:
    """Owns the optimisers of translator and critic; :meth:`step` runs one training step.

    Args:
        translator: mapping networks, encoders and generator (trained together).
        critic: the multi-head critic, one real/fake head per domain.
        structure_critic: the pre-trained U-Net, frozen (``requires_grad`` off, eval mode).
        schedule: learning rates and the critic-to-translator step ratio.
        weights: loss weights.
        seed: seed of the codes' noise and the gradient penalty's mixing.
    """

    def __init__(
        self,
        *,
        translator: DisentangledTranslator,
        critic: MultiHeadDiscriminator,
        structure_critic: UNet,
        schedule: PhasedSchedule,
        weights: LossWeights,
        seed: int = 0,
    ) -> None:
        if structure_critic.training or any(p.requires_grad for p in structure_critic.parameters()):
            raise ValueError("the structure critic must be frozen (stainless.ml.models.freeze)")
        self.translator = translator
        self.critic = critic
        self.structure_critic = structure_critic
        self.schedule = schedule
        self.weights = weights
        betas = (0.5, 0.999)
        rate = schedule.learning_rate(0)
        self.translator_optimiser = torch.optim.Adam(translator.parameters(), lr=rate, betas=betas)
        self.critic_optimiser = torch.optim.Adam(critic.parameters(), lr=rate, betas=betas)
        self.random = torch.Generator().manual_seed(seed)

    def _noise(self, batch: int, dim: int) -> Tensor:
        anchor = next(self.translator.parameters())
        return torch.randn(batch, dim, generator=self.random).to(anchor)

    def _styles(self, batch: int, domain: Tensor) -> Tensor:
        """``s̃ = M_S_ỹ(z_s)`` for fresh noise ``z_s``."""
        return self.translator.sample_style(
            self._noise(batch, self.translator.style_mapping.noise_dim), domain
        )

    def _structures(self, batch: int) -> Tensor:
        """``t̃ = M_T(z_t)`` for fresh noise ``z_t``."""
        return self.translator.sample_structure(
            self._noise(batch, self.translator.structure_mapping.noise_dim)
        )

    def step(self, batch: Batch, step: int) -> Logs:
        rate = self.schedule.learning_rate(step)
        for optimiser in (self.translator_optimiser, self.critic_optimiser):
            for group in optimiser.param_groups:
                group["lr"] = rate
        logs: Logs = {"lr": rate}
        for kind in self.schedule.passes(step):
            if kind is Pass.CRITIC:
                logs |= self._critic(batch)
            elif kind is Pass.GENERATOR:
                logs |= self._generator(batch)
            # the classifier and segmentor passes belong to model 1
        return logs

    def _critic(self, batch: Batch) -> Logs:
        x, source, target = batch.images, batch.source, batch.target
        n = x.shape[0]
        with torch.no_grad():
            code = self.translator.encode(x, source)
            style, structure = self._styles(n, target), self._structures(n)
            both = self.translator.decode(structure, style, code.background)
            structure_only = self.translator.decode(structure, code.style, code.background)
            style_only = self.translator.decode(code.structure, style, code.background)
        real_scores = self.critic(x, source)
        fake_scores = torch.cat(
            [
                self.critic(both, target),
                self.critic(structure_only, source),
                self.critic(style_only, target),
            ]
        )
        adversarial, logs = wgan_critic_loss(real_scores, fake_scores)
        penalty, penalty_logs = gradient_penalty(
            lambda mixed: self.critic(mixed, target),
            batch.pairs,
            style_only,
            weight=self.weights.gradient_penalty,
            generator=self.random,
        )
        self.critic_optimiser.zero_grad(set_to_none=True)
        (adversarial + penalty).backward()  # type: ignore[no-untyped-call]
        self.critic_optimiser.step()
        return {f"critic_{k}": v for k, v in (logs | penalty_logs).items()}

    def _generator(self, batch: Batch) -> Logs:
        x, source, target = batch.images, batch.source, batch.target
        n = x.shape[0]
        w = self.weights
        decode = self.translator.decode
        code = self.translator.encode(x, source)  # t, s (the input's own style), b
        t, s, b = code.structure, code.style, code.background
        style_1, style_2 = self._styles(n, target), self._styles(n, target)
        structure_1, structure_2 = self._structures(n), self._structures(n)
        both = decode(structure_1, style_1, b)  # G(x, s̃, t̃)
        structure_only = decode(structure_1, s, b)  # G(x, s, t̃)
        style_only = decode(t, style_1, b)  # G(x, s̃, t)
        logs: Logs = {}

        def add(name: str, term: tuple[Tensor, Logs]) -> Tensor:
            """Log a term's value as ``name`` and its accuracies / distances beside it."""
            loss, term_logs = term
            logs[name] = float(loss.detach())
            for key, value in term_logs.items():
                if key.endswith(("accuracy", "_l1")):
                    logs[f"{name}_{key.rsplit('_', 1)[-1]}"] = value
            return loss

        adversarial = add(
            "generator",
            wgan_generator_loss(
                torch.cat(
                    [
                        self.critic(both, target),
                        self.critic(structure_only, source),
                        self.critic(style_only, target),
                    ]
                )
            ),
        )
        style = add(
            "style",
            style_reconstruction_loss(self.translator.encode_style(style_only, target), style_1),
        ) + add(
            "style_generated",
            style_reconstruction_loss(self.translator.encode_style(both, target), style_1),
        )
        structure = add(
            "structure", structure_loss(self.structure_critic(style_only), batch.masks)
        ) + add(
            "structure_generated",
            structure_loss(
                self.structure_critic(both), batch.masks, classes=BACKGROUND_AND_RED_CELLS
            ),
        )
        diversity = (
            add(
                "diversity_style",
                diversity_loss(style_only, decode(t, style_2, b), weight=w.diversity),
            )
            + add(
                "diversity_structure",
                diversity_loss(structure_only, decode(structure_2, s, b), weight=w.diversity),
            )
            + add(
                "diversity_both",
                diversity_loss(both, decode(structure_2, style_2, b), weight=w.diversity),
            )
        )
        cycle = sum(
            (
                add(
                    f"cycle_{name}",
                    cycle_loss(x, decode(t, s, self.translator.background_encoder(fake))),
                )
                for name, fake in (
                    ("both", both),
                    ("style", style_only),
                    ("structure", structure_only),
                )
            ),
            start=torch.zeros((), device=x.device),
        )
        loss = adversarial + w.style * style + w.structure * structure + diversity
        loss = loss + w.cycle * cycle
        self.translator_optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.translator_optimiser.step()
        logs["translator"] = float(loss.detach())
        return {k if k.startswith("generator") else f"generator_{k}": v for k, v in logs.items()}

    def _parts(self) -> dict[str, Stateful]:
        return {
            "translator": self.translator,
            "critic": self.critic,
            "translator_optimiser": self.translator_optimiser,
            "critic_optimiser": self.critic_optimiser,
        }

    def state(self, step: int) -> dict[str, object]:
        return save_state(step, self.random, {**self._parts(), "segmenter": self.structure_critic})

    def load(self, state: dict[str, object]) -> int:
        """Restore a :meth:`state` (the structure critic is restored by the caller)."""
        return load_state(state, self.random, self._parts())


def model_config(config: TrainingConfig) -> DisentangledConfig:
    if config.size is ModelSize.TINY:
        return DisentangledConfig.tiny()
    return DisentangledConfig.thesis()


class DisentangledWorkload(TrainerWorkload):
    """Model 2 as a :class:`~stainless_training.distributed.Workload`: trainer and samples.

    * Pairs: every cell takes part — its DIC crop is translated to brightfield; a cell
      with a brightfield pair (``has_pair``) also gives that crop, translated to DIC
      (model 2 trains on unpaired images, :meth:`Batch.from_items`).
    * Masks: the structure targets; the pixels of a cell without a mask (``has_mask``)
      count in no structure loss, and the U-Net pre-trains on cells with a mask only.
    * The frozen U-Net (``frozen``) is not among the trained ``modules``: no optimiser,
      no gradient averaging. :meth:`prepare` pre-trains it at the start of a fresh run
      (deterministic: the same weights on every worker, which rank 0 broadcasts anyway);
      a configured ``segmenter.checkpoint`` is loaded instead, and a resumed run takes it
      from its checkpoint (:meth:`load`).
    """

    trainer: DisentangledTrainer

    def __init__(
        self,
        trainer: DisentangledTrainer,
        dataset: Samples,
        batch_size: int,
        segmenter_settings: SegmenterConfig,
        seed: int,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("model 2 needs training cells; the dataset has none")
        super().__init__(trainer, dataset, dataset.labels)
        self.batch_size = min(batch_size, len(set(dataset.labels)))
        self.segmenter_settings = segmenter_settings
        self.seed = seed

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.trainer.translator, self.trainer.critic]

    @property
    def frozen(self) -> list[torch.nn.Module]:
        """Networks every worker needs identical but nobody trains: the U-Net."""
        return [self.trainer.structure_critic]

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.trainer.translator_optimiser, self.trainer.critic_optimiser]

    def prepare(self, on_step: Callable[[int, Logs], None] | None = None) -> None:
        """Start of a fresh run: pre-train the U-Net unless its weights were given."""
        if self.segmenter_settings.checkpoint is not None:
            return
        pretrain_segmenter(
            self.trainer.structure_critic,
            self.dataset,
            settings=self.segmenter_settings,
            seed=self.seed,
            on_step=on_step,
        )

    def step(self, indices: list[int], step: int) -> Logs:
        items = default_collate([self.dataset[i] for i in indices])
        return self.trainer.step(Batch.from_items(items).to(self.device), step)

    def load(self, state: dict[str, object]) -> int:
        self.trainer.structure_critic.load_state_dict(state["segmenter"])  # type: ignore[arg-type]
        return super().load(state)


def workload(config: TrainingConfig, samples: SampleSource | None = None) -> DisentangledWorkload:
    """Networks, optimisers and training cells of a model-2 run (seeded by the caller).

    ``samples`` gives the training cells for an image size (a dataset snapshot); without
    it the run crops phantom cells as its config says. The U-Net comes frozen: loaded
    from ``config.segmenter.checkpoint`` if set, else built (and pre-trained by
    :meth:`DisentangledWorkload.prepare`).
    """
    net_config = model_config(config)
    dataset: Samples = (
        samples(net_config.image_size)
        if samples is not None
        else CellDataset(
            phantom_samples(
                fields=config.data.phantom_fields,
                seed=config.data.phantom_seed,
                image_size=net_config.image_size,
            )
        )
    )
    segmenter = build_segmenter(net_config)
    if config.segmenter.checkpoint is not None:
        segmenter.load_state_dict(load_segmenter_state(Path(config.segmenter.checkpoint)))
    freeze(segmenter)
    trainer = DisentangledTrainer(
        translator=build_disentangled(net_config),
        critic=build_disentangled_discriminator(net_config),
        structure_critic=segmenter,
        schedule=config.phased_schedule(),
        weights=config.losses,
        seed=config.seed,
    )
    return DisentangledWorkload(trainer, dataset, config.batch_size, config.segmenter, config.seed)


def train(
    config: TrainingConfig,
    out: Path,
    *,
    on_step: Callable[[int, Logs], None] | None = None,
) -> Path:
    """Train model 2 on phantom cells; checkpoint, config and metrics log go to ``out``.

    A run finding ``out/checkpoint.pt`` continues from it and ends as the uninterrupted
    run would (same batches, noise and optimiser state). A fresh run first pre-trains the
    U-Net structure critic (unless the config names one), logged to
    ``segmenter_metrics.jsonl``.
    """
    torch.manual_seed(config.seed)
    work = workload(config)

    def pretrain_segmenter() -> None:
        if config.segmenter.checkpoint is not None:
            return
        with (out / "segmenter_metrics.jsonl").open("w") as segmenter_log:

            def log_segmenter(i: int, logs: Logs) -> None:
                segmenter_log.write(json.dumps({"segmenter_step": i, **logs}) + "\n")

            work.prepare(on_step=log_segmenter)

    return train_in_process(config, out, work, on_step=on_step, on_fresh_start=pretrain_segmenter)
