"""What an export format is: a name, its data file, how trainers read it, and how it makes its rows.

Most formats make one row per session (:meth:`ExportFormat.row`); a format whose rows come from
several sessions (a preference pair) overrides :meth:`ExportFormat.rows`, which gets the whole
:class:`Batch` the filters chose. Either way the exporter copies the images and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from taco_app import __version__
from taco_app.cota.prompt import Turn
from taco_app.store.corrections import replacements
from taco_app.store.export.rebuild import Skip, rebuild
from taco_app.store.queries import LatestFeedback
from taco_app.store.schema import FeedbackRow, PreferenceRow, SessionRow

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


@dataclass(frozen=True)
class Made:
    """A row a format made, with what the exporter writes beside it."""

    row: dict[str, Any]
    provenance: dict[str, Any]  # the row's line in provenance.jsonl (its "id" is the row's)
    images: list[str]  # the export paths the row names (each copied into images/)
    models: list[str]  # the model of each session it comes from, for the card


@dataclass(frozen=True)
class Left:
    """A row a format did not make, and why."""

    what: str  # the session id, or the sessions of a pair
    skip: Skip


class Batch:
    """What the filters chose, for :meth:`ExportFormat.rows`: the sessions, what people said of them,
    and the way to their images.

    ``selected`` are the sessions the filters choose, oldest first, by (created_at, id). A format
    whose rows pair a chosen session with another reads the others from :meth:`stored` (every
    session in the store) and people's preferences from :meth:`preferences`.
    """

    def __init__(self, dataset: str, selected: list[SessionRow], feedback: dict[str, list[FeedbackRow]], *,
                 options: Mapping[str, str], stored: Callable[[], list[SessionRow]],
                 preferences: Callable[[], list[PreferenceRow]],
                 images: Callable[[SessionRow, list[str], dict[str, str]], list[str]]):
        self.dataset = dataset
        self.selected = selected
        self.feedback = feedback  # session id → its feedback rows, oldest first
        self.options = options  # the format's options (:attr:`ExportFormat.options`), each given or its default
        self._stored, self._preferences, self._images = stored, preferences, images
        self._notes: dict[str, LatestFeedback] = {}
        self._all: dict[str, SessionRow] | None = None

    def notes(self, session: SessionRow) -> LatestFeedback:
        """What people's feedback on the session amounts to (the latest of each kind)."""
        if session.id not in self._notes:
            self._notes[session.id] = LatestFeedback.fold(self.feedback.get(session.id, []))
        return self._notes[session.id]

    def history(self, session: SessionRow) -> list[FeedbackRow]:
        """The session's feedback rows, oldest first."""
        return self.feedback.get(session.id, [])

    def sample(self, session: SessionRow) -> Sample:
        """The session rebuilt with clean targets and its images' export paths, or :class:`Skip`."""
        notes = self.notes(session)
        rebuilt = rebuild(session, notes)
        paths = self.image_paths(session, rebuilt.image_ids)
        return Sample(f"{self.dataset}-{session.id}", self.dataset, session, rebuilt.turns, paths, notes)

    def image_paths(self, session: SessionRow, image_ids: list[str]) -> list[str]:
        """The export paths of the session's images, in order; :class:`Skip` if one is not in the store.
        A tool's picture a person redrew with corrected regions is the redrawn one, as the rebuilt
        observations say (:mod:`taco_app.store.corrections`). Only the images of rows that are written are copied."""
        return self._images(session, image_ids, replacements(self.notes(session).corrected_outputs))

    def stored(self) -> dict[str, SessionRow]:
        """Every session in the store by id (the filters' choice or not), oldest first."""
        if self._all is None:
            self._all = {session.id: session for session in self._stored()}
        return self._all

    def preferences(self) -> list[PreferenceRow]:
        """People's preferences between two sessions, oldest first."""
        return self._preferences()


def session_provenance(session: SessionRow, notes: LatestFeedback) -> dict[str, Any]:
    """Where a session came from and what people said of it."""
    return {
        "session_id": session.id, "model": session.model, "backend": session.backend,
        "family": session.family, "revision": session.revision, "quantisation": session.quantisation,
        "rating": notes.rating, "step_ratings": {str(k): v for k, v in sorted(notes.step_ratings.items())},
        "step_blame": {str(k): v for k, v in sorted(notes.step_blame.items())},
        "corrections": {
            "answer": notes.corrected_answer,
            "steps": {str(k): v for k, v in sorted(notes.corrected_steps.items())},
            **({"outputs": {str(k): {"regions": v.get("regions")} for k, v in sorted(notes.corrected_outputs.items())}}
               if notes.corrected_outputs else {}),
        },
    }


def provenance(sample: Sample) -> dict[str, Any]:
    """Where a row came from, keyed by its id: the session, the model, and what people said of it."""
    return {"id": sample.id, **session_provenance(sample.session, sample.notes), "app_version": __version__}


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


CLEAN_TARGETS = (
    "**Corrections** people made are applied: a corrected step replaces the model's reply, a corrected answer "
    "the final one, and regions a person fixed on a tool's output replace the tool's in that step's observation, "
    "its picture redrawn with them. Only finished sessions whose every reply is a CoTA step in JSON are exported."
)


class ExportFormat:
    """A training-data format: one module under ``store/export/`` and one entry in :data:`FORMATS`.

    A format turns one :class:`Sample` into one JSON row (:meth:`row`), or, when its rows come from
    several sessions, a whole :class:`Batch` into rows (:meth:`rows`); the exporter chooses the
    sessions, copies the images and writes the files. A format names its data file (``.jsonl``: one
    row a line; ``.json``: one JSON array) and says, for the dataset card, how a trainer reads it.
    """

    name: str = ""  # what ``--format`` and the Export tab call it, e.g. "cota-mantis"
    like: str = ""  # the dataset or format its rows look like, for the dataset card
    data_file: str = "data.jsonl"  # "data.jsonl" or "data.json"
    unit: str = "session"  # what a row is made from, in the summary and the card: "session" or "pair"
    rows_are: str = "answered sessions"  # the card's words for its rows
    targets: str = CLEAN_TARGETS  # the card's words for what the rows teach
    provenance_holds: str = "session, model, backend, rating, corrections, app version"  # the card's words
    # Rows only from what people judged (ratings, preferences): a store nobody judged gives none.
    needs_judgments: bool = False
    # The format's own options and their values, the first the default: {"pair": ("step", "trajectory")}.
    options: Mapping[str, tuple[str, ...]] = MappingProxyType({})

    def row(self, sample: Sample) -> dict[str, Any]:
        """The session as one JSON row (:class:`Skip` leaves it out with a reason)."""
        raise NotImplementedError

    def rows(self, batch: Batch) -> Iterator[Made | Left]:
        """Every row of the batch, or why one was not made: by default one per chosen session, in order."""
        for session in batch.selected:
            try:
                sample = batch.sample(session)
                row = self.row(sample)
            except Skip as skip:
                yield Left(session.id, skip)
                continue
            yield Made(row, provenance(sample), sample.images, [session.model or "unknown"])

    def files(self, dataset: str) -> dict[str, str]:
        """Other files the export needs beside the data (name → text), e.g. a trainer's data config."""
        return {}

    def usage(self, dataset: str) -> str:
        """Markdown for the dataset card: how to load the export and train on it."""
        return ""
