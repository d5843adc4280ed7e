"""QueryLanguageModel: answered by the backend's own model, TACO's ``{'result': ...}``, and a
clear failed-execution turn when the backend (replay) has no language model."""

from __future__ import annotations

import json

import pytest

from taco_app.backends import ReplayBackend
from taco_app.cota import events as ev
from taco_app.tools import default_tools
from taco_app.tools.language import MAX_QUERY, NoLanguageModel, QueryLanguageModel
from tests.conftest import of_kind, run_session

ASK = json.dumps({"thought": "ask", "actions": [{"name": "QueryLanguageModel", "arguments": {"query": "How to cook sushi?"}}]})
TERMINATE = json.dumps({"thought": "done", "actions": [{"name": "Terminate", "arguments": {"answer": "rice"}}]})


def call(arguments, language_model):
    return QueryLanguageModel()(arguments, lambda _id: None, language_model=language_model)


def test_answer_comes_from_the_language_model():
    asked = []
    result = call({"query": "What is the capital of France?"}, lambda q: asked.append(q) or "Paris.")
    assert result.output == {"result": "Paris."}
    assert asked == ["What is the capital of France?"]


def test_no_language_model_is_a_clear_error():
    with pytest.raises(NoLanguageModel, match="^no language model loaded: the replay backend only plays recorded outputs"):
        call({"query": "What is the capital of France?"}, None)


def test_query_is_bounded():
    with pytest.raises(ValueError, match=f"at most {MAX_QUERY}"):
        call({"query": "x" * (MAX_QUERY + 1)}, lambda q: "never asked")
    with pytest.raises(ValueError, match="non-empty"):
        call({"query": "  "}, lambda q: "never asked")


def test_query_must_be_text():
    with pytest.raises(TypeError):
        call({"query": {"nested": "dict"}}, lambda q: "never asked")


def test_replay_backend_gives_tacos_failed_turn():
    events = run_session([ASK, TERMINATE], tools=default_tools().replace(QueryLanguageModel()))
    (observation,) = of_kind(events, ev.Observation)
    assert observation.observation.startswith("Execution failed with <class 'RuntimeError'>: no language model loaded")
    assert observation.output is None
    assert of_kind(events, ev.Finished)[0].status == "finished"  # the model goes on and terminates


class TalkingReplay(ReplayBackend):
    """A replay backend whose checkpoint can also answer plain text (as transformers/openai do)."""

    def language_model(self):
        return lambda prompt: f"An answer to: {prompt}"


def test_a_backend_with_a_language_model_answers(tmp_path):
    from taco_app.runner import run
    from taco_app.store.files import ImageFiles

    events = list(run("Q?", [], TalkingReplay([ASK, TERMINATE]), sink=ImageFiles(tmp_path),
                      tools=default_tools().replace(QueryLanguageModel())))
    (observation,) = of_kind(events, ev.Observation)
    assert observation.output == {"result": "An answer to: How to cook sushi?"}
    assert observation.observation.startswith("OBSERVATION:\n{'result': 'An answer to: How to cook sushi?'}")
