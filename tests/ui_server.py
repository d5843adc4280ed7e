"""A TACO Studio web server on 127.0.0.1 for the API and browser tests, started in this process."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from taco_app.store.db import Store
from taco_app.ui.app import serve
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
        studio = Studio(Store.open(), probe=False, local_reason="no CUDA GPU here (test server)")
        studio.examples += list(examples)
        port = free_port()
        app = serve("127.0.0.1", port, block=False, studio=studio)
        try:
            yield f"http://127.0.0.1:{port}/", studio
        finally:
            app.close()
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
