"""Manual mode: a person writes each step instead of a model.

:class:`ManualBackend` is a backend whose :meth:`~ManualBackend.stream` waits until someone calls
:meth:`~ManualBackend.submit` with the next step's text (the JSON a model would have written), then
yields it. The rest of the loop is unchanged: the text is parsed, its action runs live, the
observation is recorded, so a manual trace is like any other. :func:`compose_step` builds that text
from a form's fields and says what is wrong with them.

Stopping: :meth:`~ManualBackend.cancel` sets the backend's ``cancelled`` event and wakes a waiting
stream, which then raises :class:`BackendError`. Pass the session's stop event as ``cancel=`` (or
run the session with ``cancel=backend.cancelled``): the loop then sees a stopped session and ends
it ``cancelled``; without it, the session ends ``failed`` with the message "manual mode was stopped".
Setting the shared event alone is enough too: a waiting stream notices within ``POLL_S``.
One backend serves one session: once cancelled it stays cancelled.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any, Sequence

from PIL import Image

from taco_app.cota.actions import Action, step_text
from taco_app.cota.backend import Backend, BackendError, Stream
from taco_app.cota.prompt import Prompt
from taco_app.cota.registry import action_names

POLL_S = 0.05  # how often a waiting stream looks at a cancel event set from outside


class ManualBackend(Backend):
    name = "manual"

    def __init__(self, *, family: str = "mantis", wait_s: float | None = None, cancel: threading.Event | None = None):
        """``wait_s``: how long a step may take to arrive (None: forever) before the session fails.

        ``cancel``: the session's stop event, shared with ``run(cancel=…)``; a new one if None.
        """
        self.family = family
        self.wait_s = wait_s
        self.cancelled = cancel if cancel is not None else threading.Event()
        self._ready = threading.Condition()
        self._pending: deque[str] = deque()
        self._waiting = 0
        self.prompt: Prompt | None = None  # the prompt of the step being waited for (what the model would read)

    @property
    def waiting(self) -> bool:
        """Whether the session is waiting for the person's next step."""
        with self._ready:
            return self._waiting > 0

    def submit(self, text: str) -> None:
        """Hand over the next step's text; thread-safe. A step sent early waits for its turn."""
        if not isinstance(text, str):
            raise TypeError(f"a step is the text a model would write, not {type(text).__name__}")
        with self._ready:
            self._pending.append(text)
            self._ready.notify_all()

    def cancel(self) -> None:
        """Stop the session: a waiting :meth:`stream` ends at once. Thread-safe, idempotent."""
        self.cancelled.set()
        with self._ready:
            self._ready.notify_all()

    close = cancel

    def stream(self, prompt: Prompt, images: Sequence[Image.Image]) -> Stream:
        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        with self._ready:
            self.prompt = prompt
            self._waiting += 1
            try:
                while not self._pending:
                    if self.cancelled.is_set():
                        raise BackendError("manual mode was stopped")
                    timeout = POLL_S
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise BackendError(f"no step was submitted within {self.wait_s:g} s")
                        timeout = min(timeout, left)
                    self._ready.wait(timeout)
                text = self._pending.popleft()
            finally:
                self._waiting -= 1
        yield text


def compose_step(thought: str, name: str, arguments: dict[str, Any] | str) -> str:
    """The text of one step from a form's fields, written as a TACO model writes it.

    ``arguments`` is a dict or the text of a JSON object (an empty field means no arguments).
    Raises ValueError with a message for the person: arguments that are not a JSON object, or an
    action name that TACO does not have. Whether the arguments suit the action is checked when it
    runs, as for a model (a wrong one becomes the failed-execution observation).
    """
    if not isinstance(thought, str):
        raise ValueError(f"the thought must be text, not {type(thought).__name__}")
    name = name.strip() if isinstance(name, str) else name
    known = action_names()
    if name not in known:
        raise ValueError(f"unknown action {name!r}; the actions are {', '.join(known)}")
    example = '{"image": "image-0"}'
    if isinstance(arguments, str):
        if not arguments.strip():
            arguments = "{}"
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as err:
            raise ValueError(f"the arguments are not valid JSON ({err}); write an object, e.g. {example}") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"the arguments must be a JSON object, e.g. {example}, not {type(arguments).__name__}")
    return step_text(thought, Action(name, arguments))
