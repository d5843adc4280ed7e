"""What a person sees when a handler fails: one plain sentence, never a stack, SQL or markup.

Gradio shows ``gr.Error``, ``gr.Warning`` and ``gr.Info`` messages in a toast that renders them as
(sanitised) HTML: an ``<img src=…>`` in a message makes the browser fetch that URL, an ``<a>`` is a
live link. Messages often carry text nobody here wrote: model output, file names, what a person
typed, exception messages that embed them. So every handler of the app is wrapped by
:func:`guard_app`:

- ``gr.Error`` raised by a handler (an expected failure, worded for people) is shown with its
  text escaped, so the toast shows it exactly as written;
- :class:`~taco_app.store.StoreError` (the database failed) shows its own message, escaped; the
  cause goes to the server log;
- any other exception is logged with its traceback and shown as one sentence that points to the
  log (with a reference to find the entry).

``warn`` and ``inform`` are ``gr.Warning`` and ``gr.Info`` with the same escaping.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import secrets
from typing import Any, Callable

import gradio as gr

from taco_app.store import StoreError

log = logging.getLogger("taco_app.ui")

UNEXPECTED = ("Something went wrong and this action did not finish. The details are in the server log"
              " (reference {ref}); try again, and if it keeps failing, tell whoever runs this server.")


def plain(text: Any) -> str:
    """Text for a toast: HTML-escaped, so the toast shows it as typed and renders no element."""
    return html.escape(str(text), quote=False)


def warn(message: Any) -> None:
    gr.Warning(plain(message))


def inform(message: Any) -> None:
    gr.Info(plain(message))


def refusal(err: Exception) -> gr.Error:
    """A refusal the app words itself (a ValueError's "the reviewer name is …"), as a sentence for the page."""
    text = str(err)
    return gr.Error(f"{text[:1].upper()}{text[1:]}.")


def _shown(err: BaseException, handler: str) -> gr.Error:
    """The gr.Error to raise for an exception that escaped a handler."""
    if isinstance(err, gr.Error):
        err.message = plain(err.message)
        return err
    ref = secrets.token_hex(3)
    if isinstance(err, StoreError):
        log.error("database failure in %s (reference %s): %s", handler, ref, err, exc_info=err)
        return gr.Error(plain(err), print_exception=False)
    log.error("unexpected failure in %s (reference %s)", handler, ref, exc_info=err)
    return gr.Error(UNEXPECTED.format(ref=ref), print_exception=False)


def _reraise(err: Exception, handler: str) -> None:
    shown = _shown(err, handler)
    if shown is err:
        raise err
    raise shown from err


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a function or a generator function) with its failures turned into plain gr.Errors.

    The wrapper keeps ``fn``'s name and signature (Gradio reads both: the API name, which
    arguments get the request or the event data), and stays a generator function when ``fn`` is one.
    """
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "handler")
    if getattr(fn, "__taco_guarded__", False):
        return fn
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as err:  # noqa: BLE001 (reported to the person and logged, never swallowed)
                _reraise(err, name)
        wrapper = stream
    elif inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"{name}: async handlers are not used in this app; guard them before adding one")
    else:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001
                _reraise(err, name)
        wrapper = call
    wrapper.__taco_guarded__ = True  # type: ignore[attr-defined]
    return wrapper


def guard_app(app: gr.Blocks) -> None:
    """Wrap every event handler of ``app`` (call once its Blocks are built, before it is launched)."""
    for block_fn in app.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = guarded(block_fn.fn)
