"""Model 3's per-class evaluation: the table beside thesis Table 8.3 and confused pairs."""

from __future__ import annotations

import numpy as np

from stainless_training.evaluate_paired import confused_pairs, per_class_table

NAMES = ["MO", "LY", "BL"]
# rows: reference class; columns: the class the stained cell was called
STAINED = np.array([[6, 0, 4], [1, 9, 0], [3, 0, 7]])
BRIGHTFIELD = np.array([[9, 0, 1], [0, 10, 0], [1, 0, 9]])


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
