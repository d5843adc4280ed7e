"""The backend interface: where model text comes from."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, Union

from PIL import Image

from taco_app.cota.events import Usage
from taco_app.cota.prompt import Prompt

Chunk = Union[str, Usage]


class BackendError(RuntimeError):
    """The backend could not produce text; the message says why and what to do."""


class Backend(Protocol):
    name: str  # e.g. "replay", "transformers"
    model_id: str | None  # the checkpoint or script it runs
    family: str  # the prompt format it speaks: "mantis" or "qwen2"

    def stream(self, prompt: Prompt, images: Sequence[Image.Image]) -> Iterator[Chunk]:
        """Yield the model's reply to ``prompt`` in text chunks as it is generated.

        ``images`` has one entry per ``<image>`` in the prompt, in order. A backend that counts
        tokens yields one :class:`Usage` after the text. Closing the iterator early (the person
        pressed Stop) must stop generation promptly.
        """
        ...

    # Optional: ``generate_text(prompt: str) -> str``, the backend's own model answering a plain
    # text question (used by QueryLanguageModel). Backends without a language model omit it.
