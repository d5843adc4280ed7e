"""The web app in a real browser: Debian's Chromium driven by Playwright, against a server on 127.0.0.1.

Upload an image, run a replayed example, watch it stream, open a tool step, see the overlay, find
the session in Review and rate it, export and download the zip. Fork a session from an edited step
and watch the fork stream, compare it with its parent side by side, prefer one, export the
preference as trl-dpo. Screenshots go to
``$TACO_SCREENSHOTS`` (the README's come from here) or the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT
from .ui_server import (HOSTILE_LABEL, HOSTILE_QUESTION, failing_record, hostile_example, pixel_server, running,
                        sql_error)

CHROMIUM = Path(os.environ.get("TACO_CHROMIUM", "/usr/bin/chromium"))
pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

EXAMPLES = ROOT / "assets" / "examples"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"]


@pytest.fixture(scope="module")
def pixel():
    """``(url, paths requested)``: where the hostile model's pixel and links point."""
    with pixel_server() as served:
        yield served


@pytest.fixture(scope="module")
def app(tmp_path_factory, pixel):
    hostile = hostile_example(tmp_path_factory.mktemp("browser-scripts"), pixel[0], EXAMPLES / "fuel_prices.png")
    with running(tmp_path_factory.mktemp("browser-home"), [hostile]) as (url, studio):
        yield url, studio


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("TACO_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def choose_model(page, label: str) -> None:
    page.locator("#ask-model input").click()
    page.get_by_role("option", name=label).click()


def run_example(page, name: str, question: str, shots: Path | None = None):
    clear = page.locator("#ask-images button[aria-label='Clear']")
    if clear.count():  # the file box keeps earlier uploads: start from this image alone
        clear.first.click()
    page.locator("#ask-images input[type=file]").set_input_files(str(EXAMPLES / f"{name}.png"))
    page.locator("#ask-preview").get_by_text("image-0", exact=True).wait_for(timeout=30_000)
    page.locator("#ask-question textarea").fill(question)
    choose_model(page, f"Replay example: {name}")
    chat = page.locator("#ask-chat")
    started = time.perf_counter()
    page.locator("#ask-run").click()
    # Wait for this run's own text: the chat still shows the previous run until the first update.
    chat.get_by_text(question).first.wait_for(timeout=60_000)
    print(f"{name}: Run click to the first update in the page: {(time.perf_counter() - started) * 1000:.0f} ms")
    chat.get_by_text(re.compile(r"Step 1")).first.wait_for(timeout=60_000)
    if shots is not None:
        page.screenshot(path=str(shots / "ask-mid-run.png"), full_page=True)
    answer = json.loads((EXAMPLES / f"{name}.replay.json").read_text())[-1]
    expected = json.loads(answer)["actions"][0]["arguments"]["answer"]
    chat.get_by_text(re.compile(r"Answer:\s*" + re.escape(expected))).first.wait_for(timeout=180_000)
    return chat


WIDE, PHONE = 1440, 390
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def at_both_widths(page, shots: Path, name: str) -> None:
    """Screenshots of the page as it is: ``{name}.png``, the whole page at 1440 px, and ``{name}-phone.png``,
    a 390 x 844 screen scrolled to the chat; at 390 px nothing scrolls sideways. The page is left at 1440 px."""
    height = page.viewport_size["height"]
    page.wait_for_timeout(300)  # let the last update's transition finish: a picture, not a check
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": PHONE, "height": 844})
    page.wait_for_function(f"document.documentElement.clientWidth <= {PHONE}")
    assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{name} scrolls sideways at {PHONE} px"
    page.locator(f"#{name}-chat").evaluate("chat => chat.scrollIntoView({block: 'start'})")
    page.evaluate("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")  # notices
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / f"{name}-phone.png"))
    page.set_viewport_size({"width": WIDE, "height": height})
    page.wait_for_function(f"document.documentElement.clientWidth >= {WIDE}")


def _download_export(page, target: Path) -> Path:
    """Press Export on the Export tab and save the zip it offers to ``target``."""
    page.locator("#export-run").click()
    link = page.locator("#export-file a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download:
        link.click()
    download.value.save_as(target)
    return target


def test_ask_review_export_in_a_browser(app, browser, shots, tmp_path):
    url, studio = app
    page = browser.new_page(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.locator("#ask-run").wait_for()

    chat = run_example(page, "fuel_prices", "How much gas can I buy with $50?", shots)
    assert "About 14.33 gallons of regular gas" in chat.inner_text()

    # Every step stays open after the run: the OCR step's observation (what the tool read) is there to read.
    chat.get_by_text("OBSERVATION", exact=False).first.wait_for(timeout=10_000)
    assert "Regular" in chat.inner_text()
    expect(page.locator("#ask-stop")).to_be_disabled()  # no run going
    # Collapse all folds every step (the answer stays); Expand all opens them again.
    toggle = page.locator("#ask-chat-collapse")
    toggle.click()
    expect(toggle).to_have_text("Expand all")
    chat.get_by_text("OBSERVATION", exact=False).first.wait_for(state="detached", timeout=10_000)
    assert "Step 1 · OCR" in chat.inner_text() and "About 14.33 gallons of regular gas" in chat.inner_text()
    toggle.click()
    expect(toggle).to_have_text("Collapse all")
    chat.get_by_text("OBSERVATION", exact=False).first.wait_for(timeout=10_000)

    # The overlay follows the latest step; pick the OCR step and its picture is shown.
    overlay = page.locator("#overlay-image img")
    overlay.wait_for(timeout=30_000)
    assert overlay.get_attribute("src")
    at_both_widths(page, shots, "ask")  # the README's: the answered run, wide and on a phone

    # A run with boxes: DetectFaces on the astronaut, then its overlay.
    chat = run_example(page, "astronaut", "How many faces are in this photo?")
    page.locator("#overlay-step input").click()
    page.get_by_role("option", name=re.compile("Step 1 · DetectFaces")).click()
    page.locator("#overlay-caption").get_by_text("face", exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "overlay-boxes.png"), full_page=True)

    # Review: find the fuel session, open it, rate it.
    page.get_by_role("tab", name="Review").click()
    page.locator("#review-search input, #review-search textarea").first.fill("gas")
    page.locator("#review-refresh").click()
    table = page.locator("#review-table")
    table.locator("text=How much gas >> visible=true").first.click()
    page.locator("#review-chat").get_by_text("Answer:").wait_for(timeout=30_000)
    page.locator("#review-name textarea, #review-name input").first.fill("Ada")  # kept with each rating
    page.locator("#rate-up").click()
    page.locator("#review-feedback").get_by_text("up").wait_for(timeout=10_000)
    page.wait_for_timeout(300)
    at_both_widths(page, shots, "review")
    session_id = page.locator("#review-session textarea, #review-session input").first.input_value()
    trace = __import__("taco_app.store.queries", fromlist=["get_trace"]).get_trace(studio.store, session_id)
    assert trace.rating == "up" and trace.session["question"] == "How much gas can I buy with $50?"

    # Export: the count, then a zip to download.
    page.get_by_role("tab", name="Export").click()
    page.get_by_label("up", exact=True).check()
    page.locator("#export-count").get_by_text("1").wait_for(timeout=10_000)
    with zipfile.ZipFile(_download_export(page, tmp_path / "export.zip")) as archive:
        names = archive.namelist()
        assert "data.jsonl" in names and "README.md" in names and any(n.startswith("images/") for n in names)
        assert session_id in archive.read("data.jsonl").decode()
    assert not errors, errors
    page.close()


def test_bad_input_in_the_page(app, browser, pixel, monkeypatch):
    url, studio = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.locator("#ask-run").wait_for()
    page.locator("#ask-run").click()  # no image
    page.get_by_text("Add at least one image").first.wait_for(timeout=20_000)
    expect(page.locator("#ask-stop")).to_be_disabled()  # a refused run leaves nothing to stop
    page.locator("#ask-images input[type=file]").set_input_files(str(EXAMPLES / "fuel_prices.png"))
    page.locator("#ask-preview").get_by_text("image-0", exact=True).wait_for(timeout=30_000)
    page.locator("#ask-run").click()  # no question
    page.get_by_text("Type a question").first.wait_for(timeout=20_000)
    # Text typed by a person is shown as text, never run as HTML.
    page.locator("#ask-question textarea").fill('<img src=x onerror="window.__pwned=1"> <b>bold?</b> How much gas?')
    page.locator("#ask-run").click()
    page.locator("#ask-chat").get_by_text("Answer:").wait_for(timeout=180_000)
    assert page.evaluate("window.__pwned") is None
    assert "<b>bold?</b>" in page.locator("#ask-chat").inner_text()

    # A model writes a URL, an address, LaTeX and an <img> pixel: the page shows them as typed, with
    # no link and no formula. Its next reply (an <img> pixel and a "re-login" link) makes the
    # database fail: the toast is one plain sentence, and nothing ever asks the pixel's server.
    monkeypatch.setattr(studio.store, "record", failing_record(studio.store, sql_error))
    page.locator("#ask-question textarea").fill(HOSTILE_QUESTION)
    choose_model(page, HOSTILE_LABEL)
    page.locator("#ask-run").click()
    toast = page.locator("[data-testid=toast-body]")
    toast.get_by_text("Something went wrong").first.wait_for(timeout=60_000)
    expect(page.locator("#ask-stop")).to_be_disabled()  # the failed run has ended
    chat = page.locator("#ask-chat")
    step = chat.locator(".message-content").filter(has_text="www.example.org").first  # open: the step has run
    shown = step.inner_text()
    assert f"See {pixel[0]}/docs and www.example.org or mail admin@example.org; $$x^2$$ and $\\alpha$" in shown
    assert f"<img src={pixel[0]}/pixel>" in shown
    assert chat.locator("a").count() == 0 and page.locator(".katex, .latex-block").count() == 0
    assert toast.locator("img, a").count() == 0 and "re-login" not in toast.inner_text()
    assert pixel[1] == [], pixel[1]
    page.close()


def test_stop_is_enabled_only_while_a_run_is_going(app, browser):
    url, _studio = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    stop = page.locator("#ask-stop")
    stop.wait_for()
    expect(stop).to_be_disabled()
    # A manual run waits for the person's first step: it is going until Stop.
    page.locator("#ask-images input[type=file]").set_input_files(str(EXAMPLES / "fuel_prices.png"))
    page.locator("#ask-preview").get_by_text("image-0", exact=True).wait_for(timeout=30_000)
    page.locator("#ask-question textarea").fill("How much gas can I buy with $50?")
    choose_model(page, "Manual: write each step yourself")
    page.locator("#ask-run").click()
    page.locator("#manual-panel").first.wait_for(state="visible", timeout=60_000)
    expect(stop).to_be_enabled()
    stop.click()
    page.locator("#ask-chat").get_by_text("Stopped.").first.wait_for(timeout=30_000)
    expect(stop).to_be_disabled()
    page.close()


def test_the_layout_fits_a_wide_screen_and_a_phone(app, browser):
    """At 1440 px the chat and the overlay sit side by side; at 390 px (a phone) they are stacked, and
    neither Ask nor Review scrolls sideways. The examples and the images come first."""
    url, _studio = app
    for width, side_by_side in ((WIDE, True), (PHONE, False)):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        page.locator("#ask-run").wait_for()
        chat, overlay = page.locator("#ask-chat").bounding_box(), page.locator("#overlay-image").bounding_box()
        assert (overlay["x"] >= chat["x"] + chat["width"]) == side_by_side, (width, chat, overlay)
        assert (overlay["y"] >= chat["y"] + chat["height"]) == (not side_by_side), (width, chat, overlay)
        examples = page.get_by_role("button", name="fuel prices").bounding_box()
        images = page.locator("#ask-images").bounding_box()
        assert examples["y"] < images["y"] < chat["y"], (examples, images, chat)
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"Ask scrolls sideways at {width} px"
        page.get_by_role("tab", name="Review").click()
        page.locator("#review-chat").wait_for()
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"Review scrolls sideways at {width} px"
        page.close()


PREMIUM_STEP = {"thought": "The question is about premium: $3.89 a gallon.",
                "actions": [{"name": "Calculate", "arguments": {"expression": "50 / 3.89"}}]}


def stored_fuel_session(store) -> str:
    """A finished fuel-sign session in the app's store, on scripted replies: a Crop of the sign,
    the regular price, the answer."""
    from PIL import Image

    from taco_app.backends.replay import ReplayBackend

    from .conftest import run_loop

    replies = [{"thought": "The prices are on the sign; I look closer.",
                "actions": [{"name": "Crop", "arguments": {"image": "image-0", "bbox": [0.1, 0.05, 0.9, 0.7]}}]},
               {"thought": "Regular is $3.49 a gallon.",
                "actions": [{"name": "Calculate", "arguments": {"expression": "50 / 3.49"}}]},
               {"thought": "About 14.33 gallons.",
                "actions": [{"name": "Terminate", "arguments": {"answer": "About 14.33 gallons of regular gas"}}]}]
    photo = Image.open(EXAMPLES / "fuel_prices.png").convert("RGB")
    backend = ReplayBackend([json.dumps(reply) for reply in replies])
    events = list(store.record(run_loop("How much gas can I buy with $50?", [photo], backend, sink=store.images)))
    assert events[-1].status == "finished"
    return events[-1].session_id


def replace_code(page, selector: str, text: str) -> None:
    """Replace a code editor's text (inserted as a paste: no brackets closed for us)."""
    page.locator(f"{selector} .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


def test_fork_compare_prefer_and_export_in_a_browser(app, browser, shots, tmp_path):
    """Open a session in Review, edit step 2 and fork it (manual mode: the new trace streams, then waits
    for the person's step 3), open its parent from the lineage, compare the two side by side, record a
    preference, and export it as trl-dpo."""
    from taco_app.store import queries

    url, studio = app
    parent = stored_fuel_session(studio.store)
    page = browser.new_page(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.locator("#ask-run").wait_for()
    choose_model(page, "Manual: write each step yourself")  # the model forks run with

    page.get_by_role("tab", name="Review").click()
    page.locator("#review-search input, #review-search textarea").first.fill("gas")
    page.locator("#review-refresh").click()
    page.locator("#review-table").locator(f"text={parent} >> visible=true").first.click()
    page.locator("#review-chat").get_by_text("Answer:").wait_for(timeout=30_000)
    page.get_by_role("button", name="◀ Previous step").click()
    page.get_by_role("button", name="Fork from step 2").wait_for(timeout=10_000)
    page.locator("#review-step-text").get_by_text("50 / 3.49").wait_for(timeout=10_000)
    replace_code(page, "#review-step-text", json.dumps(PREMIUM_STEP, indent=1))
    page.get_by_role("button", name="Fork from step 2").click()

    # The fork streams: steps 1 and 2 (the edit, run with the real Calculate), then it waits for step 3.
    panel = page.locator("#review-manual-panel").first  # Gradio nests a shown group in one with its id
    panel.wait_for(state="visible", timeout=60_000)
    chat = page.locator("#review-chat")
    chat.get_by_text(re.compile(r"Step 2 · Calculate")).first.wait_for(timeout=10_000)
    info = page.locator("#review-fork-info")
    said = info.inner_text()
    assert f"Forking {parent} at step 2, edited" in said and "Manual mode: write step 3" in said, said
    assert "Answer:" not in chat.inner_text(), "the fork is still running: no answer yet"
    page.screenshot(path=str(shots / "review-fork.png"), full_page=True)
    panel.locator("#review-manual-thought textarea").fill("About 12.85 gallons of premium.")
    panel.locator("#review-manual-action input").click()
    page.get_by_role("option", name="Terminate", exact=True).click()
    replace_code(page, "#review-manual-arguments", '{"answer": "About 12.85 gallons of premium gas"}')
    panel.locator("#review-manual-submit").click()
    info.get_by_text("saved, and open above").wait_for(timeout=60_000)
    child = page.locator("#review-session textarea, #review-session input").first.input_value()
    assert child != parent
    page.locator("#review-lineage").get_by_text("Forked from").wait_for(timeout=10_000)
    trace = queries.get_trace(studio.store, child)
    assert (trace.session["parent_session_id"], trace.session["fork_step"]) == (parent, 2)
    assert trace.steps[1]["action"]["arguments"]["expression"] == "50 / 3.89"
    assert trace.session["answer"] == "About 12.85 gallons of premium gas"

    # Its parent, one click away in the lineage table; then the two side by side.
    page.locator("#review-family").locator(f"text={parent} >> visible=true").first.click()
    page.locator("#review-lineage").get_by_text("Forks:").wait_for(timeout=10_000)
    assert page.locator("#review-session textarea, #review-session input").first.input_value() == parent
    page.locator("#review-compare").click()
    view = page.locator("#compare-view")
    view.get_by_text("first difference").wait_for(timeout=30_000)
    assert page.locator("#compare-a textarea, #compare-a input").first.input_value() == parent
    assert page.locator("#compare-b textarea, #compare-b input").first.input_value() == child
    assert view.locator("tr.first-difference").get_attribute("id") == "compare-step-2"
    assert view.locator("#compare-step-1 img").count() == 2  # the Crop's overlay on both sides
    page.locator("#compare-reason textarea").fill("The question meant premium.")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.locator("#compare-b-better").click()
    page.locator("#compare-verdicts").get_by_text("B is better").wait_for(timeout=10_000)
    found = queries.preferences(studio.store, child)
    assert [(p.chosen_id, p.rejected_id, p.tie, p.reason) for p in found] == [
        (child, parent, False, "The question meant premium.")]

    # Export the preference as TRL DPO rows.
    page.get_by_role("tab", name="Export").click()
    page.get_by_label("trl-dpo", exact=True).check()
    page.locator("#export-count").get_by_text("match").wait_for(timeout=10_000)
    with zipfile.ZipFile(_download_export(page, tmp_path / "dpo.zip")) as archive:
        rows = [json.loads(line) for line in archive.read("data.jsonl").decode().splitlines()]
    mine = [row for row in rows if child in row["id"] and parent in row["id"]]
    assert mine and {"prompt", "chosen", "rejected", "images"} <= set(mine[0])
    assert "50 / 3.89" in json.dumps(mine[0]["chosen"]) and "50 / 3.49" in json.dumps(mine[0]["rejected"])
    assert not errors, errors
    page.close()
