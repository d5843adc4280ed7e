"""The contracts the step loop drives: where model text comes from, and where images go.

:class:`Backend` is the interface every backend implements (``backends/``); its optional abilities
have defaults here, so the loop and the UI never probe for them. :class:`ImageSink` is where the
loop keeps the session's images (the store's image files implement it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence, Union

from taco_app.cota.events import Usage
from taco_app.cota.prompt import Prompt

if TYPE_CHECKING:  # PIL is only a type here: the protocol imports no imaging library
    from PIL import Image

Chunk = Union[str, Usage]
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

    def stream(self, prompt: Prompt, images: Sequence["Image.Image"]) -> Iterator[Chunk]:
        """Yield the model's reply to ``prompt`` in text chunks as it is generated.

        ``images`` has one entry per ``<image>`` in the prompt, in order. A backend that counts
        tokens yields one :class:`Usage` after the text. Closing the iterator early (the person
        pressed Stop) must stop generation promptly.
        """
        raise NotImplementedError

    def language_model(self) -> LanguageModel | None:
        """The backend's own model answering a plain text question (``QueryLanguageModel``), or None."""
        return None

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        """Load what :meth:`stream` needs now (a large checkpoint), reporting progress; nothing by default."""


class ImageSink(Protocol):
    """Where a session's images are kept: content-addressed files, each returned as (sha256, path)."""

    def save(self, image: "Image.Image") -> tuple[str, Path]:
        """Keep a picture (a tool's output) and return its sha256 and where it is."""
        ...

    def save_file(self, source: str | Path) -> tuple[str, Path]:
        """Keep an input file as it is (its own bytes and format)."""
        ...
