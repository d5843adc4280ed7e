"""One browser session's live run: its events, its Stop, and the hand-offs to a person.

The Ask tab's Run handler consumes the agent's events in its own thread; other handlers (Stop,
Approve, Submit step) talk to that run through a :class:`LiveRun` kept per browser session, so two
people never see or steer each other's run. A run that waits for a person (an action to review, a
step to write) blocks in the agent's thread; these objects are how the buttons unblock it.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from taco_app.cota import events as ev
from taco_app.cota.actions import Action

REVIEW_POLL_S = 0.1  # how often a waiting review looks at Stop


@dataclass
class LiveRun:
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[ev.Event] = field(default_factory=list)
    manual: Any = None  # the ManualBackend of a manual-mode run
    reviewing: Action | None = None  # the action waiting for the person, if any
    # What the page shows now, so only changes are sent: (step choices, selected step), open panels.
    shown_steps: tuple[Any, Any] | None = None
    panels: dict[str, bool] = field(default_factory=dict)
    _decisions: "queue.Queue[Action | None]" = field(default_factory=queue.Queue)

    def review(self, step: int, action: Action) -> Action | None:
        """The agent's review hook: wait for Approve (maybe edited) or Stop."""
        self.reviewing = action
        try:
            while not self.cancel.is_set():
                try:
                    return self._decisions.get(timeout=REVIEW_POLL_S)
                except queue.Empty:
                    continue
            return None
        finally:
            self.reviewing = None

    def decide(self, action: Action | None) -> bool:
        """Approve (an action) or stop (None) the waiting review; False when nothing waits."""
        if self.reviewing is None:
            return False
        self._decisions.put(action)
        return True

    def stop(self) -> None:
        self.cancel.set()
        if self.manual is not None:
            self.manual.cancel()


Owner = tuple[str, str, str]


def owner(request: Any) -> Owner:
    """Whose run a request may see and steer: (login, client address, Gradio session hash).

    The session hash alone is chosen by the browser and sent with every request, so anyone who
    learnt it could name it. The login (with ``--auth``) and the address the connection comes from
    are not the caller's to choose: another user, or another machine, gets a different key and
    never reaches this run. (Behind a proxy or a ``--share`` tunnel every address is the same;
    the login still separates users.)
    """
    client = getattr(request, "client", None)
    return (getattr(request, "username", None) or "", getattr(client, "host", None) or "",
            getattr(request, "session_hash", None) or "")


class Registry:
    """The live run of each browser session, by :func:`owner`."""

    def __init__(self) -> None:
        self._runs: dict[Owner, LiveRun] = {}
        self._lock = threading.Lock()

    def start(self, key: Owner) -> LiveRun:
        with self._lock:
            previous = self._runs.get(key)
            if previous is not None:
                previous.stop()  # one run per browser session: a new Run ends the old one
            run = self._runs[key] = LiveRun()
            return run

    def get(self, key: Owner) -> LiveRun | None:
        with self._lock:
            return self._runs.get(key)

    def forget(self, key: Owner) -> None:
        with self._lock:
            run = self._runs.pop(key, None)
        if run is not None:
            run.stop()
