"""Replay recorded model outputs in order: for demos without a GPU, and for tests.

A replay script is a JSON list of raw model outputs (strings). Each call to :meth:`stream` plays
the next one, cut into small chunks so the streaming path is exercised as with a real model.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from taco_app.cota.backend import Backend, BackendError, Stream
from taco_app.cota.prompt import Prompt

_CHUNK = re.compile(r"\s*\S{1,12}|\s+")  # a word (at most 12 characters) with its leading space


def chunks(text: str) -> Iterator[str]:
    """Cut text into word-sized pieces that join back to exactly the same text."""
    for match in _CHUNK.finditer(text):
        yield match.group(0)


class ReplayBackend(Backend):
    name = "replay"
    max_sessions = 1  # one script, played in order: two sessions at once would each get the other's replies

    def __init__(self, outputs: Sequence[str], *, family: str = "mantis", model_id: str | None = None):
        self.outputs = list(outputs)
        self.family = family
        self.model_id = model_id
        self._next = 0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "ReplayBackend":
        path = Path(path)
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise BackendError(f"replay script not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BackendError(f"cannot read replay script {path}: {err}") from err
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise BackendError(f"replay script {path} must be a JSON list of strings (raw model outputs)")
        return cls(data, model_id=f"replay:{path.name}", **kwargs)

    def stream(self, prompt: Prompt, images: Sequence[Image.Image]) -> Stream:
        with self._lock:
            index = self._next
            self._next += 1
        if index >= len(self.outputs):
            raise BackendError(f"the replay script has no more outputs (it has {len(self.outputs)})")
        yield from chunks(self.outputs[index])
