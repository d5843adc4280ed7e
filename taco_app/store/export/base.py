"""What an export format is: a name, what its rows look like, and one row per session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from taco_app.store.queries import LatestFeedback
from taco_app.store.schema import SessionRow

DATASET = "taco-studio"  # the rows' metadata.dataset


class Turn(Protocol):
    role: str  # "user" | "assistant"
    text: str  # with TACO's <image> placeholders


@dataclass(frozen=True)
class Sample:
    """One session, ready to be written as a row."""

    session: SessionRow
    turns: list[Turn]  # TACO's turns, people's corrections applied
    images: list[str]  # the images' paths in the export (``images/<sha256>.<ext>``), in placeholder order
    notes: LatestFeedback  # what people said of it


class ExportFormat(Protocol):
    """A training-data format: one module under ``store/export/`` and one entry in :data:`FORMATS`."""

    name: str  # what ``--format`` and the Export tab call it, e.g. "cota-mantis"
    like: str  # the dataset its rows look like, for the dataset card, e.g. "Salesforce/cota-mantis"

    def row(self, sample: Sample) -> dict[str, Any]:
        """The session as one JSON row of ``data.jsonl``."""
        ...
