"""QueryLanguageModel: ask the active TACO checkpoint a plain text question.

TACO's harness sent this action to a separate language model and fed back ``{'result': ...}``
(see trace TACO-Llama3-SigLIP-157 and the action spec). TACO Studio has no second model: the
backend that is running the session answers it with its own model (``Backend.language_model()``), which
the step loop passes in as ``language_model``. The replay backend only plays recorded outputs and has none, so
there the action fails with an error that says so, and the model sees TACO's failed-execution turn.
"""

from __future__ import annotations

from typing import Any

from taco_app.tools.base import TEXT, LanguageModel, Tool, ToolStatus

MAX_QUERY = 4000  # characters; a longer "question" is a runaway generation, not a question


class NoLanguageModel(RuntimeError):
    pass


class QueryLanguageModel(Tool):
    name = "QueryLanguageModel"
    inputs = {"query": TEXT}
    uses_language_model = True
    model_id = "the active TACO checkpoint (transformers or openai backend)"

    def status(self) -> ToolStatus:
        # Answered by the session's backend: only the transformers and openai backends have a model.
        return ToolStatus(self.model_id, "-", False, "run with a TACO model backend (transformers or openai)")

    def forward(self, query: str, language_model: LanguageModel | None = None) -> dict[str, Any]:
        query = query.strip()
        if not query:
            raise ValueError("QueryLanguageModel needs a non-empty query: the question to ask, "
                             "e.g. 'What is the capital of France?'")
        if len(query) > MAX_QUERY:
            raise ValueError(f"the query is {len(query)} characters long; QueryLanguageModel takes at most "
                             f"{MAX_QUERY}. Ask a shorter question.")
        if language_model is None:
            raise NoLanguageModel(
                "no language model loaded: the replay backend only plays recorded outputs, and QueryLanguageModel is "
                "answered by the active TACO checkpoint (run with the transformers or openai backend). "
                "Answer from what you already know, or use another action"
            )
        answer = language_model(query)
        if not isinstance(answer, str):
            raise TypeError(f"the language model returned {type(answer).__name__}, not text")
        return {"result": answer.strip()}
