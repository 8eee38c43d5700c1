"""Training of model 2, the style/structure disentangled translator (thesis ch. 6.1, 6.3).

DIC ↔ brightfield: DIC crops (replicated to RGB) are domain ``UNSTAINED``, their
brightfield pairs ``STAINED``; every image is translated to the other domain. Before the
GAN trains, the U-Net structure critic is pre-trained on the phantom masks (or loaded)
and frozen; the structure loss (eq. 6.3) back-propagates through it into the translator,
its weights never change.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import default_collate

from stainless.losses.adversarial import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from stainless.losses.classification import segmentation_loss, structure_loss
from stainless.losses.reconstruction import cycle_loss, diversity_loss, style_reconstruction_loss
from stainless.models.blocks import freeze
from stainless.models.configs import DisentangledConfig
from stainless.models.disentangled import (
    STAINED,
    UNSTAINED,
    DisentangledTranslator,
    MultiHeadDiscriminator,
    build_disentangled,
    build_disentangled_discriminator,
)
from stainless.models.segmentation import UNet, build_segmenter
from stainless_training.config import (
    LossWeights,
    ModelSize,
    SegmenterConfig,
    TrainingConfig,
    dump_config,
)
from stainless_training.phantom_data import CellDataset, phantom_samples
from stainless_training.runs import batch_plan, open_metrics
from stainless_training.schedules import Pass, PhasedSchedule

Logs = dict[str, float]
CHECKPOINT = "checkpoint.pt"
BACKGROUND_AND_RED_CELLS = (0, 1)
"""Mask classes the structure loss keeps for an output with a generated structure (6.3)."""


@dataclass(frozen=True)
class Batch:
    """Both domains of a batch of cells: ``images[:B]`` DIC (as RGB), ``images[B:]`` BF."""

    images: Tensor  # (2B, 3, H, W) in [-1, 1]
    source: Tensor  # (2B,) domain of each image
    target: Tensor  # (2B,) domain each image is translated to
    pairs: Tensor  # (2B, 3, H, W) a real image of the target domain (the registered pair)
    masks: Tensor  # (2B, H, W) segmentation masks, aligned in both domains

    @classmethod
    def from_items(cls, items: dict[str, Tensor]) -> Batch:
        dic = items["dic"].repeat(1, 3, 1, 1)
        bf = items["bf"]
        size = dic.shape[0]
        unstained = torch.full((size,), UNSTAINED)
        stained = torch.full((size,), STAINED)
        return cls(
            images=torch.cat([dic, bf]),
            source=torch.cat([unstained, stained]),
            target=torch.cat([stained, unstained]),
            pairs=torch.cat([bf, dic]),
            masks=items["mask"].repeat(2, 1, 1),
        )


def pretrain_segmenter(
    segmenter: UNet,
    dataset: CellDataset,
    *,
    settings: SegmenterConfig,
    seed: int,
    on_step: Callable[[int, Logs], None] | None = None,
) -> UNet:
    """Train ``segmenter`` on the masks of both domains, then freeze it; returns it.

    Each step draws ``settings.batch_size`` cells at random and segments their DIC and
    brightfield crops (the structure loss judges outputs in both domains).
    """
    segmenter.train()
    optimiser = torch.optim.Adam(segmenter.parameters(), lr=settings.learning_rate)
    random = torch.Generator().manual_seed(seed)
    for step in range(settings.pretrain_steps):
        picks = torch.randint(len(dataset), (settings.batch_size,), generator=random)
        batch = Batch.from_items(default_collate([dataset[int(i)] for i in picks]))
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
            raise ValueError("the structure critic must be frozen (stainless.models.freeze)")
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

    def state(self, step: int) -> dict[str, object]:
        return {
            "step": step,
            "translator": self.translator.state_dict(),
            "critic": self.critic.state_dict(),
            "segmenter": self.structure_critic.state_dict(),
            "translator_optimiser": self.translator_optimiser.state_dict(),
            "critic_optimiser": self.critic_optimiser.state_dict(),
            "random": self.random.get_state(),
        }

    def load(self, state: dict[str, object]) -> int:
        """Restore a :meth:`state` (the structure critic is restored by the caller)."""
        self.translator.load_state_dict(state["translator"])  # type: ignore[arg-type]
        self.critic.load_state_dict(state["critic"])  # type: ignore[arg-type]
        self.translator_optimiser.load_state_dict(state["translator_optimiser"])  # type: ignore[arg-type]
        self.critic_optimiser.load_state_dict(state["critic_optimiser"])  # type: ignore[arg-type]
        self.random.set_state(state["random"])  # type: ignore[arg-type]
        return int(state["step"])  # type: ignore[call-overload,no-any-return]


def model_config(config: TrainingConfig) -> DisentangledConfig:
    if config.size is ModelSize.TINY:
        return DisentangledConfig.tiny()
    return DisentangledConfig.thesis()


def train(
    config: TrainingConfig,
    out: Path,
    *,
    on_step: Callable[[int, Logs], None] | None = None,
) -> Path:
    """Train model 2 on phantom cells; checkpoint, config and metrics log go to ``out``.

    A run finding ``out/checkpoint.pt`` continues from it and ends as the uninterrupted
    run would (same batches, noise and optimiser state).
    """
    torch.manual_seed(config.seed)
    net_config = model_config(config)
    dataset = CellDataset(
        phantom_samples(
            fields=config.data.phantom_fields,
            seed=config.data.phantom_seed,
            image_size=net_config.image_size,
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    checkpoint = out / CHECKPOINT
    state = torch.load(checkpoint, weights_only=False) if checkpoint.exists() else None

    segmenter = build_segmenter(net_config)
    if state is not None:
        segmenter.load_state_dict(state["segmenter"])
    elif config.segmenter.checkpoint is not None:
        segmenter.load_state_dict(load_segmenter_state(Path(config.segmenter.checkpoint)))
    else:
        with (out / "segmenter_metrics.jsonl").open("w") as segmenter_log:

            def log_segmenter(i: int, logs: Logs) -> None:
                segmenter_log.write(json.dumps({"segmenter_step": i, **logs}) + "\n")

            pretrain_segmenter(
                segmenter,
                dataset,
                settings=config.segmenter,
                seed=config.seed,
                on_step=log_segmenter,
            )
    freeze(segmenter)

    trainer = DisentangledTrainer(
        translator=build_disentangled(net_config),
        critic=build_disentangled_discriminator(net_config),
        structure_critic=segmenter,
        schedule=config.phased_schedule(),
        weights=config.losses,
        seed=config.seed,
    )
    step = trainer.load(state) if state is not None else 0
    batch_size = min(config.batch_size, len(set(dataset.labels)))
    log = open_metrics(out / "metrics.jsonl", step)
    plan = batch_plan(dataset.labels, batch_size=batch_size, seed=config.seed)
    try:
        for position, (_, indices) in enumerate(plan):
            if step >= config.steps:
                break
            if position < step:
                continue
            items = default_collate([dataset[i] for i in indices])
            logs = trainer.step(Batch.from_items(items), step)
            log.write(json.dumps({"step": step, **logs}) + "\n")
            step += 1
            if step % config.checkpoint_every == 0 or step == config.steps:
                log.flush()
                torch.save(trainer.state(step), checkpoint)
            if on_step is not None:
                on_step(step, logs)
    finally:
        log.close()
    return checkpoint
