"""The contracts the step loop drives: where model text comes from, and where images go.

:class:`Backend` is the interface every backend implements (``backends/``); its optional abilities
have defaults here, so the loop and the UI never probe for them. :class:`ImageSink` is where the
loop keeps the session's images (the store's image files implement it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Protocol, Sequence, Union

from taco_app.cota.events import Usage
from taco_app.cota.prompt import Prompt

if TYPE_CHECKING:  # PIL is only a type here: the protocol imports no imaging library
    from PIL import Image

Chunk = Union[str, Usage]
Stream = Generator[Chunk, None, None]  # a reply as it is generated; closing it stops the generation
LanguageModel = Callable[[str], str]  # text in, text out: a backend's own model answering a plain question


class BackendError(RuntimeError):
    """The backend could not produce text; the message says why and what to do."""


class Backend:
    """Where model text comes from. Subclasses set the three names and implement :meth:`stream`."""

    name: str = ""  # e.g. "replay", "transformers"
    model_id: str | None = None  # the checkpoint or script it runs
    family: str = "mantis"  # the prompt format it speaks: "mantis" or "qwen2"
    revision: str | None = None  # the checkpoint's commit, when known (recorded on the session)
    quantisation: str | None = None  # "4bit", "8bit", "none"; None where it does not apply
    loaded: bool = True  # False while a local checkpoint is still to be loaded (see :meth:`load`)
    # How many sessions may use it at once to any gain (an eval run's workers); None: as many as asked,
    # for a server that batches concurrent requests.
    max_sessions: int | None = None

    def stream(self, prompt: Prompt, images: Sequence["Image.Image"]) -> Stream:
        """The model's reply to ``prompt``, as a generator of text chunks yielded as they are made.

        ``images`` has one entry per ``<image>`` in the prompt, in order. A backend that counts
        tokens yields one :class:`Usage` after the text. The loop closes the generator when it stops
        reading (the person pressed Stop, the reply is too long): closing must stop generation promptly.
        """
        raise NotImplementedError

    def language_model(self) -> LanguageModel | None:
        """The backend's own model answering a plain text question (``QueryLanguageModel``), or None."""
        return None

    def load(self) -> Any:
        """Load what :meth:`stream` needs now (a large checkpoint), so the first step does not wait.

        Nothing by default. While it runs, :meth:`load_progress` says how far it is.
        """

    def load_progress(self) -> tuple[float, str]:
        """How far :meth:`load` is: a fraction from 0 to 1 and the stage in words (done, by default)."""
        return 1.0, ""

    def abort(self) -> None:
        """Stop the replies in flight now, from another thread, without waiting for their next chunk (a
        stopped eval run whose server holds requests). Nothing by default: closing a stream stops it."""

    def describe(self) -> str:
        """Which model, on what, how: one line for the page (the local model adds its device and memory)."""
        return f"{self.name} · {self.model_id}" if self.model_id else self.name


class ImageSink(Protocol):
    """Where a session's images are kept: content-addressed files, each returned as (sha256, path)."""

    def save(self, image: "Image.Image") -> tuple[str, Path]:
        """Keep a picture (a tool's output) and return its sha256 and where it is."""
        ...

    def save_file(self, source: str | Path) -> tuple[str, Path]:
        """Keep an input file as it is (its own bytes and format)."""
        ...
