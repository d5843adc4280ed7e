"""QueryKnowledgeBase against a fake Wikipedia on 127.0.0.1: TACO's observation, the deadline,
no network, HTTP errors, no article. Nothing here leaves the machine (conftest blocks it)."""

from __future__ import annotations

import ast
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from taco_app.cota import events as ev
from taco_app.tools import default_tools
from taco_app.tools.knowledge import (
    MAX_CHARS,
    KnowledgeBaseError,
    KnowledgeBaseUnreachable,
    NoArticleFound,
    QueryKnowledgeBase,
    look_up,
)
from taco_app.settings import SettingsError
from tests.conftest import of_kind, run_session

LEICA = "Leica Camera AG () is a German company that manufactures cameras, optical lenses, photographic lenses, binoculars, and rifle scopes."

Reply = tuple[int, Any]  # HTTP status, JSON-able body (bytes are sent as they are)


def search_reply(title: str | None, suggestion: str | None = None) -> dict[str, Any]:
    """``list=search`` as Wikipedia answers it with formatversion=2."""
    info: dict[str, Any] = {"totalhits": 1 if title else 0}
    if suggestion:
        info["suggestion"] = suggestion
    hits = [{"ns": 0, "title": title, "pageid": 1418361}] if title else []
    return {"batchcomplete": True, "continue": {"sroffset": 1, "continue": "-||"}, "query": {"searchinfo": info, "search": hits}}


def extract_reply(title: str, extract: str, url: str | None = None, disambiguation: bool = False) -> dict[str, Any]:
    """``prop=extracts|info|pageprops`` as Wikipedia answers it with formatversion=2."""
    page: dict[str, Any] = {
        "pageid": 1418361, "ns": 0, "title": title, "extract": extract, "contentmodel": "wikitext",
        "fullurl": url or "https://en.wikipedia.org/wiki/" + title.replace(" ", "_"),
    }
    if disambiguation:
        page["pageprops"] = {"disambiguation": ""}
    return {"batchcomplete": True, "query": {"pages": [page]}}


class FakeWikipedia:
    """``/w/api.php`` answered by ``answer(params) -> (status, body)``; requests are recorded."""

    def __init__(self, answer: Callable[[dict[str, str]], Reply], delay: float = 0.0):
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                fake.requests.append((params, dict(self.headers)))
                if delay:
                    fake.release.wait(delay)  # set at teardown, so the server stops at once
                status, body = answer(params)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wikipedia(monkeypatch):
    servers: list[FakeWikipedia] = []

    def start(answer: Callable[[dict[str, str]], Reply], delay: float = 0.0) -> FakeWikipedia:
        server = FakeWikipedia(answer, delay)
        servers.append(server)
        monkeypatch.setenv("TACO_WIKIPEDIA_URL", server.url)
        return server

    yield start
    for server in servers:
        server.close()


def encyclopedia(pages: dict[str, dict[str, Any]], search: dict[str, str | None]) -> Callable[[dict[str, str]], Reply]:
    """A fake that maps search queries to titles, and titles to extract replies."""

    def answer(params: dict[str, str]) -> Reply:
        if params.get("list") == "search":
            return 200, search_reply(search.get(params["srsearch"]))
        return 200, pages[params["titles"]]

    return answer


def test_search_then_introduction(wikipedia):
    fake = wikipedia(encyclopedia({"Leica Camera": extract_reply("Leica Camera", LEICA)}, {"Leica products": "Leica Camera"}))
    result = look_up("Leica products")
    assert result == {"summary": LEICA, "title": "Leica Camera", "url": "https://en.wikipedia.org/wiki/Leica_Camera"}
    assert list(result) == ["summary", "title", "url"]  # TACO's keys, TACO's order
    (search, headers), (extract, _) = fake.requests
    assert search["srsearch"] == "Leica products" and search["srlimit"] == "1"
    assert extract["titles"] == "Leica Camera" and extract["exintro"] == "1" and extract["explaintext"] == "1"
    assert "TACO Studio" in headers["User-Agent"]


@pytest.mark.parametrize("trace", ["TACO-Qwen2-SigLIP-75.json", "TACO-Qwen2-SigLIP-200.json"])
def test_observation_is_tacos_text(reference, wikipedia, trace):
    """Served the article TACO got, the tool's turn is the recorded turn, character for character."""
    messages = json.loads((reference / "traces" / trace).read_text())["messages"]
    reply = messages[1]["content"][0]["text"]
    recorded = messages[2]["content"][0]["text"]
    observed = ast.literal_eval(recorded.removeprefix("OBSERVATION:\n").split("\nThe OBSERVATION")[0])
    query = json.loads(reply)["actions"][0]["arguments"]["query"]
    wikipedia(encyclopedia({observed["title"]: extract_reply(observed["title"], observed["summary"], observed["url"])},
                           {query: observed["title"]}))
    terminate = json.dumps({"thought": "done", "actions": [{"name": "Terminate", "arguments": {"answer": "x"}}]})
    events = run_session([reply, terminate], images=[Image.new("RGB", (64, 64))],
                         tools=default_tools().replace(QueryKnowledgeBase()))
    (observation,) = of_kind(events, ev.Observation)
    assert observation.observation == recorded


def test_long_articles_are_trimmed(wikipedia):
    text = " ".join(f"Sentence number {i} about the topic." for i in range(200))
    wikipedia(encyclopedia({"Topic": extract_reply("Topic", text)}, {"topic": "Topic"}))
    summary = look_up("topic")["summary"]
    assert len(summary) <= MAX_CHARS + 4 and summary.endswith(". ...")


def test_disambiguation_pages_list_their_meanings(wikipedia):
    meanings = "Pair may refer to:\n\nPair (parliamentary convention)\nOrdered pair\nTwisted pair"

    def answer(params: dict[str, str]) -> Reply:
        if params.get("list") == "search":
            return 200, search_reply("Pair")
        if "exintro" in params:
            return 200, extract_reply("Pair", "Pair may refer to:", disambiguation=True)
        return 200, extract_reply("Pair", meanings, disambiguation=True)

    wikipedia(answer)
    assert look_up("pair")["summary"] == meanings


def test_no_article(wikipedia):
    wikipedia(lambda params: (200, search_reply(None, suggestion="leica camera")))
    with pytest.raises(NoArticleFound, match=r"^no Wikipedia article found for 'lieca kamera'\. Did you mean 'leica camera'\?"):
        look_up("lieca kamera")
    assert issubclass(NoArticleFound, ValueError)


def test_slow_server_times_out(wikipedia, monkeypatch):
    wikipedia(lambda params: (200, search_reply("Paris")), delay=10)
    monkeypatch.setenv("TACO_KB_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(KnowledgeBaseUnreachable, match=r"^knowledge base unreachable: no answer from 127\.0\.0\.1 within 1 s"):
        look_up("Paris")
    assert time.monotonic() - start < 2.0


def test_nothing_listening(monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("TACO_WIKIPEDIA_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(KnowledgeBaseUnreachable, match="^knowledge base unreachable: cannot get 127.0.0.1 .*refused"):
        look_up("Paris")
    assert time.monotonic() - start < 2.0


def test_default_url_without_network(monkeypatch):
    # The conftest guard refuses non-loopback connections with OSError (and where there is no
    # DNS the lookup fails first); either must come back as "unreachable". The timeout bounds a
    # slow resolver.
    monkeypatch.delenv("TACO_WIKIPEDIA_URL", raising=False)
    monkeypatch.setenv("TACO_KB_TIMEOUT", "1.5")
    start = time.monotonic()
    with pytest.raises(KnowledgeBaseUnreachable, match=r"^knowledge base unreachable: .*en\.wikipedia\.org"):
        QueryKnowledgeBase()({"query": "Paris"}, lambda _id: None)
    assert time.monotonic() - start < 2.0


def test_network_guard_oserror_is_converted(monkeypatch):
    # Where DNS works, the conftest guard refuses the connection itself with a plain OSError.
    monkeypatch.delenv("TACO_WIKIPEDIA_URL", raising=False)
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("198.35.26.96", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)
    start = time.monotonic()
    with pytest.raises(KnowledgeBaseUnreachable, match="^knowledge base unreachable: cannot get en.wikipedia.org .*blocked in tests"):
        look_up("Paris")
    assert time.monotonic() - start < 2.0


def test_bad_base_url(monkeypatch):
    """A URL that is not http(s) is a bad setting: refused before any request, naming the variable and value."""
    monkeypatch.setenv("TACO_WIKIPEDIA_URL", "en.wikipedia.org")
    refused = r"TACO_WIKIPEDIA_URL must be an http\(s\) URL like https://en.wikipedia.org, got 'en.wikipedia.org'"
    with pytest.raises(SettingsError, match=refused):
        look_up("Paris")
    with pytest.raises(SettingsError, match=refused):
        QueryKnowledgeBase().status()


def test_unexpected_reply_shape(wikipedia):
    wikipedia(lambda params: (200, {"query": {"search": ["not a dict"]}}))
    with pytest.raises(KnowledgeBaseUnreachable, match="unexpected shape"):
        QueryKnowledgeBase()({"query": "Paris"}, lambda _id: None)


@pytest.mark.parametrize("status,hint", [(503, "HTTP 503"), (429, "rate limited")])
def test_http_errors(wikipedia, status, hint):
    wikipedia(lambda params: (status, {"error": "busy"}))
    with pytest.raises(KnowledgeBaseUnreachable, match=f"^knowledge base unreachable: 127.0.0.1 answered .*{hint}"):
        look_up("Paris")


def test_reply_that_is_not_the_api(wikipedia):
    wikipedia(lambda params: (200, b"<html>captive portal</html>"))
    with pytest.raises(KnowledgeBaseUnreachable, match="^knowledge base unreachable: .*not answer with Wikipedia API JSON"):
        look_up("Paris")


def test_api_errors_are_reported(wikipedia):
    wikipedia(lambda params: (200, {"error": {"code": "internal_api_error", "info": "Database query error."}}))
    with pytest.raises(KnowledgeBaseError, match="refused the request: internal_api_error: Database query error."):
        look_up("Paris")


@pytest.mark.parametrize("query", ["", "   ", "word " * 100])
def test_bad_queries(query):
    with pytest.raises(ValueError):
        look_up(query)


def test_failure_reaches_the_model_as_tacos_failed_turn(monkeypatch):
    monkeypatch.setenv("TACO_WIKIPEDIA_URL", "http://127.0.0.1:9")  # discard port: nothing there
    action = json.dumps({"thought": "look it up", "actions": [{"name": "QueryKnowledgeBase", "arguments": {"query": "Paris"}}]})
    terminate = json.dumps({"thought": "done", "actions": [{"name": "Terminate", "arguments": {"answer": "x"}}]})
    events = run_session([action, terminate], tools=default_tools().replace(QueryKnowledgeBase()))
    (observation,) = of_kind(events, ev.Observation)
    assert observation.observation.startswith("Execution failed with <class 'RuntimeError'>: knowledge base unreachable: ")
