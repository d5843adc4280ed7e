"""What an export format is: a name, its data file, how trainers read it, and one row per session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taco_app.cota.prompt import Turn
from taco_app.store.queries import LatestFeedback
from taco_app.store.schema import SessionRow

DATASET = "taco-studio"  # the default metadata.dataset and row-id prefix (``--dataset-name``)


@dataclass(frozen=True)
class Sample:
    """One session, ready to be written as a row.

    ``turns`` are TACO's turns with people's corrections applied: user turns as the model read them
    (:class:`~taco_app.cota.prompt.Turn`, images as parts), assistant turns holding one clean
    target each (:func:`taco_app.cota.training.clean_target`). A format writes them its own way;
    :func:`taco_app.cota.training.training_text` is how TACO's pipeline writes a user turn.
    """

    id: str  # the row's id: "<dataset>-<session id>", as TACO's pipeline names rows
    dataset: str  # metadata.dataset
    session: SessionRow
    turns: list[Turn]
    images: list[str]  # the images' paths in the export (``images/<sha256>.<ext>``), in placeholder order
    notes: LatestFeedback  # what people said of it


def loading_code(data_file: str, images: str) -> str:
    """The card's code that loads an export with ``datasets``, its images decoded (``EXPORT``: the folder).

    The rows' image paths are relative to the export folder, so they are joined to it before the
    ``images`` column is cast to images. The tests run this text as it stands.
    """
    return (
        "import os\n"
        "from datasets import Image, List, load_dataset\n"
        "\n"
        "folder = \"EXPORT\"\n"
        f"dataset = load_dataset(\"json\", data_files=os.path.join(folder, \"{data_file}\"), split=\"train\")\n"
        f"dataset = dataset.map(lambda row: {{\"{images}\": [os.path.join(folder, path) for path in row[\"{images}\"]]}})\n"
        f"dataset = dataset.cast_column(\"{images}\", List(Image()))\n"
    )


class ExportFormat:
    """A training-data format: one module under ``store/export/`` and one entry in :data:`FORMATS`.

    A format turns one :class:`Sample` into one JSON row; the exporter chooses the sessions, copies
    the images and writes the files. A format names its data file (``.jsonl``: one row a line;
    ``.json``: one JSON array) and says, for the dataset card, how a trainer reads it.
    """

    name: str = ""  # what ``--format`` and the Export tab call it, e.g. "cota-mantis"
    like: str = ""  # the dataset or format its rows look like, for the dataset card
    data_file: str = "data.jsonl"  # "data.jsonl" or "data.json"

    def row(self, sample: Sample) -> dict[str, Any]:
        """The session as one JSON row."""
        raise NotImplementedError

    def files(self, dataset: str) -> dict[str, str]:
        """Other files the export needs beside the data (name → text), e.g. a trainer's data config."""
        return {}

    def usage(self, dataset: str) -> str:
        """Markdown for the dataset card: how to load the export and train on it."""
        return ""
