"""The web app through its API: a real server on 127.0.0.1, driven by ``gradio_client``.

Runs an example end to end and checks the streamed updates arrive in order and the session is in
the store; bad input gets a clear message and the next run works; two clients never see each
other's run; the page stays responsive while a run streams.
"""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from taco_app.store import queries

from .conftest import ROOT
from .ui_server import (HOSTILE_LABEL, HOSTILE_QUESTION, chat_text, failing_record, hostile_example, running,
                        sql_error, submit_when_waiting)

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

FUEL = ROOT / "assets" / "examples" / "fuel_prices.png"
FUEL_REPLAY = "Replay example: fuel_prices"
QUESTION = "How much gas can I buy with $50?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    hostile = hostile_example(tmp_path_factory.mktemp("ui-scripts"), "http://127.0.0.1:9", FUEL)
    with running(tmp_path_factory.mktemp("ui-home"), [hostile]) as (url, studio):
        yield url, studio


def ask(client, images, question=QUESTION, model=FUEL_REPLAY, pause=False):
    """Submit a run; the list of streamed updates and the final outputs."""
    job = client.submit([handle_file(str(p)) for p in images], question, model, pause, api_name="/ask")
    updates = [update for update in job]
    return updates, job.result()


def test_an_example_runs_end_to_end_and_is_stored(server):
    url, studio = server
    client = Client(url, verbose=False)
    started = time.perf_counter()
    job = client.submit([handle_file(str(FUEL))], QUESTION, FUEL_REPLAY, False, api_name="/ask")
    updates = []
    for update in job:
        if not updates:
            first = time.perf_counter() - started
        updates.append(update)
    final = job.result()
    elapsed = time.perf_counter() - started
    chats = [chat_text(u[0]) for u in updates if u[0]]
    assert len(chats) >= 4, "the run streams several updates, not one at the end"
    # In order: the question first, then the steps as they happen, the answer last.
    assert "How much gas" in chats[0]
    first_ocr = next(i for i, c in enumerate(chats) if "OCR" in c)
    first_calc = next(i for i, c in enumerate(chats) if "Calculate" in c)
    first_answer = next(i for i, c in enumerate(chats) if "**Answer:**" in c)
    assert first_ocr < first_calc < first_answer
    assert "About 14.33 gallons of regular gas" in chat_text(final[0])
    info = final[5]
    session_id = info.split("`")[1]
    trace = queries.get_trace(studio.store, session_id)
    assert trace is not None and trace.session["status"] == "finished" and len(trace.steps) == 3
    assert [s["action_name"] for s in trace.steps] == ["OCR", "Calculate", "Terminate"]
    print(f"example run over the API: first update {first * 1000:.0f} ms after submit (upload included),"
          f" {len(updates)} updates in {elapsed:.2f} s")


@pytest.mark.parametrize("images,question,message", [
    ([], QUESTION, "Add at least one image"),
    (["text"], QUESTION, "not an image format"),
    (["huge"], QUESTION, "the limit is 64 megapixels"),
    (["ok"], "   ", "Type a question"),
    (["ok"], "why? " * 20_000, "the limit is 20,000: shorten it"),
])
def test_bad_input_gets_a_clear_message_and_the_next_run_works(server, tmp_path, images, question, message):
    url, _studio = server
    client = Client(url, verbose=False)
    files = {"text": tmp_path / "notes.png", "huge": tmp_path / "huge.png", "ok": FUEL}
    (tmp_path / "notes.png").write_text("not a picture at all")
    Image.new("1", (12000, 12000)).save(tmp_path / "huge.png")
    with pytest.raises(Exception, match=message):
        ask(client, [files[name] for name in images], question)
    _updates, final = ask(client, [FUEL])
    assert "About 14.33 gallons" in chat_text(final[0])


def test_unicode_and_markup_in_a_question_are_kept_as_text(server):
    url, studio = server
    question = "Combien d'essence pour 50 € ? 油价多少？ 🚗 <script>alert(1)</script> **bold** `code`"
    _updates, final = ask(Client(url, verbose=False), [FUEL], question)
    trace = queries.get_trace(studio.store, final[5].split("`")[1])
    assert trace.session["question"] == question  # stored exactly as typed
    shown = chat_text(final[0])
    assert "油价多少" in shown and "🚗" in shown and "<script>" not in shown and "&lt;script&gt;" in shown


def test_two_clients_never_see_each_others_run(server):
    url, studio = server
    results = {}

    def one(name, image, model, question):
        results[name] = ask(Client(url, verbose=False), [image], question, model)

    astronaut = ROOT / "assets" / "examples" / "astronaut.png"
    threads = [threading.Thread(target=one, args=("fuel", FUEL, FUEL_REPLAY, QUESTION)),
               threading.Thread(target=one, args=("faces", astronaut, "Replay example: astronaut", "How many faces?"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    fuel, faces = (chat_text(results[k][1][0]) for k in ("fuel", "faces"))
    assert "gallons" in fuel and "DetectFaces" not in fuel and "astronaut" not in fuel
    assert "One face" in faces and "gallons" not in faces and "OCR" not in faces
    for name in ("fuel", "faces"):
        for update in results[name][0]:
            text = chat_text(update[0]) if update[0] else ""
            assert ("gallons" in text) <= (name == "fuel") and ("One face" in text) <= (name == "faces")


CLIENTS, RESHOWS = 6, 25


def download_whole(http, url: str) -> tuple[int, int | None, str | None]:
    """``(bytes received, Content-Length, what went wrong)`` for one image URL, as a browser fetches it."""
    import io

    import httpx

    try:
        response = http.get(url)
    except httpx.HTTPError as err:  # e.g. the server closed the body short of its Content-Length
        return 0, None, f"{type(err).__name__}: {err}"
    declared = int(response.headers["content-length"]) if "content-length" in response.headers else None
    if response.status_code != 200:
        return len(response.content), declared, f"HTTP {response.status_code}"
    try:
        with Image.open(io.BytesIO(response.content)) as image:
            image.load()
    except Exception as err:  # a cut file does not decode
        return len(response.content), declared, f"not an image: {err}"
    return len(response.content), declared, None


@pytest.mark.parametrize("where", ["ask", "review"])
def test_many_clients_reshowing_one_overlay_always_get_whole_images(server, where):
    """Six tabs show the same step's overlay again and again (the Ask tab's step selector, or
    Review's step slider) and fetch each picture: every download is whole and decodes, and the
    server logs no error (an image file rewritten in place while being sent was cut short)."""
    import httpx

    from .ui_server import server_log

    url, _studio = server
    crop = ("I look closer.", "Crop", '{"image": "image-0", "bbox": [0.1, 0.1, 0.6, 0.6]}')
    stored = None
    if where == "review":  # one stored session, opened by every client
        client = Client(url, verbose=False)
        job = client.submit([handle_file(str(FUEL))], "Crop it", "Manual: write each step yourself", False,
                            api_name="/ask")
        submit_when_waiting(client, *crop)
        submit_when_waiting(client, "Done.", "Terminate", '{"answer": "cropped"}')
        stored = job.result()[5].split("`")[1]
    downloads: list[tuple[int, int | None, str | None]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            client = Client(url, verbose=False, download_files=False)  # the test fetches each URL itself
            job = None
            if where == "ask":  # a live run in this tab: a manual step that crops, then the overlay of step 1
                job = client.submit([handle_file(str(FUEL))], "Crop it", "Manual: write each step yourself", False,
                                    api_name="/ask")
                submit_when_waiting(client, *crop)
                deadline = time.monotonic() + 60
                while not any(isinstance(o[2], dict) and o[2].get("url") for o in job.outputs()) and time.monotonic() < deadline:
                    time.sleep(0.1)  # until the run has drawn step 1 (and offers it in the step selector)
            with httpx.Client(timeout=30) as http:
                for _ in range(RESHOWS):
                    if where == "ask":
                        picture = client.predict(1, api_name="/show_step")[0]
                    else:
                        picture = client.predict(stored, 1, api_name="/show_stored_step")[2]
                    assert picture is not None and picture.get("url"), picture
                    downloads.append(download_whole(http, picture["url"]))
            if job is not None:
                client.predict(api_name="/stop")
                job.result(timeout=60)
        except BaseException as err:  # reported below with the others
            errors.append(err)

    with server_log() as log:
        threads = [threading.Thread(target=one, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        time.sleep(0.5)  # the server logs a cut response after the client has seen it
    assert not errors, errors[:3]
    assert len(downloads) == CLIENTS * RESHOWS
    bad = [d for d in downloads if d[2] is not None or d[0] != d[1]]
    crashes = [line for line in log if "Exception in ASGI application" in line]
    assert not bad and not crashes, (f"{len(bad)} of {len(downloads)} downloads cut or broken, e.g. {bad[:2]};"
                                     f" {len(crashes)} server errors, e.g.\n{crashes[0][-1500:] if crashes else ''}")


def test_the_page_answers_while_a_run_streams(server):
    import urllib.request

    url, _studio = server
    client = Client(url, verbose=False)
    job = client.submit([handle_file(str(FUEL))], QUESTION, FUEL_REPLAY, False, api_name="/ask")
    latencies = []
    while not job.done():
        started = time.perf_counter()
        with urllib.request.urlopen(url + "config", timeout=10) as response:
            assert response.status == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    job.result()
    latencies.sort()
    print(f"page requests during a run: {len(latencies)}, median {latencies[len(latencies) // 2] * 1000:.0f} ms,"
          f" max {latencies[-1] * 1000:.0f} ms")
    assert latencies and latencies[-1] < 2.0


def test_pause_before_each_tool_lets_a_person_edit_the_action(server):
    """Review over the API: the run stops at each action; approving an edited one runs the edit."""
    url, studio = server
    client = Client(url, verbose=False)
    job = client.submit([handle_file(str(FUEL))], QUESTION, FUEL_REPLAY, True, api_name="/ask")
    # The ask endpoint's session is this client's; approvals go through the same client session.
    decisions = iter([("OCR", '{"image": "image-0"}'), ("Calculate", '{"expression": "40 / 3.49"}'),
                      ("Terminate", '{"answer": "About 11.46 gallons"}')])
    reviewed: set[str] = set()
    deadline = time.monotonic() + 240
    while not job.done() and time.monotonic() < deadline:
        # Through the API the panel's text is output 6 (layout groups are not outputs): "Step N: …".
        prompts = {o[6].split(":")[0] for o in job.outputs() if isinstance(o[6], str) and "proposes" in o[6]}
        for waiting in sorted(prompts - reviewed):
            reviewed.add(waiting)
            name, arguments = next(decisions)
            client.predict(name, arguments, api_name="/approve_action")
        time.sleep(0.1)
    final = job.result()
    assert "About 11.46 gallons" in chat_text(final[0]) and reviewed == {"**Step 1", "**Step 2", "**Step 3"}
    session_id = final[5].split("`")[1]
    trace = queries.get_trace(studio.store, session_id)
    assert trace.steps[1]["action"] == {"name": "Calculate", "arguments": {"expression": "40 / 3.49"}}
    assert "11.46" in trace.steps[1]["observation"] and 2 in trace.corrected_steps  # the edit is on record



def test_manual_mode_over_the_api(server):
    """A person writes each step; the tools run; the trace is stored like any other."""
    url, studio = server
    client = Client(url, verbose=False)
    job = client.submit([handle_file(str(FUEL))], "What is 6 times 7?", "Manual: write each step yourself", False,
                        api_name="/ask")
    steps = [("I can compute it.", "Calculate", '{"expression": "6*7"}'), ("It is 42.", "Terminate", '{"answer": "42"}')]
    with pytest.raises(Exception, match="Calculator is not in the list"):  # a typo is refused, with the actions
        submit_when_waiting(client, "x", "Calculator", "{}")
    for step in steps:
        submit_when_waiting(client, *step)
    final = job.result()
    assert "**Answer:** 42" in chat_text(final[0])
    trace = queries.get_trace(studio.store, final[5].split("`")[1])
    assert trace.session["backend"] == "manual" and "{'result': 42}" in trace.steps[0]["observation"]


def test_the_local_model_loads_with_progress_and_runs(tmp_path_factory):
    """The "TACO model (local)" choice on a tiny checkpoint: progress while loading, then streamed steps."""
    from taco_app.backends.transformers.loading import LoadOptions
    from taco_app.backends.transformers.backend import TransformersBackend
    from taco_app.store.db import Store
    from taco_app.ui.studio import LOCAL, Studio

    from .tiny import mantis
    from .ui_server import free_port

    checkpoint = mantis.build(tmp_path_factory.mktemp("ui-mantis"))
    home = tmp_path_factory.mktemp("ui-local-home")
    import os

    os.environ["TACO_HOME"] = str(home)
    local = TransformersBackend(LoadOptions(model_id=str(checkpoint), device="cpu", max_new_tokens=8))
    studio = Studio(Store.open(), local=local, warm=False)  # no tool models loaded in the background
    from taco_app.ui.app import serve, stop

    port = free_port()
    app = serve("127.0.0.1", port, block=False, studio=studio)
    try:
        assert studio.choices()[0] == LOCAL and studio.banner() == ""
        updates, final = ask(Client(f"http://127.0.0.1:{port}/", verbose=False), [FUEL], model=LOCAL)
        infos = [u[5] for u in updates if isinstance(u[5], str)]
        assert any(i.startswith("Loading the model:") for i in infos)
        assert "max_steps" in final[5] and "Step 11" in chat_text(final[0])  # garbage text, handled to the end
        assert local.status.state == "ready" and "on cpu (none, float32)" in studio.status_line()
    finally:
        stop(app)


def test_the_app_answers_http_within_seconds_of_starting(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from .ui_server import free_port

    port = free_port()
    env = {**__import__("os").environ, "TACO_HOME": str(tmp_path)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - started < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"app start to first HTTP 200: {elapsed:.2f} s")
    assert elapsed < 30, "the app did not answer"


def test_stop_ends_a_waiting_run_as_cancelled(server):
    url, studio = server
    client = Client(url, verbose=False)
    job = client.submit([handle_file(str(FUEL))], "Wait for me", "Manual: write each step yourself", False, api_name="/ask")
    while not any(isinstance(o[0], list) and o[0] for o in job.outputs()):
        time.sleep(0.05)
    started = time.perf_counter()
    client.predict(api_name="/stop")
    final = job.result()
    assert time.perf_counter() - started < 5 and "cancelled" in final[5]
    assert queries.get_trace(studio.store, final[5].split("`")[1]).session["status"] == "cancelled"


def test_review_feedback_is_validated_and_saved(server):
    url, studio = server
    client = Client(url, verbose=False)
    _updates, final = ask(client, [FUEL])
    session_id = final[5].split("`")[1]
    with pytest.raises(Exception, match="Step 2 was not saved"):
        client.predict(session_id, 2, '{"thought": "x", "actions": [{"name": "Calculator"}]}', api_name="/fix_step")
    client.predict(session_id, 2, '{"thought": "Premium.", "actions": [{"name": "Calculate", "arguments":'
                   ' {"expression": "50 / 3.89"}}]}', api_name="/fix_step")
    client.predict(session_id, 3, "About 12.85 gallons of premium", api_name="/fix_answer")
    summary = client.predict(session_id, 3, "premium was meant", api_name="/keep_note")
    assert "Corrected answer:** About 12.85 gallons of premium" in summary and "premium was meant" in summary
    trace = queries.get_trace(studio.store, session_id)
    assert trace.corrected_steps[2]["actions"][0]["arguments"]["expression"] == "50 / 3.89"
    assert trace.corrected_answer == "About 12.85 gallons of premium"
    rows, total = client.predict("gallons", "finished", "any", "", 1, "", api_name="/search_sessions")
    assert session_id in str(rows) and "session(s)" in total


def test_login_is_required_when_auth_is_set(tmp_path):
    import urllib.error
    import urllib.request

    import httpx

    from taco_app.store.db import Store
    from taco_app.ui.app import parse_auth, serve, stop
    from taco_app.ui.studio import Studio

    from .ui_server import free_port

    assert parse_auth("ana:secret") == ("ana", "secret")
    with pytest.raises(ValueError, match="user:password"):
        parse_auth("no-colon")
    port = free_port()
    app = serve("127.0.0.1", port, block=False, auth="ana:secret", studio=Studio(Store.open(), probe=False, warm=False))
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10)
        assert refused.value.code in (401, 403)
        client = Client(f"http://127.0.0.1:{port}/", auth=("ana", "secret"), verbose=False)
        assert client.predict(api_name="/doctor_table")["data"]
        # Gradio's own cancel route (a tab's running event, by its session hash) needs the login too.
        cancel = f"http://127.0.0.1:{port}/gradio_api/cancel"
        body = {"session_hash": "x", "fn_index": 0, "event_id": "x"}
        assert httpx.post(cancel, json=body, timeout=10).status_code == 401
        assert httpx.post(cancel, json=body, cookies=client.cookies, timeout=10).status_code == 200
    finally:
        stop(app)


# --- what a failure shows ------------------------------------------------------------------------


def failure(call) -> str:
    """The message a failing call shows the person (the toast's text, as the client receives it)."""
    with pytest.raises(Exception) as raised:
        call()
    return str(getattr(raised.value, "message", raised.value))


def test_a_failing_handler_shows_a_plain_sentence_never_sql_or_markup(server, monkeypatch, caplog):
    """The database fails while storing a reply that carries an <img> pixel and an <a> link: the
    person reads one sentence pointing to the log; the log has the traceback, SQL and all."""
    url, studio = server
    monkeypatch.setattr(studio.store, "record", failing_record(studio.store, sql_error))
    client = Client(url, verbose=False)
    with caplog.at_level("ERROR", logger="taco_app.ui"):
        shown = failure(lambda: ask(client, [FUEL], HOSTILE_QUESTION, HOSTILE_LABEL))
    assert "Something went wrong" in shown and "server log" in shown
    assert "<" not in shown and "INSERT" not in shown and "re-login" not in shown and "Traceback" not in shown
    reference = shown.split("reference ")[1].split(")")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info and "INSERT INTO steps" in str(logged[0].exc_info[1])
    monkeypatch.undo()
    assert "About 14.33 gallons" in chat_text(ask(client, [FUEL])[1][0])  # the next run is fine


def test_a_database_failure_shows_its_own_message_as_text(server, monkeypatch):
    """A StoreError's message is shown (it says what to do); any markup in it is text, not HTML."""
    from taco_app.store import StoreError

    url, studio = server

    def locked(raw):
        return StoreError(f"The database is busy: try again in a moment. {raw}")

    monkeypatch.setattr(studio.store, "record", failing_record(studio.store, locked))
    shown = failure(lambda: ask(Client(url, verbose=False), [FUEL], HOSTILE_QUESTION, HOSTILE_LABEL))
    assert shown.startswith("The database is busy: try again in a moment.")
    assert "<img" not in shown and "<a " not in shown and "&lt;img src=http://127.0.0.1:9/pixel&gt;" in shown


@pytest.mark.parametrize("text,page,message", [
    ("gas", 1e20, "Page must be a whole number from 1 to 1,000,000"),
    ("x" * 1_000_000, 1, "The search text is 1,000,000 characters long; the limit is 1,000"),
    ("gas", 1, None),
])
def test_review_search_refuses_a_huge_page_or_query_with_a_plain_message(server, text, page, message):
    url, _studio = server
    client = Client(url, verbose=False)
    search = lambda: client.predict(text, "any", "any", "", page, "", api_name="/search_sessions")  # noqa: E731
    if message is None:
        assert "session(s)" in search()[1]
        return
    shown = failure(search)
    assert message in shown
    for internal in ("SELECT", "sqlite", "OFFSET", "LIKE", "Traceback", "<"):
        assert internal not in shown


def test_no_chat_typesets_latex(server):
    """ "$$" in a tool's output (a code block) or a reply is text: both chats have LaTeX off."""
    url, _studio = server
    components = Client(url, verbose=False).config["components"]
    chats = [c["props"] for c in components if c.get("type") == "chatbot"]
    assert len(chats) == 2 and all(props.get("latex_delimiters") == [] for props in chats)


def test_a_run_belongs_to_the_login_the_address_and_the_tab():
    from types import SimpleNamespace as Request

    from taco_app.ui.live import Registry, owner

    def request(user, host, tab):
        return Request(username=user, client=Request(host=host), session_hash=tab)

    registry = Registry()
    run = registry.start(owner(request("ana", "10.0.0.1", "tab")))
    assert registry.get(owner(request("ana", "10.0.0.1", "tab"))) is run
    for other in (request("bob", "10.0.0.1", "tab"), request(None, "10.0.0.1", "tab"),
                  request("ana", "10.0.0.2", "tab"), request("ana", "10.0.0.1", "other-tab")):
        assert registry.get(owner(other)) is None
        registry.forget(owner(other))  # e.g. that tab closing
    assert not run.cancel.is_set()


def test_another_login_cannot_drive_a_run_with_its_session_hash(tmp_path):
    """Gradio's session hash is sent by the browser; a second user who sends the first user's hash
    reaches no run of theirs: Submit step is refused, Stop stops nothing, the first run goes on."""
    import httpx

    from taco_app.store.db import Store
    from taco_app.ui.app import serve, stop
    from taco_app.ui.studio import MANUAL, Studio

    from .ui_server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = serve("127.0.0.1", port, block=False, auth=[("ana", "ana-secret"), ("bob", "bob-secret")],
                studio=Studio(Store.open(), probe=False, warm=False))
    try:
        ana = Client(url, auth=("ana", "ana-secret"), verbose=False)
        bob = Client(url, auth=("bob", "bob-secret"), verbose=False)
        job = ana.submit([handle_file(str(FUEL))], "What is 6 times 7?", MANUAL, False, api_name="/ask")
        while not any(isinstance(o[0], list) and o[0] for o in job.outputs()):
            time.sleep(0.05)

        def as_bob_in_anas_tab(api_name, *data):
            """Bob's request (his login) naming Ana's session hash; its outcome reaches Ana's event stream."""
            fn = next(d["id"] for d in bob.config["dependencies"] if d.get("api_name") == api_name)
            joined = httpx.post(url + "gradio_api/queue/join", cookies=bob.cookies, timeout=10,
                                json={"data": list(data), "fn_index": fn, "session_hash": ana.session_hash})
            joined.raise_for_status()
            event_id = joined.json()["event_id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = [m for m in ana.pending_messages_per_event.get(event_id, ()) if m["msg"] == "process_completed"]
                if done:
                    return done[0]
                time.sleep(0.05)
            raise TimeoutError(f"{api_name} did not finish")

        hijack = as_bob_in_anas_tab("submit_step", "Bob was here.", "Terminate", '{"answer": "bob"}')
        assert hijack["success"] is False and "No manual session is waiting" in str(hijack["output"])
        assert as_bob_in_anas_tab("stop")["success"]  # it ran, and found no run of Bob's to stop
        submit_when_waiting(ana, "It is 42.", "Terminate", '{"answer": "42"}')  # Ana's run still waits for her
        final = job.result()
        shown = chat_text(final[0])
        assert "· finished ·" in final[5] and "**Answer:** 42" in shown and "bob" not in shown
    finally:
        stop(app)
