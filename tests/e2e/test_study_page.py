"""A blinded validation study in real headless Chromium: two experts label every cell by
keyboard, and the report shows their confusion matrices and κ as worked out here."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from playwright.sync_api import Page, expect

from stainless.core.db.engine import session_scope
from stainless.core.http.auth import Role, create_key
from stainless.stages.review.study import study_labels

from .conftest import Served

CLASS_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "-", "="]


def _kappa(first: list[str], second: list[str]) -> float:
    """Cohen's κ from its definition: (observed - chance agreement) / (1 - chance)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    left, right = Counter(first), Counter(second)
    chance = sum(left[code] * right[code] for code in left) / n**2
    return (observed - chance) / (1 - chance)


def _sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("api-key-save").click()
    page.wait_for_selector("body[data-ready='true']")


def _label_by_keyboard(page: Page, answer: dict[str, str], classes: list[str]) -> list[str]:
    """Press each shown cell's answer; the item ids in the order the expert saw them."""
    cell = page.get_by_test_id("study-cell")
    seen: list[str] = []
    for _ in answer:
        item = cell.get_attribute("data-item-id") or ""
        assert item not in seen  # the next unlabelled cell comes up after each key
        seen.append(item)
        code = answer[item]
        page.keyboard.press("p" if code == "PQ" else CLASS_KEYS[classes.index(code)])
    page.wait_for_selector("body[data-busy='false']")
    total = str(len(answer))
    expect(page.get_by_test_id("study-progress")).to_have_attribute("data-done", total)
    expect(page.get_by_test_id("study-done")).to_be_visible()
    return seen


@pytest.mark.slow
def test_two_experts_label_a_study_by_keyboard_and_the_report_agrees(
    served_larger: Served, page: Page
) -> None:
    served = served_larger
    with session_scope(served.engine) as session:
        _, erin = create_key(session, name="erin", role=Role.REVIEWER, days=1)
        _, sam = create_key(session, name="sam", role=Role.SCIENTIST, days=1)
    created = httpx.post(
        f"{served.url}/v1/studies",
        json={"name": "acceptance", "slide_ids": [served.slide_id], "cells": 10, "seed": 5},
        headers={"X-API-Key": sam},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    study = created.json()
    classes = [entry["code"] for entry in study["classes"] if entry["code"] != "PQ"]
    found = study_labels(served.engine, study_id=study["id"])
    truth = {item.id: item.reference_class for item in found.items}
    automatic = {item.id: item.automatic_class for item in found.items}
    assert len(truth) == 10 and len(set(truth.values())) >= 3  # stratified over classes
    items = sorted(truth)

    # rita gives the reference class but marks four cells poor quality; erin gives the
    # reference class except for three cells, which she calls the next class of the study
    rita = {item: ("PQ" if i % 3 == 0 else truth[item]) for i, item in enumerate(items)}
    erin_answer = {
        item: (
            classes[(classes.index(truth[item]) + 1) % len(classes)] if i % 3 == 1 else truth[item]
        )
        for i, item in enumerate(items)
    }
    study_url = f"{served.url}/studies/{study['id']}"
    _sign_in(page, study_url, served.key)
    expect(page.get_by_test_id("whoami")).to_have_text("rita (reviewer)")
    expect(page.get_by_test_id("study-progress")).to_have_attribute("data-total", "10")
    assert page.get_by_test_id("label-PQ").is_visible()
    page.screenshot(path=str(served.out / "study-page.png"), full_page=True)
    rita_order = _label_by_keyboard(page, rita, classes)
    page.get_by_test_id("api-key-clear").click()
    _sign_in(page, study_url, erin)
    expect(page.get_by_test_id("whoami")).to_have_text("erin (reviewer)")
    expect(page.get_by_test_id("study-progress")).to_have_attribute("data-done", "0")
    erin_order = _label_by_keyboard(page, erin_answer, classes)
    assert sorted(rita_order) == sorted(erin_order) == items and rita_order != erin_order
    page.reload()  # the labels are saved: a reload shows the study done
    page.wait_for_selector("body[data-ready='true']")
    expect(page.get_by_test_id("study-progress")).to_have_attribute("data-done", "10")
    cell = page.get_by_test_id("study-cell")
    expect(cell).to_have_attribute("data-item-id", erin_order[0])  # none left: her first
    expect(page.get_by_test_id("label-" + erin_answer[erin_order[0]])).to_have_attribute(
        "aria-pressed", "true"
    )
    page.keyboard.press("ArrowRight")  # going back and forth shows the labels given
    expect(cell).to_have_attribute("data-label", erin_answer[erin_order[1]])

    page.get_by_test_id("api-key-clear").click()
    _sign_in(page, study_url, sam)
    experts = page.get_by_test_id("study-expert")
    expect(experts).to_have_count(2)
    assert {experts.nth(i).get_attribute("data-labelled") for i in range(2)} == {"10"}
    page.get_by_test_id("study-report-link").click()
    page.wait_for_selector("[data-testid='confusion']")
    page.screenshot(path=str(served.out / "study-report.png"), full_page=True)

    for name, answers in (("rita", rita), ("erin", erin_answer)):
        expected = Counter((truth[item], answers[item]) for item in items)
        table = page.locator(f"[data-testid='confusion'][data-rater='{name}']")
        shown_counts = {
            (cell.get_attribute("data-reference"), cell.get_attribute("data-label")): int(
                cell.get_attribute("data-count") or 0
            )
            for cell in table.locator("td").all()
        }
        assert {pair: n for pair, n in shown_counts.items() if n} == dict(expected)
    assert (
        sum(
            n
            for (_, label), n in Counter((truth[i], rita[i]) for i in items).items()
            if label == "PQ"
        )
        == 4
    )

    kappas = {
        (row.get_attribute("data-first"), row.get_attribute("data-second")): float(
            row.get_attribute("data-kappa") or "nan"
        )
        for row in page.get_by_test_id("kappa").all()
    }
    by_hand = _kappa([rita[i] for i in items], [erin_answer[i] for i in items])
    assert kappas[("erin", "rita")] == pytest.approx(by_hand, abs=1e-12)
    rita_auto = _kappa([rita[i] for i in items], [str(automatic[i]) for i in items])
    assert kappas[("rita", "automatic classifier")] == pytest.approx(rita_auto, abs=1e-12)
    expect(page.get_by_test_id("poor-quality")).to_have_text("20.0%")  # 4 of 20 labels
