"""Export to CoTA training rows and import back: round trip, determinism, corrections, safety, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taco_app.cota.parser import ParsedStep, parse
from taco_app.cota.traces import load_trace
from taco_app.cota.training import inference_text
from taco_app.store.db import Store
from taco_app.store.export import export
from taco_app.store.importer import import_jsonl, import_trace
from taco_app.store.schema import FeedbackRow, ImageRow

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(taco_home) -> Store:
    return Store(f"sqlite:///{taco_home / 'taco.db'}", taco_home / "images")


def _traces(reference: Path) -> list[Path]:
    return sorted((reference / "traces").glob("*.json"))


def _rows(folder: Path) -> list[dict]:
    """The rows of an export: ``data.json`` (one JSON array) or ``data.jsonl`` (one row a line)."""
    if (folder / "data.json").exists():
        return json.loads((folder / "data.json").read_text("utf-8"))
    return [json.loads(line) for line in (folder / "data.jsonl").read_text("utf-8").splitlines()]


def _provenance(folder: Path) -> dict[str, dict]:
    return {p["id"]: p for p in map(json.loads, (folder / "provenance.jsonl").read_text("utf-8").splitlines())}


def _texts(row: dict) -> list[tuple[str, str]]:
    """The row's turns as the model read them (the training rows' goal and part whitespace undone)."""
    if "conversation" in row:
        turns = [(m["role"], m["content"]) for m in row["conversation"]]
    else:
        turns = [({"human": "user", "gpt": "assistant"}[m["from"]], m["value"]) for m in row["conversations"]]
    return [(role, inference_text(text, first=i == 0) if role == "user" else text) for i, (role, text) in enumerate(turns)]


def _session_id(row_id: str) -> str:
    assert row_id.startswith("taco-studio-")
    return row_id[len("taco-studio-"):]


def _add_feedback(store: Store, session_id: str, **fields) -> None:
    with store.writing() as db:
        db.add(FeedbackRow(session_id=session_id, created_at=time.time(), **fields))


def _import_some(store: Store, reference: Path, n: int) -> list[str]:
    return [import_trace(store, path) for path in _traces(reference)[:n]]


def test_round_trip_of_the_reference_traces(store, reference, tmp_path):
    traces = _traces(reference)
    ids = [import_trace(store, path) for path in traces]
    assert len(ids) == 132
    for fmt in ("cota-mantis", "cota-llava"):
        out = tmp_path / fmt
        started = time.perf_counter()
        result = export(store, out, fmt)
        print(f"{fmt}: {result.count} rows in {time.perf_counter() - started:.2f}s")
        assert result.count == 132
        rows = _rows(out)
        assert len(rows) == 132
        for row in rows:
            images = row["images"] if fmt == "cota-mantis" else row["image"]
            texts = _texts(row)
            assert all(isinstance(parse(text), ParsedStep) for role, text in texts if role == "assistant")
            assert sum(text.count("<image>") for _, text in texts) == len(images)
            for rel in images:
                path = (out / rel).resolve()
                assert path.is_file() and path.is_relative_to(out.resolve())
        if fmt == "cota-llava":
            assert all(r["choice_list"] is None and r["metadata"]["dataset"] == "taco-studio" for r in rows)
    # The rebuilt conversations are the traces, turn for turn.
    by_id = {_session_id(row["id"]): row for row in _rows(tmp_path / "cota-mantis")}
    for session_id, path in zip(ids, traces):
        expected = [(t.role, t.text) for t in load_trace(path).turns]
        assert _texts(by_id[session_id]) == expected, path.name

    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed: the Hugging Face load check is skipped")
    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "cota-mantis" / "data.jsonl"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == 132


def test_our_export_imports_back(store, reference, tmp_path):
    _import_some(store, reference, 5)
    export(store, tmp_path / "a", "cota-mantis")
    other = Store(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "other-images")
    assert len(import_jsonl(other, tmp_path / "a" / "data.jsonl").imported) == 5
    export(other, tmp_path / "b", "cota-mantis")
    # The same rows, and each row's model comes back from the provenance sidecar.
    strip = lambda folder: sorted(json.dumps([r["conversation"], r["images"], r["metadata"], _provenance(folder)[r["id"]]["model"]])
                                  for r in _rows(folder))
    assert strip(tmp_path / "a") == strip(tmp_path / "b")
    assert {p["model"] for p in _provenance(tmp_path / "b").values()} == {"TACO-Llama3-SigLIP"}


def test_the_same_database_gives_the_same_bytes(store, reference, tmp_path):
    from taco_app.store.export import FORMATS

    _import_some(store, reference, 10)
    for fmt in (name for name, f in FORMATS.items() if not f.needs_judgments):  # the others: test_export_preferences
        export(store, tmp_path / f"{fmt}-1", fmt)
        export(store, tmp_path / f"{fmt}-2", fmt)
        first, second = ({p.relative_to(tmp_path / f"{fmt}-{n}"): p.read_bytes() for p in (tmp_path / f"{fmt}-{n}").rglob("*")
                          if p.is_file()} for n in (1, 2))
        assert first == second and len(first) >= 12  # every file: data, sidecar, card, images


def test_corrections_and_filters(store, reference, tmp_path):
    ids = _import_some(store, reference, 4)
    _add_feedback(store, ids[0], corrected_answer="forty-two")
    _add_feedback(store, ids[1], rating="up")
    _add_feedback(store, ids[2], rating="up")
    _add_feedback(store, ids[2], rating="down")  # the latest rating counts

    export(store, tmp_path / "all", "cota-mantis")
    rows = {_session_id(r["id"]): r for r in _rows(tmp_path / "all")}
    last = parse(rows[ids[0]]["conversation"][-1]["content"])
    assert last.action.as_dict() == {"name": "Terminate", "arguments": {"answer": "forty-two"}}
    assert '"answer":"forty-two"' in rows[ids[0]]["conversation"][-1]["content"]  # compact, as TACO writes
    provenance = _provenance(tmp_path / "all")
    assert provenance[f"taco-studio-{ids[0]}"]["corrections"] == {"answer": "forty-two", "steps": {}}
    assert provenance[f"taco-studio-{ids[2]}"]["rating"] == "down"

    assert [_session_id(r["id"]) for r in _rows(tmp_path / "all")] == ids  # (created_at, id) order: import order
    assert export(store, tmp_path / "corrected", "cota-mantis", corrected_only=True).count == 1
    assert [_session_id(r["id"]) for r in _rows(tmp_path / "corrected")] == [ids[0]]
    assert export(store, tmp_path / "up", "cota-llava", rating="up").count == 1
    assert [_session_id(r["sample_id"]) for r in _rows(tmp_path / "up")] == [ids[1]]
    assert export(store, tmp_path / "future", "cota-mantis", since="2999-01-01").count == 0
    assert export(store, tmp_path / "past", "cota-mantis", since="2000-01-01").count == 4
    # A dry run counts the same sessions and writes nothing (the export tab shows this count).
    assert export(store, None, "cota-llava", rating="up", dry_run=True).count == 1
    assert export(store, tmp_path / "dry", "cota-mantis", dry_run=True).count == 4 and not (tmp_path / "dry").exists()
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        export(store, tmp_path / "bad", "cota-mantis", since="01/02/2024")


def test_a_format_is_one_object_in_the_registry(store, reference, tmp_path, monkeypatch):
    """The exporter chooses, rebuilds and writes; a format only turns one session into one row."""
    from taco_app.store.export import FORMATS, ExportFormat, Sample

    class SessionIds(ExportFormat):
        name, like = "session-ids", "a list of session ids"

        def row(self, sample: Sample) -> dict:
            return {"id": sample.session.id, "turns": len(sample.turns), "images": sample.images}

    assert all(name == fmt.name for name, fmt in FORMATS.items())
    monkeypatch.setitem(FORMATS, "session-ids", SessionIds())
    ids = _import_some(store, reference, 2)
    assert export(store, tmp_path / "ids", "session-ids").count == 2
    rows = _rows(tmp_path / "ids")
    assert [r["id"] for r in rows] == ids and all(r["images"][0].startswith("images/") for r in rows)
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == ["README.md", "data.jsonl", "images", "provenance.jsonl"]
    assert "as `session-ids` training rows (like `a list of session ids`)" in (tmp_path / "ids" / "README.md").read_text()


def test_a_corrected_step_replaces_the_assistant_turn(store, reference, tmp_path):
    """A correction of the thought keeps the action, so the observation that follows is still its own."""
    (session_id,) = _import_some(store, reference, 1)
    original = parse(_rows_of(store, tmp_path)[0]["conversation"][1]["content"])
    fixed = {"thought": "Look closer.", "actions": [original.action.as_dict()]}
    _add_feedback(store, session_id, step=1, corrected_step=fixed)
    export(store, tmp_path / "out", "cota-mantis")
    (row,) = _rows(tmp_path / "out")
    assert row["conversation"][1]["content"] == json.dumps(fixed, separators=(",", ":"))


def _rows_of(store: Store, tmp_path: Path) -> list[dict]:
    export(store, tmp_path / "before", "cota-mantis")
    return _rows(tmp_path / "before")


def test_a_non_empty_folder_is_refused_unless_forced(store, reference, tmp_path):
    _import_some(store, reference, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export(store, out, "cota-mantis")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert export(store, out, "cota-mantis", force=True).count == 2


def test_an_image_path_outside_the_images_folder_is_refused(store, reference, tmp_path):
    (session_id,) = _import_some(store, reference, 1)
    with store.writing() as db:
        db.query(ImageRow).filter_by(session_id=session_id).update({"path": "../../x"})
    outside = tmp_path / "x"
    outside.write_bytes(b"secret")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="outside"):
        export(store, out, "cota-mantis")
    assert not out.exists()  # nothing was written, inside DIR or out of it
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_jsonl_row_cannot_pull_files_from_outside_its_folder(store, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    row = {"id": "x", "images": ["../secret.png"], "metadata": {},
           "conversation": [{"role": "user", "content": "image-0: <image>\nq"}, {"role": "assistant", "content": "{}"}]}
    (folder / "data.jsonl").write_text(json.dumps(row) + "\n")
    report = import_jsonl(store, folder / "data.jsonl")
    assert report.imported == [] and len(report.skipped) == 1 and "image path leaves" in report.skipped[0]


def test_the_command_line(reference, tmp_path):
    env = {**os.environ, "TACO_HOME": str(tmp_path / "home")}
    app = [sys.executable, str(ROOT / "app.py")]
    traces = _traces(reference)
    done = subprocess.run([*app, "import", str(traces[0]), str(traces[1])], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "imported 2 session(s)" in done.stdout
    out = tmp_path / "out"
    done = subprocess.run([*app, "export", "--format", "cota-llava", "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "exported 2 session(s)" in done.stdout and str(out / "data.json") in done.stdout
    assert len(_rows(out)) == 2
    done = subprocess.run([*app, "export", "--format", "cota-llava", "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*app, "export", "--format", "cota-mantis", "--out", str(tmp_path / "o2"), "--since", "yesterday"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "YYYY-MM-DD" in done.stderr
    mantis = tmp_path / "mantis"
    done = subprocess.run([*app, "export", "--format", "cota-mantis", "--out", str(mantis), "--dataset-name", "my-set"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0 and all(r["id"].startswith("my-set-") for r in _rows(mantis)), done.stderr
    assert {r["metadata"]["dataset"] for r in _rows(mantis)} == {"my-set"}
    done = subprocess.run([*app, "export", "--format", "cota-mantis", "--out", str(tmp_path / "o3"), "--dataset-name", "a b/c"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "--dataset-name" in done.stderr and not (tmp_path / "o3").exists()
    done = subprocess.run([*app, "import", str(mantis / "data.jsonl")], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "2 already stored" in done.stdout, done.stdout + done.stderr


# --- an export replaces the files of an earlier one whole, or not at all ------------------------


def _many_sessions(store: Store, n: int, start: int = 0) -> None:
    """``n`` finished one-step sessions (no images), written in one transaction: an export's bulk."""
    from taco_app.store.schema import SessionRow, StepRow

    answer = json.dumps({"thought": "I can answer now.", "actions": [{"name": "Terminate", "arguments": {"answer": "42"}}]},
                        separators=(",", ":"))
    with store.writing() as db:
        for k in range(start, start + n):
            session_id = f"s{k:06d}"
            db.add(SessionRow(id=session_id, created_at=1e9 + k, finished_at=1e9 + k, question=f"Question {k}: " + "why? " * 60,
                              backend="replay", model="m", family="mantis", tool_versions={}, status="finished", answer="42"))
            db.flush()
            db.add(StepRow(session_id=session_id, index=1, raw=answer, thought="I can answer now.",
                           action={"name": "Terminate", "arguments": {"answer": "42"}}, action_name="Terminate"))


def _child_env() -> dict[str, str]:
    """A child process reads this module's store: SQLite in TACO_HOME, whatever database other tests use."""
    return {name: value for name, value in os.environ.items() if name != "TACO_DB_URL"}


def _export_with_file_size_limit(tmp_path: Path, out: Path, limit: int, *, killed: bool) -> subprocess.CompletedProcess:
    """`app.py export --force` in a child that may write at most ``limit`` bytes into any one file.

    Past the limit the kernel sends SIGXFSZ. With ``killed`` the child takes the signal's default
    action and dies at that write, as under ``kill -9``: no Python code runs after it. Without,
    the signal stays ignored (Python's default) and the write fails with an error inside the process.
    """
    import resource
    import signal

    script = ("import signal, sys\n"
              + ("signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n" if killed else "")
              + "from taco_app.cli import main\n"
              + f"sys.exit(main(['export', '--format', 'cota-mantis', '--force', '--out', {str(out)!r}]))\n")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    assert signal.SIGXFSZ
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_child_env(), capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=120)


@pytest.fixture
def earlier_export(store, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """An export of 500 sessions, then 2,500 more sessions in the store: the next export is larger."""
    _many_sessions(store, 500)
    out = tmp_path / "out"
    assert export(store, out, "cota-mantis").count == 500
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _many_sessions(store, 2500, start=500)
    return out, before


def test_an_export_killed_mid_write_leaves_the_earlier_files_whole(earlier_export, tmp_path):
    import signal

    out, before = earlier_export
    limit = len(before["data.jsonl"]) * 2  # above the old data.jsonl and the card, below the new data.jsonl
    done = _export_with_file_size_limit(tmp_path, out, limit, killed=True)
    assert done.returncode == -signal.SIGXFSZ, done.stderr  # it really died in the middle of a write
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".tmp")}
    assert after == before  # the complete old files, never a cut one

    done = subprocess.run([sys.executable, "-c", "import sys; from taco_app.cli import main; "
                           f"sys.exit(main(['export', '--format', 'cota-mantis', '--force', '--out', {str(out)!r}]))"],
                          cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(_rows(out)) == 3000  # and the next export replaces them whole


def test_an_export_that_fails_mid_write_keeps_the_earlier_files_and_leaves_no_temp_file(earlier_export, tmp_path):
    out, before = earlier_export
    done = _export_with_file_size_limit(tmp_path, out, len(before["data.jsonl"]) * 2, killed=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error:") and "data.jsonl" in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file left beside them


# --- the export folder as the Hugging Face tooling reads it ---------------------------------------


@pytest.mark.parametrize("fmt", ["cota-mantis", "cota-llava", "trl-sft"])
def test_the_cards_loading_code_runs_as_written_and_the_folder_is_a_dataset_repository(store, reference, tmp_path, monkeypatch, fmt):
    """The card's ``datasets`` code loads every row with its images decoded; ``load_dataset(FOLDER)``
    reads the folder as a Hub dataset repository (its card's metadata names the data file)."""
    import re

    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed: the Hugging Face load check is skipped")
    from taco_app.store.export import FORMATS

    if fmt not in FORMATS:
        pytest.skip(f"{fmt} is not a format here")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    _import_some(store, reference, 3)
    out = tmp_path / "out"
    assert export(store, out, fmt).count == 3
    card = (out / "README.md").read_text("utf-8")
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", card, re.S) if "load_dataset" in block]
    scope: dict = {}
    exec(code.replace('"EXPORT"', repr(str(out))), scope)
    dataset = scope["dataset"]
    column = "image" if fmt == "cota-llava" else "images"
    assert dataset.num_rows == 3 and all(len(row[column]) >= 1 for row in dataset)
    picture = dataset[0][column][0]
    assert picture.size[0] > 0 and picture.convert("RGB").getpixel((0, 0)) is not None  # decoded from the file

    card_data = __import__("huggingface_hub").DatasetCard.load(out / "README.md").data
    assert card_data.license == "cc-by-nc-4.0" and card_data.configs[0]["data_files"][0]["path"] == FORMATS[fmt].data_file
    repository = datasets.load_dataset(str(out), split="train")
    assert repository.num_rows == 3


def test_push_to_hub_offline_fails_with_one_line_and_keeps_the_export(reference, tmp_path):
    env = {**os.environ, "TACO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    app = [sys.executable, str(ROOT / "app.py")]
    done = subprocess.run([*app, "import", str(_traces(reference)[0])], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    done = subprocess.run([*app, "export", "--format", "cota-mantis", "--out", str(out), "--push-to-hub", "me/taco-data"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "exported 1 session(s)" in done.stdout
    assert done.stderr.strip().splitlines() == [
        "error: cannot push to the Hugging Face Hub (me/taco-data): the Hub cannot be reached (offline?); "
        "the export is complete on disk: push it later"]
    assert len(_rows(out)) == 1
    # A repository id the Hub would refuse is refused before anything is exported.
    done = subprocess.run([*app, "export", "--format", "cota-mantis", "--out", str(tmp_path / "o2"), "--push-to-hub", "a/b/c"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "--push-to-hub needs a repository id" in done.stderr and not (tmp_path / "o2").exists()


def test_push_to_hub_without_a_network_says_so(tmp_path):
    """In the test process every connection off this machine fails (the network guard)."""
    from taco_app.store.export.hub import PushError, push_to_hub

    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    with pytest.raises(PushError, match=r"^cannot push to the Hugging Face Hub \(me/x\): the Hub cannot be reached"):
        push_to_hub(tmp_path, "me/x")
