"""Terminate: the action that ends a session with the final answer."""

from __future__ import annotations

from typing import Any

from taco_app.tools.base import Tool


class Terminate(Tool):
    name = "Terminate"
    inputs = {"answer": "any"}

    def forward(self, answer: Any) -> dict[str, Any]:
        return {"answer": answer}
