"""Crash and restart: ``kill -9`` the web app while 4 sessions run; nothing they finished is lost.

Four people are mid-session in manual mode (a step done, the next one not yet written) when the app
is killed. After a restart the app lists the four sessions as ``interrupted``, each with its
finished step, and the SQLite database passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT
from .ui_server import free_port, submit_when_waiting

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

PHOTO = ROOT / "assets" / "examples" / "astronaut.png"
MANUAL = "Manual: write each step yourself"


def start(home, port) -> subprocess.Popen:
    env = {**os.environ, "TACO_HOME": str(home)}
    env.pop("TACO_DB_URL", None)  # SQLite in TACO_HOME: the integrity check is SQLite's
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError("the app did not start")


def test_kill_9_during_four_sessions_loses_no_finished_step(tmp_path):
    home, port = tmp_path / "home", free_port()
    app = start(home, port)
    try:
        clients, jobs = [], []
        for k in range(4):
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            jobs.append(client.submit([handle_file(str(PHOTO))], f"crash test {k}", MANUAL, False, api_name="/ask"))
            clients.append(client)
        for k, client in enumerate(clients):
            submit_when_waiting(client, f"step one of {k}", "Calculate", f'{{"expression": "{k} + 100"}}')
        # Each session has finished its first step and waits for the second: wait until all are stored.
        db = home / "taco.db"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as connection:
                if connection.execute("SELECT count(*) FROM steps").fetchone()[0] == 4:
                    break
            time.sleep(0.1)
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()

    app = start(home, port)  # the restart marks the dead process's sessions interrupted
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        rows, total = client.predict("crash test", "interrupted", "any", "", 1, "", api_name="/search_sessions")
        assert total.startswith("4 session(s)"), total
    finally:
        app.terminate()
        app.wait(timeout=30)

    with sqlite3.connect(home / "taco.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        sessions = connection.execute("SELECT id, question, status FROM sessions ORDER BY question").fetchall()
        assert [(q, s) for _id, q, s in sessions] == [(f"crash test {k}", "interrupted") for k in range(4)]
        for k, (session_id, _question, _status) in enumerate(sessions):
            steps = connection.execute("SELECT observation FROM steps WHERE session_id = ?", (session_id,)).fetchall()
            assert len(steps) == 1 and f"{{'result': {k + 100}}}" in steps[0][0]
