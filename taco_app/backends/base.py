"""The backend interface: where model text comes from."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from PIL import Image


class BackendError(RuntimeError):
    """The backend could not produce text; the message says why and what to do."""


class Backend(Protocol):
    name: str  # e.g. "replay", "transformers"
    model_id: str | None  # the checkpoint or script it runs
    family: str  # the prompt format it speaks: "mantis" or "qwen2"

    def stream(self, prompt: str, images: Sequence[Image.Image]) -> Iterator[str]:
        """Yield the model's reply to ``prompt`` in chunks as it is generated.

        ``prompt`` is the full chat-wrapped text with one ``<image>`` per entry of ``images``.
        """
        ...

    # Optional: ``generate_text(prompt: str) -> str``, the backend's own model answering a plain
    # text question (used by QueryLanguageModel). Backends without a language model omit it.
