"""Model-1 training: the schedule's passes run, losses are logged, and a run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from stainless.ml.models.mtmd import Domain
from stainless_training.config import (
    DataConfig,
    LossWeights,
    ModelKind,
    ThirdDomain,
    TrainingConfig,
)
from stainless_training.mtmd import IGNORE, Batch, train, workload
from stainless_training.runs import CHECKPOINT


def test_a_short_run_logs_every_pass_and_resumes(tmp_path: Path) -> None:
    config = TrainingConfig(
        model=ModelKind.MTMD,
        steps=6,
        checkpoint_every=3,
        batch_size=3,
        data=DataConfig(phantom_fields=2, phantom_seed=1),
    )
    seen: list[int] = []
    checkpoint = train(config, tmp_path, on_step=lambda step, _: seen.append(step))
    assert seen == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(6))
    # scaled schedule over 6 steps: 1 pretrain, 3 adversarial, 2 supervised; G every 5th step
    generator_steps = [line["step"] for line in lines if "generator_cycle" in line]
    assert generator_steps == [4]
    assert "classification" in lines[4] and "segmentation" in lines[4]
    assert all(line["critic_gradient_penalty"] >= 0 for line in lines)
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 6 and checkpoint.name == CHECKPOINT
    assert (tmp_path / "config.yaml").read_text().startswith("model: mtmd")

    longer = config.model_copy(update={"steps": 8})
    train(longer, tmp_path, on_step=lambda step, _: seen.append(step))
    assert seen[6:] == [7, 8]
    assert torch.load(checkpoint, weights_only=False)["step"] == 8


def _transfer_config(**data: object) -> TrainingConfig:
    return TrainingConfig(
        model=ModelKind.MTMD,
        steps=6,
        checkpoint_every=6,
        batch_size=3,
        data=DataConfig(
            phantom_fields=2,
            phantom_seed=1,
            cv=ThirdDomain(acquisition="wright-giemsa", fields=2, seed=2),
            **data,  # type: ignore[arg-type]
        ),
    )


def test_a_third_domain_joins_every_batch_translated_to_dic_without_a_pair() -> None:
    work = workload(_transfer_config())
    seen: list[Batch] = []
    work.trainer.step = lambda batch, step: seen.append(batch) or {}  # type: ignore[method-assign,func-returns-value]
    work.step([0, 1, 2], 0)
    (batch,) = seen
    dic, bf, cv = Domain.DIC.position, Domain.BF.position, Domain.CV.position
    assert batch.source.tolist() == [dic] * 3 + [bf] * 3 + [cv] * 3
    assert batch.target.tolist() == [bf] * 3 + [dic] * 3 + [dic] * 3
    assert batch.paired.tolist() == [True] * 6 + [False] * 3
    assert batch.pairs.shape[0] == 6 and batch.images.shape[0] == 9 and batch.cells == 3
    assert (batch.labels >= 0).all()  # every domain labelled by default


def test_labels_from_cv_alone_leave_dic_and_bf_unlabelled_and_plan_over_cv() -> None:
    work = workload(_transfer_config(labelled=("CV",)))
    assert work.third is not None and list(work.labels) == work.third.labels
    seen: list[Batch] = []
    work.trainer.step = lambda batch, step: seen.append(batch) or {}  # type: ignore[method-assign,func-returns-value]
    work.step([0, 1, 2], 7)
    work.step([0, 1, 2], 7)
    first, again = seen
    assert (first.labels[:6] == IGNORE).all()
    assert first.labels[6:].tolist() == [work.third.labels[i] for i in (0, 1, 2)]
    assert torch.equal(first.images, again.images)  # the random side is seeded by the step


def test_a_run_with_labels_from_cv_alone_trains(tmp_path: Path) -> None:
    config = _transfer_config(labelled=("CV",))
    weights = LossWeights(translated_classification=1.0, latent_alignment=1.0)
    carried = config.model_copy(update={"losses": weights})
    for run, folder in ((config, tmp_path / "plain"), (carried, tmp_path / "carried")):
        lines: list[dict[str, float]] = []
        train(run, folder, on_step=lambda _, logs, seen=lines: seen.append(logs))
        assert lines[4]["classification"] > 0 and lines[4]["generator_reconstruction"] > 0
        assert ("generator_translated_classification" in lines[4]) is (run is carried)
        assert ("generator_latent_alignment" in lines[4]) is (run is carried)
        if run is carried:
            assert lines[4]["generator_latent_alignment"] > 0


def test_unlabelled_dic_cells_learn_from_their_registered_brightfield(tmp_path: Path) -> None:
    weights = LossWeights(paired_label_transfer=1.0)
    config = _transfer_config(labelled=("CV",)).model_copy(update={"losses": weights})
    lines: list[dict[str, float]] = []
    train(config, tmp_path, on_step=lambda _, logs: lines.append(logs))
    assert lines[4]["paired_classification"] > 0 and "paired_agreement" in lines[4]
    work = workload(config)
    seen: list[Batch] = []
    work.trainer.step = lambda batch, step: seen.append(batch) or {}  # type: ignore[method-assign,func-returns-value]
    work.step([0, 1, 2], 4)
    torch.manual_seed(0)
    with_pairs, logs = work.trainer._classification(seen[0])
    work.trainer.weights = LossWeights()
    torch.manual_seed(0)
    without, plain_logs = work.trainer._classification(seen[0])
    assert "paired_classification" not in plain_logs
    # the same networks: the difference is the DIC cells' CE
    assert with_pairs.item() == pytest.approx(
        without.item() + logs["paired_classification"], rel=1e-5
    )
    # with DIC labelled, no DIC cell is unlabelled: nothing is carried
    labelled = workload(
        _transfer_config(labelled=("DIC", "CV")).model_copy(update={"losses": weights})
    )
    labelled.trainer.step = lambda batch, step: seen.append(batch) or {}  # type: ignore[method-assign,func-returns-value]
    labelled.step([0, 1, 2], 4)
    _, logs = labelled.trainer._classification(seen[-1])
    assert "paired_classification" not in logs


def test_the_third_domain_is_model_1s_and_needs_fields_of_its_own() -> None:
    with pytest.raises(ValidationError, match=r"cv\.seed must differ"):
        DataConfig(phantom_seed=1, cv=ThirdDomain(seed=1))
    with pytest.raises(ValidationError, match="no cv domain"):
        DataConfig(labelled=("CV",))
    with pytest.raises(ValidationError, match="model 1's"):
        TrainingConfig(model=ModelKind.DISENTANGLED, data=DataConfig(cv=ThirdDomain()))
