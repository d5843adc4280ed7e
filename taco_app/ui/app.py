"""The web app: the Ask, Review, Compare, Evaluate, Export and Doctor tabs in one Gradio Blocks, and how it is served.

It binds to 127.0.0.1 unless told otherwise; ``--share`` and basic auth are opt-in. Every browser
session has its own live run (:mod:`taco_app.ui.live`); all of them share one store and one model.

Gradio is imported only when the app is built, after :func:`serve` has pointed ``GRADIO_TEMP_DIR``
at the instance's private folder: some of Gradio's modules read that variable once, on import.
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING, Any

from taco_app import __version__, doctor
from taco_app.doctor import CHECK_HEADERS, SETTING_HEADERS
from taco_app.ui.live import Registry, owner
from taco_app.ui.scratch import Scratch
from taco_app.ui.studio import Studio

if TYPE_CHECKING:
    import gradio as gr

MAX_UPLOAD = "100mb"  # per file; larger photos are refused by the server before they are stored
CSS = """
#ask-chat .message-wrap { font-size: 0.95rem; }
#no-model-banner { border-left: 4px solid #d97706; padding: 0.4rem 0.8rem; background: #fffbeb; }
"""


def doctor_table() -> list[list[str]]:
    """The ``python app.py doctor`` checks, for the page: actions first, then backends."""
    return [list(row) for row in doctor.checks()]


def doctor_settings() -> list[list[str]]:
    """Every ``TACO_*`` setting the app runs with, its value (secrets masked) and where it came from."""
    return [list(row) for row in doctor.settings()]


def build_app(studio: Studio) -> gr.Blocks:
    # Imported now, not with this module: see the module's docstring. Bound globally, so that the
    # handlers' annotations (``request: gr.Request``) resolve when Gradio reads them.
    global gr
    import gradio as gr

    from taco_app.ui import ask, compare, errors, evaluate, export_tab, forking, review

    registry = Registry()
    with gr.Blocks(title="TACO Studio", delete_cache=(3600, 86400)) as app:
        gr.Markdown(f"## TACO Studio <small>{__version__}</small>")
        with gr.Tabs() as tabs:
            with gr.Tab("Ask", id="ask"):
                asking = ask.build(studio, registry)
            with gr.Tab("Review", id="review", elem_id="tab-review") as review_tab:
                reviewing = review.build_review(studio)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                comparing = compare.build(studio)
            with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                evaluating = evaluate.build(studio, app)
            with gr.Tab("Export", id="export"):
                export_tab.build(studio)
            with gr.Tab("Doctor", id="doctor"):
                gr.Markdown("What runs on this machine, live: each action and backend, its model, and the fix for what does not.")
                table = gr.Dataframe(headers=list(CHECK_HEADERS), interactive=False, wrap=True, elem_id="doctor-table")
                refresh = gr.Button("Check again")
                refresh.click(doctor_table, None, table)
                app.load(doctor_table, None, table)
                gr.Markdown("Settings: each `TACO_*` variable, its value and where it came from"
                            " (default, environment, flag).")
                settings = gr.Dataframe(headers=list(SETTING_HEADERS), interactive=False, wrap=True,
                                        elem_id="doctor-settings")
                app.load(doctor_settings, None, settings)

        # Forks run with the Ask tab's model and stream into Review; Review opens Compare and back.
        forks = forking.wire(studio, registry, reviewing, asking.choice)
        # The Review list loads with the page and the tab, and again when a run or a fork has ended.
        review.wire_page(studio, reviewing, app, review_tab, asking.ended, forks)
        compare.wire_review(studio, tabs, reviewing, comparing)
        evaluate.wire_compare(studio, tabs, evaluating, comparing)  # a flipped item opens in Compare

        def forget(request: gr.Request) -> None:  # the tab closed: stop its run, drop its state
            registry.forget(owner(request))

        app.unload(forget)
    errors.guard_app(app)  # every handler: failures shown as plain text, details to the server log
    return app


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` (else the setting, from --auth or TACO_AUTH) as Gradio wants it; None when unset."""
    from taco_app.settings import current, split_login

    value = value or current().secret("auth")
    if not value:
        return None
    login = split_login(value)
    if login is None:
        raise ValueError("--auth (or TACO_AUTH) must be user:password")
    return login


def serve(host: str = "127.0.0.1", port: int = 7860, *, share: bool = False,
          auth: str | list[tuple[str, str]] | None = None, block: bool = True, studio: Studio | None = None) -> Any:
    """Start the app; returns the Blocks (with ``block=False``, for tests) after it is listening.

    ``auth``: ``user:password`` (see :func:`parse_auth`), or a list of ``(user, password)`` pairs.

    Its temporary files live in a private folder of the data folder (:class:`Scratch`), removed when
    it stops: on Ctrl-C or SIGTERM, on :func:`stop`, or at exit.
    """
    from taco_app.settings import current
    from taco_app.store.db import Store

    credentials = auth if isinstance(auth, list) else parse_auth(auth)
    settings = current()
    settings.ensure_home()  # also keeps torch's compile cache in it
    scratch = Scratch(settings.temp_dir)
    atexit.register(scratch.remove)
    scratch.activate()  # before the Blocks is built: its components read GRADIO_TEMP_DIR when created
    try:
        studio = studio or Studio(Store.open())
        studio.scratch = scratch
        app = build_app(studio)
        from taco_app.ui.compare import CSS as COMPARE_CSS  # after build_app: Gradio is imported by now
        from taco_app.ui.keyboard import CSS as KEYS_CSS, SCRIPT as KEYS_SCRIPT  # the Review tab's keys

        app.queue(default_concurrency_limit=None)
        if block:
            _stop_on_sigterm()
        studio.warm_tools(after=lambda: app.is_running)  # the examples' tool models, once the page is served
        # show_error=False: an exception's own text (SQL, a model's words) never reaches the page (errors.py).
        app.launch(server_name=host, server_port=port, share=share, auth=credentials, prevent_thread_lock=not block,
                   allowed_paths=[str(studio.store.images_root), str(scratch.overlays.root)], show_error=False,
                   quiet=True, css=CSS + COMPARE_CSS + KEYS_CSS, js=KEYS_SCRIPT, footer_links=[],
                   max_file_size=MAX_UPLOAD, ssr_mode=False,
                   app_kwargs={"lifespan": scratch.lifespan, "middleware": [_login_for_cancel()]})
    except BaseException:
        scratch.remove()
        raise
    if block:  # launch returns once the server has stopped (Ctrl-C)
        scratch.remove()
    app.taco_scratch = scratch  # for stop()
    return app


def stop(app: gr.Blocks) -> None:
    """Stop a server started with ``block=False`` and remove its temporary files now."""
    app.close()
    scratch = getattr(app, "taco_scratch", None)
    if scratch is not None:
        scratch.remove()


def _login_for_cancel() -> Any:
    """Gradio (6.31) answers ``POST /gradio_api/cancel`` without asking for the login that every
    other route of the app needs; it cancels a tab's running event given that tab's session hash.
    With ``--auth``, this middleware refuses it (401) to anyone not logged in."""
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    class LoginForCancel:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            server = scope.get("app")
            if scope["type"] == "http" and scope["path"].rstrip("/").endswith("/gradio_api/cancel") \
                    and getattr(server, "auth", None) is not None:
                cookies = Request(scope).cookies
                token = cookies.get(f"access-token-{server.cookie_id}") or \
                    cookies.get(f"access-token-unsecure-{server.cookie_id}")
                if server.tokens.get(token) is None:
                    await JSONResponse({"detail": "Not authenticated"}, status_code=401)(scope, receive, send)
                    return
            await self.app(scope, receive, send)

    return Middleware(LoginForCancel)


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a service manager) stops the server like Ctrl-C, so its temporary files go too."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
