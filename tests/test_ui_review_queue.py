"""Reviewing at the speed of reading: the review queue over the API and the Review tab's keys in a browser.

Two reviewers asking "Next to review" at the same moment, again and again, never get the same
session; every judgment records who gave it. In Chromium: the list is there when the tab opens, a
name is typed once, then five sessions are judged with the keyboard alone (J, +, j, Shift and +, …)
while "k of n reviewed" counts up; keys typed into a text box stay text.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from PIL import Image

from taco_app.store import queries

from .conftest import run_loop
from .ui_server import running

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

CHROMIUM = Path(os.environ.get("TACO_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def fill(store, count: int, prefix: str) -> list[str]:
    """``count`` finished sessions of 2 or 3 steps (Calculate, then Terminate), oldest first."""
    from taco_app.backends.replay import ReplayBackend

    picture = Image.new("RGB", (64, 48), "white")
    ids = []
    for k in range(count):
        replies = [{"thought": f"I add {k} and {j}.", "actions": [{"name": "Calculate",
                                                                   "arguments": {"expression": f"{k} + {j}"}}]}
                   for j in range(1 + k % 2)]
        replies.append({"thought": "That is all.", "actions": [{"name": "Terminate", "arguments": {"answer": f"{k}"}}]})
        backend = ReplayBackend([json.dumps(reply) for reply in replies])
        events = list(store.record(run_loop(f"{prefix} {k:02d}: what is it?", [picture], backend, sink=store.images)))
        assert events[-1].status == "finished"
        ids.append(events[-1].session_id)
    return ids


def next_to_review(client: Client, name: str, text: str = "") -> str:
    """The id of the session "Next to review" opens for ``name`` ("" when none is left)."""
    return client.predict(name, text, "any", "any", "", "", api_name="/next_to_review")[0]


def test_two_reviewers_asking_at_once_never_get_the_same_session(tmp_path):
    with running(tmp_path) as (url, studio):
        ids = fill(studio.store, 12, "Shared")
        clients = {name: Client(url, verbose=False) for name in ("ana", "bob")}
        with pytest.raises(Exception, match="Type your name first"):
            next_to_review(clients["ana"], "  ")
        together = threading.Barrier(2, timeout=60)
        got: dict[str, list[str]] = {"ana": [], "bob": []}
        failed: list[BaseException] = []

        def review(name: str) -> None:
            client = clients[name]
            try:
                while True:
                    together.wait()  # both ask at the same moment, every round
                    session = next_to_review(client, name, "Shared")
                    if not session:
                        break
                    got[name].append(session)
                    client.predict(session, 1, name, api_name="/rate_up")  # judged: it leaves the queue
            except threading.BrokenBarrierError:
                pass  # the other one found nothing left
            except BaseException as err:  # noqa: BLE001 (reported below)
                failed.append(err)
            finally:
                together.abort()

        threads = [threading.Thread(target=review, args=(name,)) for name in got]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failed, failed
        assert not set(got["ana"]) & set(got["bob"]), "two reviewers got the same session"
        assert sorted(got["ana"] + got["bob"]) == sorted(ids), "every session was given once"
        assert got["ana"] and got["bob"]
        for name, sessions in got.items():
            for session in sessions:
                trace = queries.get_trace(studio.store, session)
                assert trace.rating == "up" and [f.reviewer for f in trace.feedback if f.rating] == [name]

        # While ana holds a session (opened, not rated), bob never gets it; ana's next one moves on from it.
        more = fill(studio.store, 2, "Held")
        held = next_to_review(clients["ana"], "ana", "Held")
        assert held == more[0]
        assert next_to_review(clients["bob"], "bob", "Held") == more[1]
        assert next_to_review(clients["bob"], "bob", "Held") == ""  # bob skipped more[1]; ana holds more[0]
        assert next_to_review(clients["ana"], "ana", "Held") == more[1]  # ana skips what she passed over


def test_with_a_login_the_judgment_is_the_logins(tmp_path):
    """With --auth, the name typed is ignored: the login is who judged."""
    from taco_app.store.db import Store
    from taco_app.ui.app import serve, stop
    from taco_app.ui.studio import Studio

    from .ui_server import free_port

    studio = Studio(Store.open(), probe=False, warm=False)  # in this test's TACO_HOME (conftest)
    ids = fill(studio.store, 2, "Login")
    port = free_port()
    app = serve("127.0.0.1", port, block=False, auth=[("ana", "ana-secret")], studio=studio)
    try:
        client = Client(f"http://127.0.0.1:{port}/", auth=("ana", "ana-secret"), verbose=False)
        assert next_to_review(client, "mallory") == ids[0]
        client.predict(ids[0], 1, "mallory", api_name="/good_step")
        client.predict(ids[0], 1, "", api_name="/rate_down")
    finally:
        stop(app)
    trace = queries.get_trace(studio.store, ids[0])
    assert trace.rating == "down" and trace.step_ratings == {1: "up"}
    assert {f.reviewer for f in trace.feedback} == {"ana"}


# --- in a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running(tmp_path_factory.mktemp("queue-home")) as (url, studio):
        yield url, studio


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


def open_review(browser, url):
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.locator("#ask-run").wait_for()
    page.get_by_role("tab", name="Review").click()
    return page, errors


def nothing_focused(page) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")


@pytest.mark.browser
@needs_chromium
def test_judge_five_sessions_with_the_keyboard_alone(served, browser):
    from playwright.sync_api import expect

    url, studio = served
    ids = fill(studio.store, 50, "Question")  # here, not in the fixture: each test starts from an empty store
    page, errors = open_review(browser, url)
    # The list is there without pressing Search, newest first.
    expect(page.locator("#review-table")).to_contain_text("Question 49", timeout=30_000)
    progress = page.locator("#review-progress")
    expect(progress).to_contain_text("0 of 50 reviewed")
    expect(page.locator("#review-fork-stop")).to_be_disabled()  # no fork runs

    nothing_focused(page)
    page.keyboard.press("Shift+J")  # no name yet
    page.get_by_text("Type your name first").first.wait_for(timeout=20_000)
    name = page.locator("#review-name input, #review-name textarea").first
    name.fill("Ana Reviewer")
    name.blur()

    session = page.locator("#review-session input, #review-session textarea").first
    step_rated, session_rated = page.locator("#review-step-rated"), page.locator("#review-session-rated")
    good = [k % 2 == 0 for k in range(5)]  # good, bad, good, bad, good
    for k in range(5):
        nothing_focused(page)
        page.keyboard.press("Shift+J")  # Next to review: the oldest session nobody rated
        expect(session).to_have_value(ids[k], timeout=20_000)
        expect(step_rated).to_contain_text("Step 1: not rated yet")
        page.keyboard.press("+" if good[k] else "-")  # the step
        expect(step_rated).to_contain_text("Step 1: Rated: " + ("good" if good[k] else "bad: the model's"))
        chosen = page.locator("#rate-step-up" if good[k] else "#rate-step-model")
        expect(chosen).to_have_class(re.compile(r"\bprimary\b"))
        page.keyboard.press("j")  # the next step
        expect(step_rated).to_contain_text("Step 2: not rated yet")
        page.keyboard.press("Shift++" if good[k] else "Shift+Minus")  # the session
        expect(session_rated).to_contain_text("Rated: " + ("good" if good[k] else "bad"))
        expect(progress).to_contain_text(f"{k + 1} of 50 reviewed")
    page.keyboard.press("Shift+K")  # back to the session before, as it was judged
    expect(session).to_have_value(ids[3])
    expect(session_rated).to_contain_text("Rated: bad")

    for k, identifier in enumerate(ids[:5]):
        trace = queries.get_trace(studio.store, identifier)
        assert trace.rating == ("up" if good[k] else "down")
        assert trace.step_ratings == {1: "up" if good[k] else "down"}
        assert trace.step_blame == ({} if good[k] else {1: "model"})
        assert [f.reviewer for f in trace.feedback if f.rating] == ["Ana Reviewer"] * 2
    assert all(queries.get_trace(studio.store, i).rating is None for i in ids[5:])

    # Keys typed into a text box are text: nothing is rated, no button pressed.
    page.evaluate("""() => { window.__pressed = 0; for (const id of ["rate-up", "rate-down", "rate-step-up",
        "rate-step-model", "review-next", "review-next-step"]) document.getElementById(id)
        .addEventListener("click", () => { window.__pressed += 1; }); }""")
    search = page.locator("#review-search input, #review-search textarea").first
    search.click()
    page.keyboard.type("j+J-")
    page.keyboard.press("Shift++")
    expect(search).to_have_value("j+J-+")
    assert page.evaluate("window.__pressed") == 0
    expect(session).to_have_value(ids[3])
    search.fill("")
    assert not errors, errors
    page.close()


@pytest.mark.browser
@needs_chromium
def test_question_mark_shows_the_keys(served, browser):
    from playwright.sync_api import expect

    url, _studio = served
    page, errors = open_review(browser, url)
    keys = page.locator("#review-keys-list")
    expect(keys).to_be_hidden()
    nothing_focused(page)
    page.keyboard.press("?")
    expect(keys).to_be_visible()
    expect(keys).to_contain_text("Good answer")
    page.keyboard.press("?")
    expect(keys).to_be_hidden()
    page.get_by_role("tab", name="Ask").click()  # other tabs have no keys
    nothing_focused(page)
    page.keyboard.press("?")
    expect(keys).to_be_hidden()
    assert not errors, errors
    page.close()
