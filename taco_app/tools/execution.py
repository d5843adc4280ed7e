"""Running one action's tool for the step loop: in a worker thread, with a time limit, stoppable.

A tool runs in a worker thread and is waited on for at most its time limit (the tool's own
``timeout_s``, else the session's, 120 s unless the settings say otherwise). Past it, or on Stop, the
session stops waiting and discards whatever the tool returns later. Python cannot stop a thread: a
tool that never returns keeps its worker (a daemon, so it does not hold up exit) and whatever it holds
until it ends on its own; the abandoned call can no longer read the session's images or call its
language model. A tool that runs out of GPU memory frees the tool models, so the next call loads only
what it needs. Every failure is raised for the loop to feed back to the model, as TACO did.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from PIL import Image

from taco_app.cota.actions import Action
from taco_app.settings import default_of
from taco_app.tools import Toolbox, UnknownAction
from taco_app.tools.base import BadArguments, BadArgumentType, ImageLookup, LanguageModel, Tool, ToolResult
from taco_app.weights import MODELS

# Seconds a tool call may take, unless the tool or the settings say otherwise: the setting's own default.
DEFAULT_TOOL_TIMEOUT = default_of("TACO_TOOL_TIMEOUT")
STOP_POLL_S = 0.05  # while a tool runs, how often the loop looks at ``cancel``


def time_limit(tool: Tool, default_s: float) -> float:
    """Seconds one call of ``tool`` may take: its own ``timeout_s``, else ``default_s``."""
    own = tool.timeout_s
    return float(default_s if own is None else own)


def execute(tools: Toolbox, action: Action, lookup: ImageLookup, language_model: LanguageModel | None, *,
            timeout_s: float, cancel: threading.Event) -> ToolResult | None:
    """Run ``action`` with its tool from ``tools``; its result, or None when ``cancel`` was set while it ran.

    Raises what went wrong, as the model is to read it: a malformed action (a person's edit), an
    unknown action, bad arguments or the tool's own error; ``TimeoutError`` past the time limit; a
    ``RuntimeError`` saying so when the tool ran out of GPU memory (the tool models are freed first).
    """
    try:
        action.check()  # the parser makes only well-formed actions; a person's edit (review) may not be one
    except TypeError as err:
        raise BadArgumentType(*err.args) from None
    tool = tools.get(action.name)
    try:
        return _in_worker_thread(tool, action.arguments, lookup, language_model, time_limit(tool, timeout_s), cancel)
    except Exception as err:
        if not _out_of_memory(err):
            raise
        MODELS.clear()  # the tool models filled the GPU; the next call loads only what it needs
        raise RuntimeError(f"{tool.name} ran out of GPU memory; the app freed its tool models, try again") from err


def error_code(error: BaseException) -> str:
    """Why an action gave no observation, for the reports: ``unknown_action``, ``bad_arguments``
    (its arguments, or a malformed action), ``timeout`` or ``tool`` (the tool's own error)."""
    if isinstance(error, UnknownAction):
        return "unknown_action"
    if isinstance(error, BadArguments):
        return "bad_arguments"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "tool"


def _out_of_memory(error: BaseException) -> bool:
    """torch's ``OutOfMemoryError`` (CUDA or otherwise), known by name so this module needs no torch."""
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


def _in_worker_thread(tool: Tool, arguments: dict[str, Any], lookup: ImageLookup, language_model: LanguageModel | None,
                      limit_s: float, cancel: threading.Event) -> ToolResult | None:
    """``tool(arguments)`` in a worker thread, waited on for at most ``limit_s`` (see the module's notes)."""
    done, abandoned = threading.Event(), threading.Event()
    box: list[Any] = []

    def guarded_lookup(image: str) -> Image.Image:
        if abandoned.is_set():
            raise TimeoutError(f"{tool.name} was abandoned")
        return lookup(image)

    def guarded_ask(text: str) -> str:
        if abandoned.is_set():
            raise TimeoutError(f"{tool.name} was abandoned")
        return language_model(text)  # type: ignore[misc]  (only handed over when there is one)

    def work() -> None:
        try:
            box.append(tool(arguments, guarded_lookup, language_model=guarded_ask if language_model is not None else None))
        except BaseException as err:  # handed to the loop's thread, which decides
            box.append(err)
        finally:
            done.set()

    _submit(work)
    deadline = time.perf_counter() + limit_s
    while not done.wait(min(STOP_POLL_S, max(0.0, deadline - time.perf_counter()))):
        if cancel.is_set():
            abandoned.set()
            return None
        if time.perf_counter() >= deadline:
            abandoned.set()
            raise TimeoutError(f"{tool.name} did not finish within {limit_s:g} s")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


# --- the worker threads -----------------------------------------------------------------------------

_idle: list[queue.SimpleQueue] = []  # tool workers waiting for a call (reused: a new thread costs ~10x more)


def _worker(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()
        _idle.append(jobs)  # a call abandoned by the loop rejoins only once it has ended on its own


def _submit(job: Callable[[], None]) -> None:
    try:
        jobs = _idle.pop()
    except IndexError:
        jobs = queue.SimpleQueue()
        threading.Thread(target=_worker, args=(jobs,), name="taco-tool", daemon=True).start()
    jobs.put(job)
