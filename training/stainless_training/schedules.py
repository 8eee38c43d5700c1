"""Training schedules as functions of the step (thesis ch. 5.3.2, Algorithm 1; ch. 8.2).

Model 1 trains in three phases: an unsupervised StarGAN-style pre-training at
lr 1e-6 (to avoid mode collapse), adversarial training at lr 1e-5, then the
supervised phase that adds the pair-wise reconstruction loss, the domain-agnostic
classifier and the segmentor. The critic runs every step; the other networks
every ``critic_steps``-th step, in the order D → classifier → segmentor → G
(thesis Table 5.1: this order gives the best image quality).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Pass(StrEnum):
    """One optimisation pass of a training step, in Algorithm 1's order."""

    CRITIC = "critic"
    CLASSIFIER = "classifier"
    SEGMENTOR = "segmentor"
    GENERATOR = "generator"


class Phase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    steps: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    supervised: bool = Field(
        default=False,
        description="Adds reconstruction, classifier and segmentor (thesis phase 3).",
    )


class PhasedSchedule(BaseModel):
    """Consecutive phases and the critic-to-generator step ratio."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phases: tuple[Phase, ...] = Field(min_length=1)
    critic_steps: int = Field(default=5, ge=1, description="Critic steps per generator step.")

    @model_validator(mode="after")
    def _unique_names(self) -> PhasedSchedule:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return self

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    @classmethod
    def thesis(cls) -> PhasedSchedule:
        """50k steps at 1e-6, 150k at 1e-5, 100k supervised at 1e-5 (thesis ch. 5.3.2)."""
        return cls(
            phases=(
                Phase(name="pretrain", steps=50_000, learning_rate=1e-6),
                Phase(name="adversarial", steps=150_000, learning_rate=1e-5),
                Phase(name="supervised", steps=100_000, learning_rate=1e-5, supervised=True),
            )
        )

    @classmethod
    def scaled(cls, total_steps: int, *, critic_steps: int = 5) -> PhasedSchedule:
        """The thesis schedule's proportions (1 : 3 : 2) and rates over ``total_steps``."""
        if total_steps < 6:
            raise ValueError(f"a phased schedule needs at least 6 steps, got {total_steps}")
        first, second = total_steps // 6, total_steps // 2
        return cls(
            critic_steps=critic_steps,
            phases=(
                Phase(name="pretrain", steps=first, learning_rate=1e-6),
                Phase(name="adversarial", steps=second, learning_rate=1e-5),
                Phase(
                    name="supervised",
                    steps=total_steps - first - second,
                    learning_rate=1e-5,
                    supervised=True,
                ),
            ),
        )

    def phase_at(self, step: int) -> Phase:
        """The phase that step ``step`` (0-based) belongs to; the last one continues after."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        end = 0
        for phase in self.phases:
            end += phase.steps
            if step < end:
                return phase
        return self.phases[-1]

    def learning_rate(self, step: int) -> float:
        return self.phase_at(step).learning_rate

    def passes(self, step: int) -> tuple[Pass, ...]:
        """The passes of step ``step`` in order (Algorithm 1, steps 3–15)."""
        if (step + 1) % self.critic_steps != 0:
            return (Pass.CRITIC,)
        if self.phase_at(step).supervised:
            return (Pass.CRITIC, Pass.CLASSIFIER, Pass.SEGMENTOR, Pass.GENERATOR)
        return (Pass.CRITIC, Pass.GENERATOR)


def use_frequency_balancing(epoch: int, *, epochs: int, balanced_fraction: float = 0.2) -> bool:
    """Whether the loss is weighted by inverse class frequency in ``epoch`` (0-based).

    Thesis ch. 8.2: the network converges without class balancing for the first 80 of
    100 epochs; frequency balancing is used in the last 20.
    """
    if not 0 <= balanced_fraction <= 1:
        raise ValueError(f"balanced_fraction must lie in [0, 1], got {balanced_fraction}")
    if epochs < 1 or epoch < 0:
        raise ValueError(f"need epochs ≥ 1 and epoch ≥ 0, got {epochs=} {epoch=}")
    return epoch >= epochs - round(epochs * balanced_fraction)
