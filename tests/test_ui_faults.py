"""The web app when its database fails: the person reads what happened, never SQL; nothing is
reported saved that was not; the next run works once the fault is gone."""

from __future__ import annotations

import sqlite3

import pytest

from taco_app.store import queries

from .test_ui_api import FUEL, ask, chat_text
from .ui_server import running, server_log

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

SQL_WORDS = ("INSERT", "SELECT", "UPDATE ", "sqlite3", "psycopg", "Traceback", "OperationalError")


def no_sql(text: str) -> None:
    for word in SQL_WORDS:
        assert word not in text, f"{word!r} reached the page: {text[:500]}"


def test_a_locked_then_deleted_database_is_said_plainly_and_the_next_run_works(tmp_path, monkeypatch):
    monkeypatch.setenv("TACO_DB_TIMEOUT", "0.5")
    with server_log() as log, running(tmp_path / "home") as (url, studio):
        client = Client(url, verbose=False)
        store = studio.store
        locker = sqlite3.connect(store.file, timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            _updates, final = ask(client, [FUEL])
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        chat, info = chat_text(final[0]), final[5]
        assert "The session failed" in chat and "locked" in chat
        assert "not saved" in info and "saved; open it" not in info
        no_sql(chat + info)

        _updates, final = ask(client, [FUEL])  # the lock is gone
        assert "About 14.33 gallons" in chat_text(final[0]) and "saved; open it" in final[5]
        assert queries.list_sessions(store).total >= 1

        for path in store.file.parent.glob(store.file.name + "*"):
            path.unlink()
        _updates, final = ask(client, [FUEL])
        chat, info = chat_text(final[0]), final[5]
        assert "deleted or replaced" in chat and "not saved" in info
        no_sql(chat + info)
        with pytest.raises(Exception) as raised:
            client.predict("", "any", "any", "", 1, "", api_name="/search_sessions")
        assert "deleted or replaced" in str(raised.value)
        no_sql(str(raised.value))
    assert not [line for line in log if "Exception in ASGI application" in line]
