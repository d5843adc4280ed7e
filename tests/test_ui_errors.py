"""What a failing handler shows: plain text in the toast, the details in the server log.

Gradio renders a toast's message as (sanitised) HTML, so these check that no text reaches it as
markup, and that the wrapper keeps what Gradio reads from a handler (its name, its signature, its
annotations, whether it streams). The same path through a running server is in test_ui_api.py.
"""

from __future__ import annotations

import inspect
import logging

import gradio as gr
import pytest
from gradio.utils import get_type_hints

from taco_app.store import StoreError
from taco_app.ui.errors import guard_app, guarded, plain

HOSTILE = '<img src=http://127.0.0.1:9/pixel><a href="http://127.0.0.1:9/login">Click to re-login</a> & more'


def test_plain_text_holds_no_markup():
    assert plain(HOSTILE) == ('&lt;img src=http://127.0.0.1:9/pixel&gt;&lt;a href="http://127.0.0.1:9/login"&gt;'
                              'Click to re-login&lt;/a&gt; &amp; more')
    assert plain("It's 3 > 2") == "It's 3 &gt; 2"


def test_a_guarded_handler_keeps_what_gradio_reads():
    def ask(question: str, request: gr.Request):
        yield question

    def stop(request: gr.Request) -> None:
        pass

    for handler in (ask, stop):
        wrapped = guarded(handler)
        assert wrapped.__name__ == handler.__name__
        assert inspect.signature(wrapped) == inspect.signature(handler)
        assert get_type_hints(wrapped)["request"] is gr.Request
        assert inspect.isgeneratorfunction(wrapped) == inspect.isgeneratorfunction(handler)
        assert guarded(wrapped) is wrapped  # wrapping twice changes nothing
    assert list(guarded(ask)("q", None)) == ["q"]


@pytest.mark.parametrize("streams", [False, True])
def test_an_unexpected_failure_is_logged_and_shown_as_one_sentence(streams, caplog):
    def fail():
        raise RuntimeError(f"(sqlite3.OperationalError) [SQL: SELECT * FROM steps] [parameters: ('{HOSTILE}',)]")

    def stream():
        yield 1
        fail()

    handler = guarded(stream if streams else fail)
    with caplog.at_level(logging.ERROR, logger="taco_app.ui"), pytest.raises(gr.Error) as raised:
        list(handler()) if streams else handler()
    shown = raised.value.message
    assert shown.startswith("Something went wrong") and "server log" in shown
    assert "<" not in shown and "SELECT" not in shown and "sqlite" not in shown
    reference = shown.split("reference ")[1].split(")")[0]
    record = next(r for r in caplog.records if reference in r.getMessage())
    assert record.exc_info and "SELECT * FROM steps" in str(record.exc_info[1])


def test_expected_failures_and_database_failures_show_their_words_as_text(caplog):
    def refuse():
        raise gr.Error(f"'{HOSTILE}' is not in the list of actions.")

    def locked():
        raise StoreError(f"The database is busy: try again in a moment. {HOSTILE}")

    with pytest.raises(gr.Error) as refused:
        guarded(refuse)()
    assert refused.value.message == f"'{plain(HOSTILE)}' is not in the list of actions."
    with caplog.at_level(logging.ERROR, logger="taco_app.ui"), pytest.raises(gr.Error) as failed:
        guarded(locked)()
    assert failed.value.message == f"The database is busy: try again in a moment. {plain(HOSTILE)}"
    assert any(r.exc_info for r in caplog.records)  # the cause is in the log


def test_every_handler_of_an_app_is_guarded():
    with gr.Blocks() as app:
        text = gr.Textbox()
        button = gr.Button()
        button.click(lambda value: value, text, text)
        text.submit(lambda value: (yield value), text, text)
        app.load(lambda: "", None, text)
    guard_app(app)
    handlers = [fn.fn for fn in app.fns.values() if fn.fn is not None]
    assert len(handlers) == 3 and all(getattr(fn, "__taco_guarded__", False) for fn in handlers)
