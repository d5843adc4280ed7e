"""One browser session's live run: its events, its Stop, and the hand-offs to a person.

The Ask tab's Run handler and the Review tab's Fork handler consume a session's events in their own
thread (:func:`follow`: recorded in the store, folded into the chat as they come); other handlers
(Stop, Approve, Submit step) talk to that run through a :class:`LiveRun` kept per browser session,
so two people never see or steer each other's run. A run that waits for a person (an action to
review, a step to write) blocks in the agent's thread; these objects are how the buttons unblock it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from taco_app.cota import events as ev
from taco_app.cota.actions import Action
from taco_app.ui import overlays, render

REVIEW_POLL_S = 0.1  # how often a waiting review looks at Stop
STREAM_INTERVAL_S = 0.05  # at most ~20 updates a second while text streams; every other event at once


@dataclass
class LiveRun:
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[ev.Event] = field(default_factory=list)
    manual: Any = None  # the ManualBackend of a manual-mode run
    reviewing: Action | None = None  # the action waiting for the person, if any
    running: bool = False  # the Run handler is streaming this run (the Stop button is enabled)
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


# --- following a session as it runs -------------------------------------------------------------


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why, for the page."""


def loading(backend: Any) -> Iterator[str]:
    """Load ``backend``'s checkpoint in a thread, yielding its progress as one line of markdown
    about four times a second; :class:`ModelLoadError` when it fails."""
    errors: list[BaseException] = []

    def load() -> None:
        try:
            backend.load()
        except BaseException as err:  # reported below, in the page
            errors.append(err)

    loader = threading.Thread(target=load, name="taco-model-load", daemon=True)
    loader.start()
    while loader.is_alive():
        progress, stage = backend.load_progress()
        bar = "█" * int(progress * 20) + "░" * (20 - int(progress * 20))
        yield f"Loading the model: `{bar}` {progress:.0%} · {render.escape_text(stage)}"
        loader.join(timeout=0.25)
    if errors:
        raise ModelLoadError(f"The model could not be loaded: {errors[0]}")


def follow(store: Any, live: LiveRun, session: Iterable[ev.Event], *,
           interval: float = STREAM_INTERVAL_S) -> Iterator[tuple[ev.Event | None, render.ChatView]]:
    """Record ``session``'s events in ``store`` as they come, keep them in ``live`` and fold them into a
    chat view: ``(event, view)`` for each event worth showing (streamed text at most every ``interval``
    seconds, every other event at once), then ``(None, view)`` once the session has ended."""
    view = render.ChatView()
    last_yield = 0.0
    for event in store.record(session):
        live.events.append(event)
        view.add(event)
        now = time.perf_counter()
        if isinstance(event, ev.ThoughtDelta) and now - last_yield < interval:
            continue
        last_yield = now
        yield event, view
    yield None, view


def redraws(event: ev.Event | None) -> bool:
    """Whether the step pictures may have changed after ``event`` (None: the session has ended)."""
    return event is None or isinstance(event, (ev.Observation, ev.ParseError, ev.SessionStarted, ev.Finished))


def latest_picture(events: list[ev.Event]) -> tuple[list[tuple[str, int]], int | None, Any, str]:
    """``(step choices, latest, picture, caption)``: the latest step that drew something (not Terminate),
    else the latest step, with its picture (None when it has none) and caption."""
    choices = render.step_choices(events)
    latest, picture, text = None, None, ""
    for _label, number in reversed(choices):
        image, words = overlays.render_step(events, number)
        if latest is None or image is not None:
            latest, picture, text = number, image, words
        if image is not None:
            break
    return choices, latest, picture, text


def stored(events: list[ev.Event]) -> bool:
    """False when the store could not keep the session (the database or the disk failed)."""
    return not any(isinstance(e, ev.Error) and e.code == "store" for e in events)


def finished(events: list[ev.Event]) -> ev.Finished | None:
    return next((e for e in reversed(events) if isinstance(e, ev.Finished)), None)
