"""Snapshots of the database: reviews decide labels, poor quality and missing crops stay out."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stainless.datasets.manifest import DatasetError, read_manifest
from stainless.datasets.snapshot import SkippedCell, build_snapshot

from .conftest import Spec, World

WorldFactory = Callable[[list[list[Spec]]], World]


def test_labels_follow_reviews_and_poor_quality_is_left_out(world: WorldFactory) -> None:
    w = world(
        [
            [
                Spec(predicted=("SNE",), reviews=(("confirm", None),)),
                Spec(predicted=("SNE", "LY"), reviews=(("reclassify", "MO"),)),
                Spec(predicted=("EO",), reviews=(("reclassify", "BA"), ("poor_quality", None))),
                Spec(predicted=("LY",)),  # unreviewed
                Spec(predicted=()),  # pending: no prediction
                Spec(predicted=("LY",), reviews=(("reclassify", "EO"), ("confirm", None))),
            ]
        ]
    )
    key, manifest = build_snapshot(w.engine, w.store, name="reviewed")
    by_id = {item.id: item for item in manifest.items}
    assert [item.id for item in manifest.items] == [w.cells[i] for i in (0, 1, 5)]
    assert by_id[w.cells[0]].label == "SNE"
    assert by_id[w.cells[1]].label == "MO"  # the review overrides the latest prediction
    assert by_id[w.cells[5]].label == "EO"  # confirming after a reclassification keeps it
    assert {item.source for item in manifest.items} == {"review"}
    assert all(item.slide_id == w.slides[0] and item.mask is None for item in manifest.items)
    assert read_manifest(w.store, key) == manifest


def test_unreviewed_predictions_only_when_asked(world: WorldFactory) -> None:
    w = world([[Spec(reviews=(("confirm", None),)), Spec(predicted=("SNE", "LY"))]])
    _, plain = build_snapshot(w.engine, w.store, name="a")
    key, wide = build_snapshot(w.engine, w.store, name="a", include_unreviewed=True)
    assert len(plain.items) == 1
    assert [(i.source, i.label) for i in wide.items] == [("review", "SNE"), ("prediction", "LY")]
    assert key.startswith("datasets/a/")


def test_pairs_and_missing_objects(world: WorldFactory) -> None:
    confirmed = (("confirm", None),)
    w = world(
        [
            [
                Spec(reviews=confirmed, bf=False),
                Spec(reviews=confirmed, dic_stored=False),
                Spec(reviews=confirmed),
                Spec(reviews=confirmed),
            ]
        ]
    )
    w.store.delete(f"crops/{w.slides[0]}/3_bf.png")
    skipped: list[SkippedCell] = []
    _, manifest = build_snapshot(w.engine, w.store, name="m", on_skip=skipped.append)
    assert [item.id for item in manifest.items] == [w.cells[0], w.cells[2]]
    assert manifest.items[0].bf is None and manifest.items[1].bf is not None
    assert [s.cell_id for s in skipped] == [w.cells[1], w.cells[3]]
    assert "DIC crop" in skipped[0].reason and "brightfield crop" in skipped[1].reason
    for item in manifest.items:
        assert w.store.exists(item.dic) and (item.bf is None or w.store.exists(item.bf))


def test_a_class_the_model_does_not_know_is_left_out_with_the_reason(world: WorldFactory) -> None:
    w = world([[Spec(predicted=("LY",), reviews=(("reclassify", "BL"),)), Spec(predicted=("LY",))]])
    skipped: list[SkippedCell] = []
    _, manifest = build_snapshot(
        w.engine, w.store, name="b", include_unreviewed=True, on_skip=skipped.append
    )
    assert [item.id for item in manifest.items] == [w.cells[1]]
    assert [s.cell_id for s in skipped] == [w.cells[0]]
    assert "its class BL is not one of the model's" in skipped[0].reason


def test_same_cells_same_key_and_slide_filter(world: WorldFactory) -> None:
    confirmed = (("confirm", None),)
    w = world([[Spec(reviews=confirmed)], [Spec(predicted=("MO",), reviews=confirmed)]])
    first, m1 = build_snapshot(w.engine, w.store, name="same")
    second, m2 = build_snapshot(w.engine, w.store, name="same", description="again")
    assert first == second and m1.content_hash == m2.content_hash
    _, only = build_snapshot(w.engine, w.store, name="one", slide_ids=[w.slides[1]])
    assert [item.label for item in only.items] == ["MO"]


def test_nothing_to_snapshot_and_bad_input(world: WorldFactory) -> None:
    w = world([[Spec()]])
    with pytest.raises(DatasetError, match="nothing to snapshot"):
        build_snapshot(w.engine, w.store, name="empty")
    with pytest.raises(DatasetError, match="no slide nope"):
        build_snapshot(w.engine, w.store, name="x", slide_ids=["nope"])
    with pytest.raises(DatasetError, match="invalid dataset name"):
        build_snapshot(w.engine, w.store, name="bad/name")
    assert not list(w.store.list("datasets/"))
