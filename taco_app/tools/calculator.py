"""Calculate and SolveMathEquation on top of :mod:`taco_app.tools.safe_math` (no eval)."""

from __future__ import annotations

from typing import Any

from taco_app.tools.base import TEXT, Tool
from taco_app.tools.equations import solve_equation
from taco_app.tools.safe_math import calculate


class Calculate(Tool):
    name = "Calculate"
    inputs = {"expression": TEXT}
    model_id = "Python arithmetic on a parsed expression tree"

    def forward(self, expression: str) -> dict[str, Any]:
        return {"result": calculate(expression)}


class SolveMathEquation(Tool):
    name = "SolveMathEquation"
    inputs = {"query": TEXT}
    model_id = "sympy"

    def forward(self, query: str) -> dict[str, Any]:
        return {"result": solve_equation(query)}
