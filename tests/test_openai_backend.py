"""The openai backend against a real HTTP server on 127.0.0.1 that fakes an OpenAI-compatible API.

The fake streams server-sent events chunk by chunk, as vLLM does, and records every request, so the
tests check both sides: what the backend sent (TACO's prompt, images in place) and what it made of
replies that end well, end early, or never come.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from taco_app.cota.backend import BackendError
from taco_app.backends.openai import CHAT_TEMPLATES, OpenAIBackend, encode_image
from taco_app.cota import events as ev
from taco_app.settings import SettingsError
from taco_app.cota.prompt import IMAGE_TOKEN, LLAMA3_SYSTEM, Prompt, build_prompt, observation_turn, user_request
from taco_app.store import queries
from taco_app.store.db import Store

from .conftest import of_kind, run_loop

KEY = "sk-test-SECRET-0123456789"
CALC = '{"thought": "I add the two numbers.", "actions": [{"name": "Calculate", "arguments": {"expression": "2+2"}}]}'
DONE = '{"thought": "The sum is 4.", "actions": [{"name": "Terminate", "arguments": {"answer": "4"}}]}'


class FakeOpenAI:
    """Plays one scripted reply per POST to /v1/chat/completions and records what it was sent."""

    def __init__(self):
        self.script: queue.Queue = queue.Queue()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.stop = threading.Event()
        self.disconnected = threading.Event()  # a client went away while we were streaming
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.headers.append(dict(self.headers))
                fake.requests.append(json.loads(body))
                self.close_connection = True
                if self.path != "/v1/chat/completions":
                    return self.error(404, {"detail": "Not Found"})
                try:
                    play = fake.script.get_nowait()
                except queue.Empty:
                    return self.error(500, "no scripted reply left")
                try:
                    play(self)
                except (BrokenPipeError, ConnectionResetError):
                    fake.disconnected.set()

            def error(self, status, body):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def start_events(self, chunked=True):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
                self.end_headers()
                self.chunked = chunked

            def send(self, data: str):
                raw = data.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw) if self.chunked else raw)
                self.wfile.flush()  # one write per event, so the client sees each as it comes

            def end(self):
                if self.chunked:
                    self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    # --- scripted replies -----------------------------------------------------------------------

    def reply(self, text, usage=None, size=7, chunked=True):
        """A normal streamed reply: ``size``-character deltas, finish_reason, usage, [DONE]."""
        def play(h):
            h.start_events(chunked)
            h.send(event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}))
            for i in range(0, len(text), size):
                h.send(event(delta(text[i:i + size])))
            h.send(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            if usage:
                h.send(event({"choices": [], "usage": usage}))
            h.send("data: [DONE]\n\n")
            h.end()
        self.script.put(play)

    def drop(self, text, size=5, chunked=True):
        """Stream ``text`` then close the socket: no finish_reason, no [DONE], no last chunk."""
        def play(h):
            h.start_events(chunked)
            for i in range(0, len(text), size):
                h.send(event(delta(text[i:i + size])))
        self.script.put(play)

    def raw(self, *events, status=200, content_type="text/event-stream"):
        def play(h):
            data = "".join(events).encode()
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        self.script.put(play)

    def error(self, status, body):
        self.script.put(lambda h: h.error(status, body))

    def hang(self, seconds):
        self.script.put(lambda h: self.stop.wait(seconds))

    def slow(self, seconds, every=0.05, chunked=True):
        """A long reply, one chunk every ``every`` seconds, until the client goes away."""
        def play(h):
            h.start_events(chunked)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.stop.is_set():
                h.send(event(delta("word ")))
                time.sleep(every)
            h.end()
        self.script.put(play)


def event(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def delta(text) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


@pytest.fixture
def fake():
    server = FakeOpenAI()
    server.thread.start()
    yield server
    server.stop.set()
    server.server.shutdown()
    server.server.server_close()
    server.thread.join(timeout=2)


@pytest.fixture
def photo():
    return Image.new("RGB", (64, 48), "teal")


def backend(fake, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("api_key", KEY)
    return OpenAIBackend(fake.url, "taco-test", **kwargs)


def one_image_prompt(question="What is in the image?") -> Prompt:
    return build_prompt([user_request(question, ["image-0"])], "mantis")


def session(fake, photo, store=None, **kwargs):
    events = run_loop("What is 2+2?", [photo], backend(fake, **kwargs))
    return list(store.record(events) if store else events)


def decode(url: str) -> Image.Image:
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    raw = base64.b64decode(data, validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(raw))


# --- a whole session ------------------------------------------------------------------------------


def test_session_through_the_agent_loop(fake, photo):
    fake.reply(CALC, usage={"prompt_tokens": 1234, "completion_tokens": 30, "total_tokens": 1264})
    fake.reply(DONE, usage={"prompt_tokens": 1300, "completion_tokens": 20,
                            "prompt_tokens_details": {"cached_tokens": 1200}})
    events = session(fake, photo)

    final = events[-1]
    assert isinstance(final, ev.Finished) and final.status == "finished" and final.answer == "4"
    started = events[0]
    assert (started.backend, started.model, started.family) == ("openai", "taco-test", "mantis")
    deltas = [e.text for e in of_kind(events, ev.ThoughtDelta) if e.step == 1]
    assert len(deltas) > 1 and "".join(deltas) == CALC
    parsed = of_kind(events, ev.ActionParsed)
    assert parsed[0].usage == {"prompt_tokens": 1234, "output_tokens": 30, "cached_tokens": 0}
    assert parsed[1].usage == {"prompt_tokens": 1300, "output_tokens": 20, "cached_tokens": 1200}

    first, second = fake.requests
    assert first["model"] == "taco-test" and first["temperature"] == 0 and first["stream"] is True
    assert first["stream_options"] == {"include_usage": True} and first["max_tokens"] == 2000
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    system, user = first["messages"]
    assert system == {"role": "system", "content": LLAMA3_SYSTEM}
    assert user["role"] == "user"
    types = [part["type"] for part in user["content"]]
    assert types == ["text", "image_url", "text"]  # the image sits where TACO's prompt has it
    rebuilt = "".join(p["text"] if p["type"] == "text" else IMAGE_TOKEN for p in user["content"])
    assert rebuilt == one_image_prompt("What is 2+2?").user
    sent = decode(user["content"][1]["image_url"]["url"])
    assert sent.size == (64, 48) and sent.convert("RGB").getpixel((3, 3)) == photo.getpixel((3, 3))

    text = "".join(p.get("text", "") for p in second["messages"][1]["content"])
    assert "###Assistant: " + CALC in text
    observation = of_kind(events, ev.Observation)[0].observation
    assert observation.startswith("OBSERVATION:") and "###Human: " + observation in text  # fed back


@pytest.mark.store
def test_session_is_logged_as_finished(fake, photo):
    fake.reply(CALC, usage={"prompt_tokens": 900, "completion_tokens": 30})
    fake.reply(DONE)
    store = Store.open()
    events = session(fake, photo, store)
    trace = queries.get_trace(store, events[-1].session_id)
    assert trace.session["status"] == "finished" and trace.session["answer"] == "4"
    assert (trace.session["backend"], trace.session["model"]) == ("openai", "taco-test")
    assert [s["action_name"] for s in trace.steps] == ["Calculate", "Terminate"]
    assert trace.steps[0]["prompt_tokens"] == 900 and trace.steps[0]["output_tokens"] == 30


@pytest.mark.store
def test_dropped_connection_fails_the_session_and_the_app_goes_on(fake, photo):
    fake.drop(CALC[:30])
    fake.reply(CALC)
    fake.reply(DONE)
    store = Store.open()
    broken = session(fake, photo, store)
    errors = of_kind(broken, ev.Error)
    assert len(errors) == 1 and errors[0].code == "backend"
    assert "closed the connection mid-reply after 30 characters" in errors[0].message
    assert broken[-1].status == "failed"
    assert queries.get_trace(store, broken[-1].session_id).session["status"] == "failed"

    healthy = session(fake, photo, store)
    assert healthy[-1].status == "finished" and healthy[-1].answer == "4"
    assert queries.get_trace(store, healthy[-1].session_id).session["status"] == "finished"


# --- the stream -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_stream_yields_deltas_then_usage(fake, photo, chunked):
    fake.reply("hello world", usage={"prompt_tokens": 5, "completion_tokens": 2}, size=3, chunked=chunked)
    chunks = list(backend(fake).stream(one_image_prompt(), [photo]))
    assert chunks == ["hel", "lo ", "wor", "ld", ev.Usage(5, 2)]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_stream_dropped_mid_reply(fake, photo, chunked):
    fake.drop("x" * 12, size=4, chunked=chunked)
    stream = backend(fake).stream(one_image_prompt(), [photo])
    assert [next(stream) for _ in range(3)] == ["xxxx"] * 3  # what came before the drop streamed as it came
    with pytest.raises(BackendError, match="mid-reply after 12 characters"):
        next(stream)


def test_finish_reason_ends_the_reply_without_done(fake, photo):
    fake.raw(event(delta("ok")), event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    assert list(backend(fake).stream(one_image_prompt(), [photo])) == ["ok"]


def test_sse_comments_and_last_event_without_blank_line(fake, photo):
    fake.raw(": keep-alive\n\n", "data:" + json.dumps(delta("a")) + "\n\n", event(delta("b")), "data: [DONE]")
    assert list(backend(fake).stream(one_image_prompt(), [photo])) == ["a", "b"]


def test_a_server_that_ignores_stream_still_works(fake, photo):
    reply = {"choices": [{"message": {"role": "assistant", "content": DONE}}], "usage": {"prompt_tokens": 7,
                                                                                       "completion_tokens": 3}}
    fake.raw(json.dumps(reply), content_type="application/json")
    assert list(backend(fake).stream(one_image_prompt(), [photo])) == [DONE, ev.Usage(7, 3)]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_closing_the_stream_early_closes_the_connection(fake, photo, chunked):
    fake.slow(seconds=5, chunked=chunked)
    stream = backend(fake).stream(one_image_prompt(), [photo])
    assert next(stream) == "word "
    t0 = time.perf_counter()
    stream.close()
    assert time.perf_counter() - t0 < 1.0
    assert fake.disconnected.wait(2.0), "the server kept streaming to a client that had gone"


def test_generate_text(fake):
    fake.reply("Paris.", usage={"prompt_tokens": 3, "completion_tokens": 2})
    assert backend(fake, family="qwen2").generate_text("What is the capital of France?") == "Paris."
    system, user = fake.requests[0]["messages"]
    assert system["content"] == "You are a helpful assistant."
    assert user == {"role": "user", "content": "What is the capital of France?"}


# --- errors ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failure(fake, photo, **kwargs) -> str:
    with pytest.raises(BackendError) as caught:
        list(backend(fake, **kwargs).stream(one_image_prompt(), [photo]))
    message = str(caught.value)
    assert KEY not in message
    return message


def test_connection_refused(photo):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError) as caught:
        list(OpenAIBackend(url, "taco-test", api_key=KEY).stream(one_image_prompt(), [photo]))
    message = str(caught.value)
    assert f"cannot reach the OpenAI-compatible server at {url}" in message
    assert "Is it running?" in message and "vLLM" in message and KEY not in message


@pytest.mark.parametrize("status, body, expected", [
    (401, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}},
     ["refused the request (HTTP 401: Incorrect API key provided: ***)", "TACO_OPENAI_API_KEY"]),
    (403, "Forbidden", ["HTTP 403: Forbidden", "OPENAI_API_KEY"]),
    (404, {"object": "error", "message": "The model `taco-test` does not exist.", "type": "NotFoundError", "code": 404},
     ["HTTP 404: The model `taco-test` does not exist.", "--base-url", "--api-model 'taco-test'", "/v1/models"]),
    (400, {"object": "error", "message": "x" * 1000}, ["the server rejected the request", "HTTP 400: xxx"]),
    (500, "Internal Server Error", ["the server failed; see its log", "HTTP 500: Internal Server Error"]),
])
def test_http_errors(fake, photo, status, body, expected):
    fake.error(status, body)
    message = failure(fake, photo)
    for part in expected:
        assert part in message
    assert len(message) < 700  # a long error body is cut short


def test_wrong_base_url_path(fake, photo):
    with pytest.raises(BackendError, match="HTTP 404: Not Found.*--base-url"):
        list(OpenAIBackend(fake.url.removesuffix("/v1"), "taco-test").stream(one_image_prompt(), [photo]))


def test_missing_key_says_which_variable_to_set(fake, photo, monkeypatch):
    monkeypatch.delenv("TACO_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.error(401, {"error": {"message": "missing key"}})
    with pytest.raises(BackendError, match="set TACO_OPENAI_API_KEY"):
        list(OpenAIBackend(fake.url, "taco-test").stream(one_image_prompt(), [photo]))
    assert "Authorization" not in fake.headers[0]


def test_key_from_environment(fake, photo, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generic-key")
    monkeypatch.setenv("TACO_OPENAI_API_KEY", "sk-taco-key")
    fake.reply("ok")
    list(OpenAIBackend(fake.url, "taco-test").stream(one_image_prompt(), [photo]))
    assert fake.headers[0]["Authorization"] == "Bearer sk-taco-key"


@pytest.mark.parametrize("events, expected", [
    (["data: {not json\n\n"], "not valid JSON: '{not json'"),
    ([event(delta("a")), event({"error": {"message": "CUDA out of memory", "code": 500}})],
     "error mid-reply: CUDA out of memory"),
])
def test_bad_events(fake, photo, events, expected):
    fake.raw(*events)
    assert expected in failure(fake, photo)


def test_not_an_event_stream(fake, photo):
    fake.raw("<html>hello</html>", content_type="text/html")
    assert "answered with text/html, not an event stream" in failure(fake, photo)


def test_timeout(fake, photo):
    fake.hang(3)
    t0 = time.perf_counter()
    message = failure(fake, photo, timeout=0.5)
    assert time.perf_counter() - t0 < 2
    assert "no reply from" in message and "within 0.5 s" in message


def test_abort_cuts_a_request_the_server_holds(fake, photo):
    """A stopped eval run cuts the replies a busy server has not begun, instead of waiting for its timeout."""
    fake.hang(30)
    client = backend(fake, timeout=30)
    outcome = []

    def ask():
        try:
            list(client.stream(one_image_prompt(), [photo]))
        except BackendError as err:
            outcome.append(str(err))

    asking = threading.Thread(target=ask)
    asking.start()
    while not client._in_flight and asking.is_alive():  # the request is on its way
        time.sleep(0.01)
    client.abort()
    asking.join(5)
    assert not asking.is_alive() and len(outcome) == 1, outcome
    assert "failed before any reply" in outcome[0]
    assert not client._in_flight
    client.abort()  # nothing in flight: nothing to do


def stall(fake, finish: bool) -> None:
    """One delta (and the finish_reason chunk if ``finish``), then silence with the socket open."""
    def play(h):
        h.start_events()
        h.send(event(delta("ok")))
        if finish:
            h.send(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        fake.stop.wait(3)
    fake.script.put(play)


def test_silence_mid_reply_times_out(fake, photo):
    stall(fake, finish=False)
    assert "within 0.3 s while waiting for the next chunk (after 2 characters)" in failure(fake, photo, timeout=0.3)


def test_silence_after_finish_reason_ends_the_reply(fake, photo):
    stall(fake, finish=True)
    t0 = time.perf_counter()
    assert list(backend(fake, timeout=0.3).stream(one_image_prompt(), [photo])) == ["ok"]
    assert time.perf_counter() - t0 < 1.5


def test_placeholder_count_must_match_images(fake, photo):
    two = build_prompt([user_request("Compare them", ["image-0", "image-1"])], "mantis")
    with pytest.raises(BackendError, match="2 <image> placeholders but 1 images"):
        backend(fake).stream(two, [photo])
    assert fake.requests == []


def test_bad_settings():
    with pytest.raises(BackendError, match="http"):
        OpenAIBackend("127.0.0.1:8000/v1", "m")
    with pytest.raises(BackendError, match="family"):
        OpenAIBackend("http://127.0.0.1:8000/v1", "m", family="llava")
    assert OpenAIBackend("http://h:1/v1/chat/completions/", "m").base_url == "http://h:1/v1"
    with pytest.raises(BackendError, match="API key") as caught:
        OpenAIBackend("http://h:1/v1", "m", api_key="sk-bad\nkey")
    assert "sk-bad" not in str(caught.value)


def test_from_options_and_environment(fake, photo, monkeypatch):
    class Options:  # the command line's choices, as create_backend passes them
        base_url, api_model, family, max_new_tokens = fake.url, None, "qwen2", 300

    for name in ("TACO_OPENAI_BASE_URL", "TACO_OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BackendError, match="needs --api-model .*TACO_OPENAI_MODEL"):
        OpenAIBackend.from_options(Options)
    monkeypatch.setenv("TACO_OPENAI_MODEL", "taco-env")
    monkeypatch.setenv("TACO_OPENAI_TIMEOUT", "7.5")
    monkeypatch.setenv("TACO_OPENAI_EXTRA_BODY", '{"stop_token_ids": [128009], "temperature": 1}')
    made = OpenAIBackend.from_options(Options)
    assert (made.model_id, made.family, made.max_tokens, made.timeout) == ("taco-env", "qwen2", 300, 7.5)
    fake.reply("ok")
    list(made.stream(one_image_prompt(), [photo]))
    sent = fake.requests[0]
    assert sent["stop_token_ids"] == [128009] and sent["temperature"] == 0  # greedy whatever the extras say
    Options.base_url = None
    with pytest.raises(BackendError, match="needs --base-url .*TACO_OPENAI_BASE_URL"):
        OpenAIBackend.from_options(Options)
    monkeypatch.setenv("TACO_OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("TACO_OPENAI_EXTRA_BODY", "[1]")  # a bad setting: named, with its value
    with pytest.raises(SettingsError, match=r"TACO_OPENAI_EXTRA_BODY must be a JSON object.*got '\[1\]'"):
        OpenAIBackend.from_options(Options)


# --- images and the server-side template -------------------------------------------------------------


def test_images_are_rgb_png_and_huge_photos_jpeg(monkeypatch):
    assert decode(encode_image(Image.new("CMYK", (4, 4)))).mode == "RGB"
    monkeypatch.setattr("taco_app.backends.openai.MAX_PNG_BYTES", 10)
    assert encode_image(Image.new("RGB", (32, 32), "red")).startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("family", ["mantis", "qwen2"])
def test_chat_templates_rebuild_the_exact_prompt(family, photo):
    """Rendered as vLLM does (``openai`` content format: images become ``{"type": "image"}``)."""
    jinja2 = pytest.importorskip("jinja2.sandbox")
    turns = [user_request("q", ["image-0"]), observation_turn({"result": 4}), user_request("again", ["image-1"])]
    prompt = build_prompt(turns, family)
    sent = []

    class Capture(OpenAIBackend):
        def _chat(self, messages):
            sent.extend(messages)
            return iter(())

    list(Capture("http://127.0.0.1:1/v1", "m", family=family).stream(prompt, [photo, photo]))
    messages = [{**m, "content": m["content"] if isinstance(m["content"], str) else [
        p if p["type"] == "text" else {"type": "image"} for p in m["content"]]} for m in sent]
    env = jinja2.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    bos = "<|begin_of_text|>" if family == "mantis" else ""
    rendered = env.from_string(CHAT_TEMPLATES[family]).render(messages=messages, add_generation_prompt=True,
                                                              bos_token=bos)
    # The Qwen2 harness followed every image with a newline token (see taco-reference/README.md).
    expected = prompt.text if family == "mantis" else prompt.text.replace(IMAGE_TOKEN, IMAGE_TOKEN + "\n")
    assert rendered == bos + expected
