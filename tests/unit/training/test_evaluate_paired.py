"""Model 3's per-class evaluation: the table beside thesis Table 8.3 and confused pairs."""

from __future__ import annotations

import numpy as np

from stainless_training.evaluate_paired import confused_pairs, located_confusions, per_class_table

NAMES = ["MO", "LY", "BL"]
# rows: reference class; columns: the class the stained cell was called
STAINED = np.array([[6, 0, 4], [1, 9, 0], [3, 0, 7]])
BRIGHTFIELD = np.array([[9, 0, 1], [0, 10, 0], [1, 0, 9]])
DIC_ONLY = np.array([[5, 0, 5], [0, 8, 2], [4, 0, 6]])


def test_pairs_confused_in_either_direction_are_named_with_their_shares() -> None:
    assert confused_pairs(STAINED, NAMES) == [{"classes": ["MO", "BL"], "shares": [0.4, 0.3]}]
    assert confused_pairs(BRIGHTFIELD, NAMES) == []  # told apart on the stained originals
    assert confused_pairs(STAINED, NAMES, share=0.1) == [
        {"classes": ["MO", "LY"], "shares": [0.0, 0.1]},
        {"classes": ["MO", "BL"], "shares": [0.4, 0.3]},
    ]


def test_the_per_class_table_has_recall_precision_and_the_thesis_beside() -> None:
    table = {row["class"]: row for row in per_class_table(STAINED, NAMES, BRIGHTFIELD)}
    assert table["MO"] == {
        "class": "MO",
        "cells": 10,
        "right": 6,
        "recall": 0.6,
        "precision": 0.6,  # 6 of the 10 cells called MO
        "recall_brightfield": 0.9,
        "thesis_automatic_recall": 0.701,
    }
    assert table["BL"]["precision"] == 7 / 11 and table["LY"]["recall"] == 0.9


def test_the_dic_only_recall_joins_the_table_where_given() -> None:
    table = {r["class"]: r for r in per_class_table(STAINED, NAMES, BRIGHTFIELD, DIC_ONLY)}
    assert table["MO"]["recall_dic_only"] == 0.5 and table["LY"]["recall_dic_only"] == 0.8
    assert "recall_dic_only" not in per_class_table(STAINED, NAMES, BRIGHTFIELD)[0]


def test_a_confused_pair_says_where_it_is_lost() -> None:
    # MO/BL: confused on the stained cells, told apart on the brightfield ones
    (pair,) = located_confusions(STAINED, BRIGHTFIELD, NAMES)
    assert pair["where"] == "lost from DIC" and "on_dic_only" not in pair
    (pair,) = located_confusions(STAINED, BRIGHTFIELD, NAMES, DIC_ONLY)  # the DIC alone too
    assert pair["where"] == "not in the DIC" and pair["on_dic_only"] is True
    (pair,) = located_confusions(STAINED, BRIGHTFIELD, NAMES, BRIGHTFIELD)  # DIC tells apart
    assert pair["where"] == "lost by the translator" and pair["on_dic_only"] is False
    (pair,) = located_confusions(STAINED, STAINED, NAMES, DIC_ONLY)
    assert pair["where"] == "also on brightfield" and pair["also_on_brightfield"] is True
