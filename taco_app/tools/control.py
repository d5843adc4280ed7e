"""Terminate: the action that ends a session with the final answer.

The step loop ends the session on a ``Terminate`` that has an answer, so this tool never runs; it is
here to be listed with the others, and so that a ``Terminate`` without an answer is checked like any
call: the model is told the argument is missing.
"""

from __future__ import annotations

from taco_app.tools.base import Tool


class Terminate(Tool):
    name = "Terminate"
    inputs = {"answer": "any"}
