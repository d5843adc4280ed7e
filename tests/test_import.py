"""Import reads only what it should, says what it skipped and why, and stores each conversation once.

Cases that could hang or exhaust memory before they were refused (a FIFO, ``/dev/zero``) run the
command in a child with a time limit and an address-space limit, so a regression fails the test
instead of the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from taco_app.store.db import Store
from taco_app.store.export import export
from taco_app.store.importer import import_paths
from taco_app.store.schema import ImageRow, SessionRow, StepRow

from .conftest import sqlite_only

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "\n# USER REQUEST #:\nimage-0: <image>\nWhat is this?\n\nNow please generate your response:\n"
TERMINATE = '{"thought":"It is a cat.","actions":[{"name":"Terminate","arguments":{"answer":"a cat"}}]}'


@pytest.fixture
def store(taco_home) -> Store:
    return Store(f"sqlite:///{taco_home / 'taco.db'}", taco_home / "images")


def _photo(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def _trace_data(image: str = "photo.png", question: str = "What is this?", model=None) -> dict:
    return {
        "model": "TACO-Llama3-SigLIP" if model is None else model,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "\n# USER REQUEST #:\nimage-0: "},
                {"type": "image", "path": image},
                {"type": "text", "text": f"\n{question}\n\nNow please generate your response:\n"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": TERMINATE}]},
        ],
    }


def _trace(folder: Path, name: str, **kwargs) -> Path:
    """A one-step trace whose image is ``folder/photo.png`` unless ``image`` says otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "photo.png").exists():
        _photo(folder / "photo.png")
    path = folder / name
    path.write_text(json.dumps(_trace_data(**kwargs)))
    return path


def _row(images=("images/photo.png",), metadata=None, conversation=None) -> dict:
    return {
        "id": "x", "images": list(images) if isinstance(images, (list, tuple)) else images,
        "metadata": {"dataset": "taco-studio", "model": "TACO-Llama3-SigLIP"} if metadata is None else metadata,
        "conversation": [{"role": "user", "content": REQUEST},
                         {"role": "assistant", "content": TERMINATE}] if conversation is None else conversation,
    }


def _jsonl(folder: Path, *rows, raw_lines=()) -> Path:
    """An export folder: ``data.jsonl`` with these rows (and raw lines), ``images/photo.png``."""
    _photo(folder / "images" / "photo.png")
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw_lines))
    return path


def _count(store: Store, table=SessionRow) -> int:
    with store.reading() as db:
        return db.scalar(select(func.count()).select_from(table))


def _stored_files(home: Path) -> list[Path]:
    images = home / "images"
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


def _cli(*args, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``app.py`` in a child limited to 1 GiB of address space and ``timeout`` seconds."""

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    try:
        return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, "TACO_HOME": str(home)}, timeout=timeout, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"app.py {' '.join(map(str, args))} was still running after {timeout} s")


def _assert_reported(done: subprocess.CompletedProcess, imported: int, *reasons: str) -> None:
    """Exit 1, the count on stdout, and on stderr one line per skipped file or row, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert f"imported {imported} session(s)" in done.stdout, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(reasons), done.stderr
    for reason in reasons:
        assert any(reason in line for line in lines), (reason, done.stderr)
    assert done.returncode == (1 if reasons else 0), done.stderr


# --- files that must never be read as they are ----------------------------------------------------


def test_dev_zero_named_as_an_image_is_refused_without_reading_it(tmp_path):
    home = tmp_path / "home"
    trace = _trace(tmp_path / "traces", "zero.json", image="/dev/zero")
    done = _cli("import", trace, home=home)
    _assert_reported(done, 0, "zero.json: image-0 (/dev/zero): not a regular file")
    assert _stored_files(home) == []


def test_a_fifo_never_blocks_the_import(tmp_path):
    home = tmp_path / "home"
    traces = tmp_path / "traces"
    _trace(traces, "a.json")
    os.mkfifo(traces / "b.json")  # a FIFO among the traces: opening it for reading would wait for a writer
    export_dir = tmp_path / "export"
    data = _jsonl(export_dir, _row(), _row(images=["images/fifo.png"]))
    os.mkfifo(export_dir / "images" / "fifo.png")
    done = _cli("import", traces, data, home=home, timeout=30)
    _assert_reported(done, 1, "b.json: not a regular file (a FIFO)",
                     "data.jsonl:2: image-0 (images/fifo.png): not a regular file (a FIFO)")
    # The first row is the same conversation as a.json (same text, same image bytes): stored once.
    assert "1 already stored" in done.stdout

    os.mkfifo(tmp_path / "given.jsonl")  # a FIFO given as a path: bad input to the command as a whole
    done = _cli("import", traces / "a.json", tmp_path / "given.jsonl", home=tmp_path / "home2", timeout=30)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith("error:") and "FIFO" in done.stderr and len(done.stderr.splitlines()) == 1
    assert _stored_files(tmp_path / "home2") == []  # nothing half-stored


def test_a_file_that_is_not_an_image_is_never_copied_into_the_store(store, taco_home, tmp_path):
    trace = _trace(tmp_path / "traces", "passwd.json", image="/etc/passwd")
    folder = tmp_path / "export"
    data = _jsonl(folder, _row(images=["images/notes.png"]))
    (folder / "images" / "notes.png").write_text("not a picture\n")
    report = import_paths(store, [trace, data])
    assert report.imported == []
    assert len(report.skipped) == 2
    assert "passwd.json: image-0 (/etc/passwd): " in report.skipped[0] and "not an image" in report.skipped[0]
    assert "data.jsonl:1: image-0 (images/notes.png): " in report.skipped[1] and "not an image" in report.skipped[1]
    assert _stored_files(taco_home) == [] and _count(store) == 0


def test_an_oversized_file_is_refused_from_its_size(store, tmp_path, monkeypatch):
    from taco_app.store import importer

    monkeypatch.setattr(importer, "MAX_TRACE_BYTES", 1000)
    big = _trace(tmp_path / "traces", "big.json", question="why? " * 400)
    report = import_paths(store, [big])
    assert report.imported == [] and len(report.skipped) == 1
    assert "big.json: " in report.skipped[0] and "over the limit of 1,000 bytes" in report.skipped[0]


# --- wrong types and shapes -------------------------------------------------------------------------


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_TRACES = {
    "model a number": (json.dumps(_trace_data(model=3)), "'model' must be a text"),
    "model a dict": (json.dumps(_trace_data(model={"name": "x"})), "'model' must be a text"),
    "model 10k characters": (json.dumps(_trace_data(model="m" * 10_000)), "'model' must be a text (at most 512"),
    "an image that is a folder": (json.dumps(_trace_data(image=".")), "not a regular file (a folder)"),
    "messages a string": (json.dumps({"model": "m", "messages": "hello"}), "'messages' list"),
    "a list": ("[1, 2]", "a JSON array, not a trace"),
    "200k deep": ('{"model": "m", "messages": ' + _deep(200_000) + "}", "nested too deeply"),
    "not JSON": ("{", "not JSON"),
    "not UTF-8": (b'{"model": "\xff"}', "not UTF-8"),
    "no user request": (json.dumps({"model": "m", "messages": [{"role": "assistant", "content": TERMINATE}]}),
                        "starts with the user's request"),
}


@pytest.mark.parametrize("case", list(BAD_TRACES))
def test_a_trace_of_the_wrong_shape_is_skipped_with_its_reason(store, tmp_path, case):
    text, reason = BAD_TRACES[case]
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    good = _trace(tmp_path / "good", "good.json")
    report = import_paths(store, [path, good])
    assert len(report.imported) == 1 and len(report.skipped) == 1, report
    assert report.skipped[0].startswith(f"{path}: ") and reason in report.skipped[0], report.skipped
    assert _count(store) == 1


BAD_ROWS = {
    "model a number": (_row(metadata={"model": 3}), "'metadata.model' must be a text"),
    "model a dict": (_row(metadata={"model": {"a": 1}}), "'metadata.model' must be a text"),
    "metadata a list": (_row(metadata=["m"]), "'metadata' must be an object"),
    "metadata an empty list": (_row(metadata=[]), "'metadata' must be an object"),
    "conversation a string": (_row(conversation="hello"), "'conversation' must be a list"),
    "a message not an object": (_row(conversation=["hello"]), "message 1"),
    "content a number": (_row(conversation=[{"role": "user", "content": 3}]), "message 1"),
    "images a string": (_row(images="images/photo.png"), "'images' must be a list of paths"),
    "an image path a number": (_row(images=[7]), "'images' must be a list of paths"),
    "a row a list": ([1, 2], "a row is a JSON object"),
    "neither format": ({"id": "x"}, "neither 'conversation'"),
    "too few images": (_row(images=[]), "1 <image> placeholders but 0 images"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_row_of_the_wrong_shape_is_skipped_with_its_reason(store, tmp_path, case):
    bad, reason = BAD_ROWS[case]
    data = _jsonl(tmp_path / "export", _row(), bad)
    report = import_paths(store, [data])
    assert len(report.imported) == 1 and len(report.skipped) == 1, report
    assert report.skipped[0].startswith(f"{data}:2: ") and reason in report.skipped[0], report.skipped
    assert _count(store) == 1


def test_deep_or_broken_lines_of_an_export_are_skipped(store, tmp_path):
    data = _jsonl(tmp_path / "export", _row(), raw_lines=[_deep(200_000), "{not json", '"a string"'])
    report = import_paths(store, [data])
    assert len(report.imported) == 1
    assert [line.split(": ", 1)[0] for line in report.skipped] == [f"{data}:2", f"{data}:3", f"{data}:4"]
    assert "nested too deeply" in report.skipped[0] and "not JSON" in report.skipped[1]


def test_the_command_line_reports_every_skip_on_one_line_and_no_traceback(tmp_path):
    traces = tmp_path / "traces"
    _trace(traces, "a.json")
    _trace(traces, "b.json", model=3)
    (traces / "c.json").write_text('{"model": "m", "messages": ' + _deep(200_000) + "}")
    _trace(traces, "d.json", question="Another question")
    data = _jsonl(tmp_path / "export", _row(metadata=[]), _row(conversation="hello"))
    done = _cli("import", traces, data, home=tmp_path / "home")
    _assert_reported(done, 2, "b.json: ", "c.json: ", "data.jsonl:1: ", "data.jsonl:2: ")
    assert all(line.startswith("skipped ") for line in done.stderr.splitlines())


# --- one transaction per conversation, and each conversation stored once --------------------------


def test_a_failing_import_says_what_failed_and_a_second_run_stores_nothing_twice(store, tmp_path):
    traces = tmp_path / "traces"
    for name in ("a.json", "b.json", "c.json"):
        _trace(traces, name, question=f"Question {name}")
    (traces / "b.json").write_text("{")  # b fails; a and c are imported
    first = import_paths(store, [traces])
    assert len(first.imported) == 2 and len(first.skipped) == 1 and "b.json" in first.skipped[0]

    _trace(traces, "b.json", question="Question b.json")  # fixed: the run again imports only b
    second = import_paths(store, [traces])
    assert len(second.imported) == 1 and len(second.existing) == 2 and second.skipped == []
    assert _count(store) == 3 and _count(store, StepRow) == 3 and _count(store, ImageRow) == 3
    third = import_paths(store, [traces])
    assert third.imported == [] and sorted(third.existing) == sorted(first.imported + second.imported)
    assert _count(store) == 3

    # Our own export of them is the same conversations: importing it adds nothing either.
    export(store, tmp_path / "out", "cota-mantis")
    fourth = import_paths(store, [tmp_path / "out"])
    assert fourth.imported == [] and len(fourth.existing) == 3 and fourth.skipped == []


def test_a_conversation_the_database_refuses_leaves_nothing_of_itself(store, tmp_path):
    sqlite_only(store)
    from sqlalchemy import text

    with store.engine.begin() as connection:  # the database refuses the second image row of a session
        connection.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON images WHEN NEW.ordinal = 1 "
                                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"))
    two_images = _trace_data()
    two_images["messages"][0]["content"].insert(2, {"type": "image", "path": "photo.png"})
    folder = tmp_path / "traces"
    _trace(folder, "one.json")
    (folder / "two.json").write_text(json.dumps(two_images))
    report = import_paths(store, [folder])
    assert len(report.imported) == 1 and len(report.skipped) == 1, report
    assert "two.json: " in report.skipped[0] and "database refused" in report.skipped[0]
    assert _count(store) == 1 and _count(store, StepRow) == 1 and _count(store, ImageRow) == 1  # nothing of two.json


def test_the_reference_traces_import_once(store, reference):
    folder = reference / "traces"
    first = import_paths(store, [folder])
    assert len(first.imported) == 132 and first.skipped == [] and first.existing == []
    again = import_paths(store, [folder])
    assert again.imported == [] and sorted(again.existing) == sorted(first.imported)
    assert _count(store) == 132


def test_an_import_is_recorded_like_a_live_session_without_what_it_never_had(store, tmp_path):
    """The same recorder as a live run: an unparseable reply keeps the images shown after it; an import has
    no process, no tools of ours and no timings (NULL, not 0), and is created and finished at one moment."""
    data = _trace_data()
    data["messages"][1:1] = [
        {"role": "assistant", "content": [{"type": "text", "text": "not json"}]},
        {"role": "user", "content": [{"type": "text", "text": "OBSERVATION: image-1: "}, {"type": "image", "path": "photo.png"}]},
    ]
    folder = tmp_path / "traces"
    _photo(folder / "photo.png")
    (folder / "t.json").write_text(json.dumps(data))
    (session_id,) = import_paths(store, [folder / "t.json"]).imported
    row = store.get_session(session_id)
    assert (row.status, row.answer, row.backend, row.model, row.family) == ("finished", "a cat", "import", "TACO-Llama3-SigLIP", "mantis")
    assert row.tool_versions == {} and row.owner_host is None and row.owner_pid is None and row.total_s is None
    assert row.created_at == row.finished_at
    first, last = row.steps
    assert first.parse_error_code == "json" and first.raw == "not json" and first.image_ids == ["image-1"]
    assert first.observation == "OBSERVATION: image-1: <image>"
    assert last.action == {"name": "Terminate", "arguments": {"answer": "a cat"}} and last.action_name == "Terminate"
    assert last.observation is None and last.image_ids == [] and last.overlays == {}
    assert all(s.generation_s is None and s.tool_s is None and s.prompt_tokens is None for s in row.steps)
    assert [(i.image_id, i.role, i.step) for i in row.images] == [("image-0", "input", None), ("image-1", "tool", 1)]
    assert all(store.image_path(i).is_file() for i in row.images)
