"""What the web app works with: the store, the model choices, and the words for what runs here.

One :class:`Studio` per server process. The local TACO model (when it can run here) is one shared
backend, loaded on first use; every other choice makes a fresh backend per run (a replay script
plays from its start, a manual run has its own hand-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taco_app.backends import BackendOptions, ReplayBackend, auto_choice
from taco_app.cota.backend import Backend, BackendError
from taco_app.examples import ASSETS, EXAMPLES
from taco_app.settings import current

LOCAL = "TACO model (local)"
OPENAI = "OpenAI-compatible server"
MANUAL = "Manual: write each step yourself"
REPLAY = "Replay example: "


@dataclass(frozen=True)
class ExampleChoice:
    label: str
    image: Path
    question: str
    script: Path


def examples() -> list[ExampleChoice]:
    return [ExampleChoice(REPLAY + e.name, ASSETS / f"{e.name}.png", e.question, ASSETS / f"{e.name}.replay.json")
            for e in EXAMPLES]


def script_actions(script: Path) -> list[str]:
    """The actions a replay script's replies take, in order, each once (a reply that does not parse: none)."""
    import json

    from taco_app.cota.parser import ParsedStep, parse

    names: list[str] = []
    for reply in json.loads(script.read_text("utf-8")):
        parsed = parse(reply)
        if isinstance(parsed, ParsedStep) and parsed.action is not None and parsed.action.name not in names:
            names.append(parsed.action.name)
    return names


class Studio:
    def __init__(self, store: Any, *, local: Backend | None = None, local_reason: str = "", probe: bool = True,
                 warm: bool = True):
        """``probe``: look for a runnable local model now (cheap: no weights are loaded).
        ``warm``: :meth:`warm_tools` loads the examples' tool models (False: each loads on first use)."""
        self.store = store
        self.warm = warm
        self.warmup: Any = None  # the taco_app.tools.warmup.Warmup, once warm_tools() has started it
        self.local, self.local_reason = local, local_reason
        if local is None and probe:
            self.local, self.local_reason = auto_choice()
        self.examples = examples()
        self.scratch: Any = None  # the served app's temporary folder (taco_app.ui.scratch), set by serve()

    def picture(self, image: Any) -> str | None:
        """A drawn overlay (a PIL image or None) as a file the page can show."""
        if self.scratch is None:
            raise RuntimeError("the Studio has no temporary folder: serve() gives it one")
        return self.scratch.picture(image)

    @property
    def openai_configured(self) -> bool:
        settings = current()
        return bool(settings.openai_base_url and settings.openai_model)

    def choices(self) -> list[str]:
        labels = [LOCAL] if self.local is not None else []
        if self.openai_configured:
            labels.append(OPENAI)
        return [*labels, *(e.label for e in self.examples), MANUAL]

    def default_choice(self) -> str:
        return self.choices()[0]

    def example(self, label: str) -> ExampleChoice | None:
        return next((e for e in self.examples if e.label == label), None)

    def backend(self, label: str, *, cancel: Any = None, replayed: int = 0) -> Backend:
        """A backend for one run; BackendError says why it cannot be had.

        ``replayed``: for a replayed example, how many of its recorded replies the session already has
        (a fork continues the recording from its fork point)."""
        if label == LOCAL:
            if self.local is None:
                raise BackendError(f"no local TACO model: {self.local_reason}")
            return self.local
        if label == OPENAI:
            from taco_app.backends.openai import OpenAIBackend

            return OpenAIBackend.from_options(BackendOptions())
        if label == MANUAL:
            from taco_app.backends.manual import ManualBackend

            return ManualBackend(cancel=cancel)
        example = self.example(label)
        if example is not None:
            backend = ReplayBackend.from_file(example.script)
            backend.outputs = backend.outputs[replayed:]
            return backend
        raise BackendError(f"unknown model choice {label!r}")

    # --- tool models, loaded before the first session needs them -------------------------------------

    def example_tools(self) -> list[str]:
        """The actions the examples' replies take that load a model first (OCR's EasyOCR, DetectFaces'
        cascades), in the examples' order."""
        from taco_app.tools import default_tools
        from taco_app.tools.warmup import loads_a_model

        toolbox, names = default_tools(), []
        for example in self.examples:
            for name in script_actions(example.script):
                if name in toolbox and name not in names and loads_a_model(toolbox.get(name)):
                    names.append(name)
        return names

    def warm_tools(self, after: Any = None) -> Any:
        """Start loading the examples' tool models in a background thread (once; not when ``warm`` is
        False), once ``after()`` is true if given; returns the :class:`~taco_app.tools.warmup.Warmup`, or None."""
        if not self.warm:
            return None
        if self.warmup is None:
            from taco_app.tools import default_tools
            from taco_app.tools.warmup import Warmup

            self.warmup = Warmup([default_tools().get(name) for name in self.example_tools()])
        return self.warmup.start(after)

    def tools_settled(self) -> bool:
        """Nothing more to tell about the tool models: all ready or failed, or none being loaded."""
        return self.warmup is None or self.warmup.finished

    def tools_line(self) -> str:
        """The tool models' state, for the status line ("" when none are being loaded)."""
        from taco_app.tools.warmup import FAILED, LOADING, READY
        from taco_app.ui.render import escape_text

        if self.warmup is None:
            return ""
        states = self.warmup.states()
        if not states:
            return ""
        words = []
        for state in states:
            if state.state == READY:
                words.append(f"{state.name} ready")
            elif state.state == LOADING:
                words.append(f"{state.name} loading…")
            elif state.state == FAILED:
                words.append(f"{state.name} could not load: {escape_text(state.message)}")
            else:
                words.append(f"{state.name} waiting")
        return "**Tools:** " + " · ".join(words)

    # --- words for the page ---------------------------------------------------------------------

    def status_line(self) -> str:
        """Which model, on what, how, and the tool models' state: the lines above the Ask tab."""
        if self.local is None:
            line = "**Model:** none loaded here. Examples replay recorded TACO replies; tools run live."
        else:
            line = f"**Model:** {self.local.describe()}"
        tools = self.tools_line()
        return f"{line}\n\n{tools}" if tools else line

    def banner(self) -> str:
        """Why no model can run here and what still works ("" when the local model can run)."""
        if self.local is not None:
            return ""
        return (f"**No TACO model can run on this machine:** {self.local_reason}\n\n"
                "What still works: the examples above the images (a recorded TACO reply per step, every tool running live on the"
                " picture), manual mode (you write each step, the tools run), and the Review and Export tabs."
                + ("" if self.openai_configured else " To use a model served elsewhere, start the app with"
                   " TACO_OPENAI_BASE_URL and TACO_OPENAI_MODEL set."))
