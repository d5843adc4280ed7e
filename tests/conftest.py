"""Shared fixtures: a private TACO_HOME per test, no network, the reference data, a session runner."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.runner import run
from taco_app.settings import current
from taco_app.store.files import ImageFiles
from taco_app.tools import default_tools

ROOT = Path(__file__).resolve().parent.parent
# Property tests run examples(n) cases; a fuzz campaign multiplies them: TACO_FUZZ_SCALE=100 pytest -k …
FUZZ_SCALE = max(1, int(os.environ.get("TACO_FUZZ_SCALE") or 1))


def examples(n: int) -> int:
    return n * FUZZ_SCALE
REFERENCE = Path(os.environ.get("TACO_REFERENCE", ROOT.parent / "shared" / "taco-reference"))


@pytest.fixture(autouse=True)
def taco_home(tmp_path, monkeypatch) -> Path:
    """A private TACO_HOME; the database is SQLite in it, or TACO_TEST_DB_URL emptied for this test."""
    home = tmp_path / "taco-home"
    monkeypatch.setenv("TACO_HOME", str(home))
    test_db = os.environ.get("TACO_TEST_DB_URL")
    if test_db:
        monkeypatch.setenv("TACO_DB_URL", test_db)
        _empty_database(test_db)
    else:
        monkeypatch.delenv("TACO_DB_URL", raising=False)
    return home


def _empty_database(url: str) -> None:
    from sqlalchemy import create_engine

    from taco_app.store.schema import Base

    engine = create_engine(url)
    try:
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()


def sqlite_only(store) -> None:
    if not store.url.startswith("sqlite"):
        pytest.skip("an SQLite-specific check")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never reach the network: only loopback connections are allowed."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def store(taco_home):
    """The store of this test's TACO_HOME (SQLite, or the test database), closed afterwards."""
    from taco_app.store.db import Store

    store = Store.open()
    yield store
    store.close()


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "traces").is_dir():
        pytest.skip(f"TACO reference data not found at {REFERENCE} (set TACO_REFERENCE to its folder)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_exports(reference, tmp_path_factory):
    """Every reference trace imported once into an SQLite store of its own; ``export(fmt)`` is its
    export in that format (made once, then shared: do not write into it) and ``ids`` maps each
    trace's name to its session id."""
    from taco_app.store.db import Store
    from taco_app.store.export import export
    from taco_app.store.importer import import_trace

    tmp = tmp_path_factory.mktemp("reference-exports")
    store = Store(f"sqlite:///{tmp / 'taco.db'}", tmp / "images")
    ids = {path.stem: import_trace(store, path) for path in sorted((reference / "traces").glob("*.json"))}
    folders: dict[str, Path] = {}

    def exported(fmt: str) -> Path:
        if fmt not in folders:
            result = export(store, tmp / fmt, fmt)
            assert result.count == len(ids), result.skipped
            folders[fmt] = tmp / fmt
        return folders[fmt]

    yield SimpleNamespace(ids=ids, export=exported)
    store.close()


def run_loop(question, images, backend, **kwargs) -> Iterator[ev.Event]:
    """``runner.run`` with every tool and the data folder's images (this test's TACO_HOME), unless given."""
    kwargs.setdefault("tools", default_tools())
    if "sink" not in kwargs:  # a test that undid its monkeypatching has no TACO_HOME of its own any more
        home = os.environ.get("TACO_HOME")
        kwargs["sink"] = ImageFiles(Path(home) / "images" if home else current().images_dir)
    return run(question, images, backend, **kwargs)


def run_session(outputs, images=(), question="What is in the image?", **kwargs) -> list[ev.Event]:
    """Run a whole session on scripted model outputs and return its events."""
    return list(run_loop(question, list(images), ReplayBackend(outputs), **kwargs))


def of_kind(events, cls):
    return [e for e in events if isinstance(e, cls)]
