"""A backend is one module and one entry in BACKENDS; an export format is one module and one entry in
FORMATS. The command line and the Export tab find both there, with nothing else to edit."""

from __future__ import annotations

import json

import gradio as gr

from taco_app import cli
from taco_app.backends import BACKENDS, BackendKind
from taco_app.cota.actions import Action, step_text
from taco_app.cota.backend import Backend
from taco_app.store.db import Store
from taco_app.store.export import FORMATS, ExportFormat, Sample


class Echo(Backend):
    """A backend that answers every question with the text after ``echo:``."""

    name = "echo"

    def __init__(self, answer: str):
        self.model_id = f"echo:{answer}"
        self.answer = answer

    def stream(self, prompt, images):
        yield step_text("Saying it.", Action("Terminate", {"answer": self.answer}))


class Questions(ExportFormat):
    name, like = "questions", "one question per row"

    def row(self, sample: Sample) -> dict:
        return {"question": sample.session.question}


def _option(parser, command: str, dest: str):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest)


def test_a_registered_backend_runs_from_the_command_line(monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "echo", BackendKind("echo:TEXT", "answers TEXT", lambda arg, options: Echo(arg)))
    assert "echo:TEXT: answers TEXT" in " ".join(_option(cli.build_parser(), "run", "backend").help.split())

    assert cli.main(["run", "--question", "Say hi", "--backend", "echo:hi", "--json"]) == 0
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (final["type"], final["answer"], final["status"]) == ("final", "hi", "finished")
    trace = Store.open().get_session(final["session_id"])
    assert (trace.backend, trace.model) == ("echo", "echo:hi")


def test_a_registered_format_is_offered_by_the_command_line_and_the_export_tab(monkeypatch, tmp_path, capsys):
    from taco_app.ui.app import build_app
    from taco_app.ui.studio import Studio

    monkeypatch.setitem(FORMATS, "questions", Questions())
    assert "questions" in _option(cli.build_parser(), "export", "format").choices
    with build_app(Studio(Store.open(), probe=False)) as app:
        radios = [c for c in app.blocks.values() if isinstance(c, gr.Radio) and c.elem_id == "export-format"]
    assert [choice for choice, _ in radios[0].choices] == list(FORMATS)

    monkeypatch.setitem(BACKENDS, "echo", BackendKind("echo:TEXT", "answers TEXT", lambda arg, options: Echo(arg)))
    assert cli.main(["run", "--question", "Say hi", "--backend", "echo:hi"]) == 0
    assert cli.main(["export", "--format", "questions", "--out", str(tmp_path / "out")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert rows == [{"question": "Say hi"}]
