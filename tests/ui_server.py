"""A TACO Studio web server on 127.0.0.1 for the API and browser tests, started in this process."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from taco_app.store.db import Store
from taco_app.ui.app import serve, stop
from taco_app.ui.studio import ExampleChoice, Studio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(home: Path, examples: Iterable[ExampleChoice] = ()) -> Iterator[tuple[str, Studio]]:
    """``(url, studio)`` of a server whose data lives in ``home``, with extra model choices; stopped on exit."""
    import os

    previous = os.environ.get("TACO_HOME")
    os.environ["TACO_HOME"] = str(home)
    try:
        studio = Studio(Store.open(), probe=False, local_reason="no CUDA GPU here (test server)",
                        warm=False)  # each tool loads on first use, as the tests measure
        studio.examples += list(examples)
        port = free_port()
        app = serve("127.0.0.1", port, block=False, studio=studio)
        try:
            yield f"http://127.0.0.1:{port}/", studio
        finally:
            stop(app)  # and its temporary files
    finally:
        if previous is None:
            os.environ.pop("TACO_HOME", None)
        else:
            os.environ["TACO_HOME"] = previous


def submit_when_waiting(client, *step, timeout: float = 60):
    """Submit a manual-mode step (thought, action, arguments) as soon as the session asks for one."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return client.predict(*step, api_name="/submit_step")
        except Exception as err:
            if "No manual session is waiting" not in str(err):
                raise
            time.sleep(0.1)
    raise TimeoutError("no manual step was asked for")


@contextmanager
def server_log() -> Iterator[list[str]]:
    """The web server's log lines (uvicorn's, e.g. "Exception in ASGI application") while the block runs."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("uvicorn")  # uvicorn.error propagates here; the server logs through it
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


# --- a hostile model and a failing database, for the error and markup tests --------------------

HOSTILE_LABEL = "Replay example: hostile"
HOSTILE_QUESTION = "What does the sign say?"
RE_LOGIN = "Click to re-login"


def hostile_example(folder: Path, pixel_url: str, image: Path) -> ExampleChoice:
    """A replayed model whose replies carry links, LaTeX and HTML aimed at ``pixel_url``.

    Step 1 (Calculate) puts a bare URL, a ``www.`` address, an e-mail address and ``$$x^2$$`` in its
    thought; step 2 carries an ``<img>`` tracking pixel and an ``<a>`` "re-login" link, and its
    reply is the one :func:`failing_record` makes the database refuse.
    """
    import json

    first = {"thought": f"See {pixel_url}/docs and www.example.org or mail admin@example.org; "
                        f"$$x^2$$ and $\\alpha$ <img src={pixel_url}/pixel>",
             "actions": [{"name": "Calculate", "arguments": {"expression": "2+2"}}]}
    second = {"thought": f'<img src={pixel_url}/pixel><a href="{pixel_url}/login">{RE_LOGIN}</a>',
              "actions": [{"name": "Terminate", "arguments": {"answer": "4"}}]}
    script = folder / "hostile.replay.json"
    script.write_text(json.dumps([json.dumps(first), json.dumps(second)]))
    return ExampleChoice(HOSTILE_LABEL, image, HOSTILE_QUESTION, script)


def failing_record(store, make_error):
    """``store.record`` that fails, with ``make_error(raw reply)``, at the hostile model's second reply."""
    from taco_app.cota import events as ev

    real = store.record

    def record(session):
        for event in real(session):
            if isinstance(event, ev.ActionParsed) and RE_LOGIN in event.raw:
                raise make_error(event.raw)
            yield event

    return record


def sql_error(raw: str) -> Exception:
    """What SQLAlchemy raises when SQLite is locked during an insert: the SQL and the model's text in it."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO steps (session_id, \"index\", raw) VALUES (?, ?, ?)", ("s", 2, raw),
                            sqlite3.OperationalError("database is locked"))


@contextmanager
def pixel_server() -> Iterator[tuple[str, list[str]]]:
    """``(url, paths requested)`` of an HTTP server on 127.0.0.1 that records every request it gets."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def chat_text(chat) -> str:
    """A Chatbot's messages as plain text: each step's title, then its text parts."""
    parts = []
    for message in chat or []:
        parts.append((message.get("metadata") or {}).get("title") or "")
        content = message["content"]
        parts += [c.get("text", "") for c in content] if isinstance(content, list) else [str(content)]
    return "\n".join(parts)
