"""Loading tools' models before a session needs them, in a background thread.

A tool loads its model on first use (:meth:`Tool.ensure_ready`, under the tool's own lock), so the
first session that reads a picture waits for EasyOCR to load. :class:`Warmup` makes that first use
early, from a thread of its own: a session that needs the same tool meanwhile waits on the same lock
and finds it loaded, never loaded twice. A model that cannot load is reported in words (its error
says the fix) and left for the session to report again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from taco_app.tools.base import Tool

WAITING, LOADING, READY, FAILED = "waiting", "loading", "ready", "failed"


def loads_a_model(tool: Tool) -> bool:
    """Whether the tool has something to load before its first call (its class overrides ``setup``)."""
    return type(tool).setup is not Tool.setup


@dataclass(frozen=True)
class ToolState:
    name: str
    state: str  # WAITING, LOADING, READY or FAILED
    message: str = ""  # why it failed, with the fix
    seconds: float | None = None  # how long loading took


class Warmup:
    """Load each tool's model, one after the other, in a daemon thread (:meth:`start`)."""

    def __init__(self, tools: Iterable[Tool]):
        self._tools = list(tools)
        self._states = {tool.name: ToolState(tool.name, WAITING) for tool in self._tools}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, after: Callable[[], bool] | None = None, *, patience_s: float = 300.0) -> Warmup:
        """Start loading (once). ``after``: wait until it says True first (e.g. the web server is up, so
        loading never holds the page back); past ``patience_s`` seconds of waiting, nothing is loaded."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(after, patience_s), name="taco-warm-tools",
                                                daemon=True)
                self._thread.start()
        return self

    def _run(self, after: Callable[[], bool] | None, patience_s: float) -> None:
        import time

        try:
            deadline = time.monotonic() + patience_s
            while after is not None and not after():
                if time.monotonic() > deadline:
                    return
                self._done.wait(0.05)  # never set here: a pause between looks
            for tool in self._tools:
                self._set(ToolState(tool.name, LOADING))
                started = time.perf_counter()
                try:
                    tool.ensure_ready()
                except Exception as err:  # shown on the page; the session that needs it says so again
                    self._set(ToolState(tool.name, FAILED, str(err) or type(err).__name__))
                else:
                    self._set(ToolState(tool.name, READY, seconds=time.perf_counter() - started))
        finally:
            self._done.set()

    def _set(self, state: ToolState) -> None:
        with self._lock:
            self._states[state.name] = state

    def states(self) -> list[ToolState]:
        with self._lock:
            return list(self._states.values())

    @property
    def finished(self) -> bool:
        """Every tool is ready or has failed: nothing more will change."""
        return self._done.is_set() or not self._tools

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :attr:`finished` (or ``timeout`` seconds); returns :attr:`finished`."""
        if self._tools and self._thread is not None:
            self._done.wait(timeout)
        return self.finished
