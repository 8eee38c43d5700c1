"""The review page in real headless Chromium: reclassify by keyboard, sign, check API and FHIR."""

from __future__ import annotations

import httpx
import jwt
from playwright.sync_api import Locator, Page, Route, expect

from ..support.oidc_provider import CLIENT_ID, Provider
from .conftest import Served


def _api(served: Served, path: str) -> httpx.Response:
    return httpx.get(served.url + path, headers={"X-API-Key": served.key}, timeout=10)


def test_a_reviewer_reclassifies_by_keyboard_and_signs(served: Served, page: Page) -> None:
    page.goto(f"{served.url}/slides/{served.slide_id}")
    page.get_by_test_id("api-key").fill(served.key)
    page.get_by_test_id("api-key-save").click()
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_selector("[data-testid='queue-cell']")
    queue = page.get_by_test_id("queue-cell")
    cells = queue.count()
    assert cells >= 2
    first = queue.first.get_attribute("data-cell-id")
    predicted = queue.first.get_attribute("data-class")
    target, key = ("EO", "3") if predicted != "EO" else ("MO", "5")
    page.screenshot(path=str(served.out / "review-page.png"), full_page=True)

    page.keyboard.press(key)  # reclassify the selected (first) cell
    for _ in range(cells - 1):
        page.keyboard.press("c")  # confirm every other cell
    page.wait_for_selector("[data-testid='queue-empty']")
    page.wait_for_selector("body:not([data-busy='true'])")
    page.once("dialog", lambda dialog: dialog.accept())  # Sign asks first
    page.get_by_test_id("sign").click()
    expect(page.get_by_test_id("slide-status")).to_contain_text("signed")  # no eval: CSP
    assert page.get_by_test_id(f"diff-{target}").get_attribute("data-count") != "0"
    stored = page.evaluate_handle("() => [sessionStorage.length, localStorage.length]")
    assert stored.json_value() == [1, 0]  # the key lives only as long as the tab
    page.get_by_test_id("api-key-clear").click()
    expect(page.get_by_test_id("whoami")).to_have_text("no valid key")
    assert page.evaluate_handle("() => sessionStorage.length").json_value() == 0

    cell = _api(served, f"/v1/cells/{first}").json()
    assert cell["class"] == target and cell["review_status"] == "reclassified"
    slide = _api(served, f"/v1/slides/{served.slide_id}").json()
    assert slide["status"] == "signed" and slide["signed_by"] == "rita"
    assert slide["differential"]["counts"][target] >= 1
    report = _api(served, f"/v1/slides/{served.slide_id}/fhir").json()
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
    observation = next(o for o in report["contained"] if o["id"] == f"obs-{target}")
    counts = [c["valueQuantity"]["value"] for c in observation["component"]]
    assert counts[0] >= 1


def test_a_key_saved_while_the_page_is_still_starting_is_kept(served: Served, page: Page) -> None:
    """Saved before the page has its sign-in options, the key must not reload the page (the
    form's own submit would, losing it); saved before the page's keyless request has been
    refused, it must not be forgotten by that late refusal."""
    config: list[Route] = []
    page.route("**/v1/auth/config", lambda route: config.append(route))
    page.goto(f"{served.url}/slides/{served.slide_id}")
    page.get_by_test_id("api-key").fill(served.key)
    page.get_by_test_id("api-key-save").click()
    config.pop().continue_()
    page.wait_for_selector("[data-testid='queue-cell']")
    page.unroute("**/v1/auth/config")

    page.get_by_test_id("api-key-clear").click()
    keyless: list[Route] = []
    page.route(
        "**/v1/me",
        lambda route: (
            route.continue_() if "x-api-key" in route.request.headers else keyless.append(route)
        ),
    )
    page.reload()
    while not keyless:
        page.wait_for_timeout(50)
    page.get_by_test_id("api-key").fill(served.key)
    page.get_by_test_id("api-key-save").click()
    page.wait_for_selector("[data-testid='queue-cell']")
    keyless.pop().continue_()  # refused now, after the key was saved
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("whoami")).to_have_text("rita (reviewer)")
    assert page.evaluate_handle("() => sessionStorage.length").json_value() == 1
    page.reload()  # the key is still there for the next load
    page.wait_for_selector("[data-testid='queue-cell']")


def test_a_gallery_cell_is_reclassified_undone_and_the_slide_signed_after_confirming(
    served: Served, page: Page
) -> None:
    page.goto(f"{served.url}/slides/{served.slide_id}")
    page.get_by_test_id("api-key").fill(served.key)
    page.get_by_test_id("api-key-save").click()
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_selector("[data-testid='gallery-cell']")
    queued = {c.get_attribute("data-cell-id") for c in page.get_by_test_id("queue-cell").all()}
    gallery = page.get_by_test_id("gallery-cell").all()
    # a cell the queue does not hold, where there is one (a small slide may queue all)
    chosen = next((c for c in gallery if c.get_attribute("data-cell-id") not in queued), gallery[0])
    cell_id = chosen.get_attribute("data-cell-id")
    predicted = chosen.get_attribute("data-class")
    target = "EO" if predicted != "EO" else "MO"
    expect(page.get_by_test_id("action-undo")).to_be_disabled()

    def gallery_cell() -> Locator:
        return page.locator(f"[data-testid='gallery-cell'][data-cell-id='{cell_id}']")

    gallery_cell().click()
    expect(page.get_by_test_id("selected-cell")).to_contain_text("why in review")
    page.get_by_test_id(f"reclass-{target}").click()
    expect(gallery_cell()).to_have_attribute("data-class", target)
    expect(gallery_cell()).to_have_attribute("data-review-status", "reclassified")
    page.get_by_test_id("action-undo").click()
    expect(gallery_cell()).to_have_attribute("data-class", predicted or "")
    expect(page.get_by_test_id("action-undo")).to_be_disabled()
    cell = _api(served, f"/v1/cells/{cell_id}").json()
    assert cell["class"] == predicted and cell["review_status"] != "reclassified"

    gallery_cell().click()
    page.get_by_test_id(f"reclass-{target}").click()  # this one stays
    expect(gallery_cell()).to_have_attribute("data-class", target)
    while page.get_by_test_id("queue-cell").count():
        page.get_by_test_id("queue-cell").first.click()  # back to the queue
        page.keyboard.press("c")
        page.wait_for_selector("body:not([data-busy='true'])")
    page.wait_for_selector("[data-testid='queue-empty']")
    page.wait_for_selector("body:not([data-busy='true'])")
    expected = _api(served, f"/v1/slides/{served.slide_id}").json()["differential"]["counts"]

    shown: list[str] = []
    page.once("dialog", lambda dialog: (shown.append(dialog.message), dialog.dismiss()))
    page.get_by_test_id("sign").click()
    expect(page.get_by_test_id("message")).to_have_text("Not signed.")
    assert "It will report" in shown[0] and f"{target} — " in shown[0]
    assert _api(served, f"/v1/slides/{served.slide_id}").json()["status"] == "completed"
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("sign").click()
    expect(page.get_by_test_id("slide-status")).to_contain_text("signed")

    report = _api(served, f"/v1/slides/{served.slide_id}/fhir").json()
    assert report["status"] == "final"
    reported = {
        o["id"].removeprefix("obs-"): o["component"][0]["valueQuantity"]["value"]
        for o in report["contained"]
        if o["id"].startswith("obs-") and "component" in o
    }
    assert reported[target] == expected[target] >= 1
    assert _api(served, f"/v1/cells/{cell_id}").json()["class"] == target


def _stored(page: Page) -> list[object]:
    """The tab's credential, how many items sessionStorage and localStorage hold."""
    answer: list[object] = page.evaluate(
        "() => [sessionStorage.getItem('stainless.apiKey'), sessionStorage.length,"
        " localStorage.length]"
    )
    return answer


def test_a_reviewer_signs_in_at_the_hospitals_provider(
    served_with_oidc: Served, oidc_provider: Provider, page: Page
) -> None:
    served = served_with_oidc
    page.goto(f"{served.url}/")
    login = page.get_by_test_id("oidc-login")
    expect(page.get_by_test_id("whoami")).to_have_text("not signed in")
    login.click()  # to the provider, which approves at once and sends the browser back
    page.wait_for_selector(f"[data-testid='slide-row'][data-slide-id='{served.slide_id}']")
    assert page.url == f"{served.url}/"  # code and state left the address
    expect(page.get_by_test_id("whoami")).to_have_text("rita (reviewer)")
    expect(login).to_be_hidden()
    token, items, local = _stored(page)
    assert (items, local) == (1, 0)  # the ID token only: state, nonce and verifier are gone
    claims = jwt.decode(str(token), options={"verify_signature": False})
    assert claims["aud"] == CLIENT_ID and claims["nonce"]
    assert oidc_provider.requests.count("/token") == 1  # the code, exchanged with its verifier

    page.get_by_test_id("api-key-clear").click()
    expect(page.get_by_test_id("whoami")).to_have_text("not signed in")
    expect(login).to_be_visible()
    assert _stored(page) == [None, 0, 0]

    page.goto(f"{served.url}/slides/{served.slide_id}")  # signing in from a slide returns there
    login.click()
    page.wait_for_url(f"{served.url}/slides/{served.slide_id}")
    page.wait_for_selector("[data-testid='queue-cell']")
    expect(page.get_by_test_id("whoami")).to_have_text("rita (reviewer)")

    page.evaluate("() => sessionStorage.setItem('stainless.apiKey', 'a.b.c')")
    page.reload()  # a refused token is dropped and the sign-in offered again
    expect(page.get_by_test_id("message")).to_have_text("401: malformed token")
    expect(login).to_be_visible()
    assert _stored(page) == [None, 0, 0]


def test_an_answer_for_another_sign_in_is_refused(
    served_with_oidc: Served, oidc_provider: Provider, page: Page
) -> None:
    page.goto(f"{served_with_oidc.url}/?code=stolen&state=forged")
    expect(page.get_by_test_id("message")).to_contain_text("Sign-in failed")
    assert page.url == f"{served_with_oidc.url}/"
    assert "/token" not in oidc_provider.requests
    assert _stored(page) == [None, 0, 0]
