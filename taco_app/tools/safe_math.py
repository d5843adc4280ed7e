"""Safe arithmetic for the Calculate tool (``calculate``), and the whitelisted expression walk it
shares with equation solving (:mod:`taco_app.tools.equations`).

TACO's original ``Calculate`` tool ran Python ``eval`` on whatever text the model
wrote, so a model (or text injected into an image or web page it read) could run
arbitrary code, and innocent-looking input such as ``9**9**9**9`` could hang the
process.  Nothing here uses eval/exec/compile, ``sympy.sympify``/``parse_expr``
(both call eval) or pickle.  Input is parsed with ``ast.parse(mode="eval")``
(``parse_expression``) and the tree is walked by hand against an explicit whitelist
(``ExpressionWalker``: the ``OPERATORS``, ``FUNCTIONS`` and ``CONSTANTS`` below); the
size of every result is estimated *before* it is computed (``check_power_size``,
``limit_arguments``), so every refusal is instant.

``calculate`` evaluates with plain Python int/float operators and ``math``, so its
results match Python's own arithmetic digit for digit.  ``equations.solve_equation``
walks the same trees into sympy expressions.  There are no signal or thread timeouts,
so both are safe in any thread.

Errors: ``MathError`` (a ``ValueError``) with a message a language model can act
on, or Python's own ``ZeroDivisionError`` for division by zero.
"""
from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from collections.abc import Callable
from typing import Any

# calculate is the tool's; the rest is the parse-and-walk that equations.py builds on.
__all__ = ["MathError", "calculate", "CONSTANTS", "FUNCTIONS", "OPERATORS", "ExpressionWalker", "check_length",
           "check_power_size", "limit_arguments", "normalise", "parse_expression"]

MAX_CHARS = 2000          # longest expression/query accepted
MAX_NODES = 500           # expression nodes in one parsed expression
MAX_DEPTH = 50            # nesting depth (a chain of N binary operators is N deep)
MAX_INT_BITS = 10_000     # ~3000 decimal digits; bigger integer results are refused
MAX_FACT_ARG = 1000       # factorial/comb/perm argument limit


class MathError(ValueError):
    """The input was refused or could not be computed; the message says how to fix it."""


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _round(x: float, ndigits: int | None = None) -> int | float:
    if ndigits is None:
        return round(x)
    # round(n, -10**9) would compute 10**(10**9): bound ndigits first.
    if type(ndigits) is int and abs(ndigits) > 1000:
        raise MathError("round(): the number of digits must be between -1000 and 1000")
    return round(x, ndigits)


def limit_arguments(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (factorial, comb, perm) refusing arguments above MAX_FACT_ARG before computing."""
    def wrapper(*args: Any) -> Any:
        if any((type(a) is int or getattr(a, "is_Number", False)) and a > MAX_FACT_ARG for a in args):
            raise MathError(f"{fn.__name__}(): arguments above {MAX_FACT_ARG} are not allowed (too large a result)")
        return fn(*args)
    return wrapper


def _lcm(*args: int) -> int:
    if sum(a.bit_length() for a in args if type(a) is int) > MAX_INT_BITS:
        raise MathError(f"result too large: lcm() of these numbers could exceed {MAX_INT_BITS} bits")
    return math.lcm(*args)


# name -> (function, min args, max args or None for any number)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1), "cbrt": (math.cbrt, 1, 1), "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2), "ln": (math.log, 1, 1), "log10": (math.log10, 1, 1), "log2": (math.log2, 1, 1),
    "sin": (math.sin, 1, 1), "cos": (math.cos, 1, 1), "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1), "acos": (math.acos, 1, 1), "atan": (math.atan, 1, 1), "atan2": (math.atan2, 2, 2),
    "sinh": (math.sinh, 1, 1), "cosh": (math.cosh, 1, 1), "tanh": (math.tanh, 1, 1),
    "degrees": (math.degrees, 1, 1), "radians": (math.radians, 1, 1),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1), "trunc": (math.trunc, 1, 1),
    "abs": (abs, 1, 1), "fabs": (math.fabs, 1, 1), "round": (_round, 1, 2),
    "factorial": (limit_arguments(math.factorial), 1, 1), "comb": (limit_arguments(math.comb), 2, 2),
    "perm": (limit_arguments(math.perm), 1, 2),
    "gcd": (math.gcd, 1, None), "lcm": (_lcm, 1, None), "isqrt": (math.isqrt, 1, 1),
    "hypot": (math.hypot, 1, None), "min": (min, 2, None), "max": (max, 2, None),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_HELP = ("Calculate only supports numbers, + - * / // % ** (^ also means power), parentheses, "
         "the constants pi, e, tau and the functions " + ", ".join(FUNCTIONS))
# the binary operators allowed: ast operator type -> what computes it
OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_BITWISE = "bitwise operators and shifts (| & << >> ~)"
_REFUSED = {  # node or operator type -> how to name it in the error message
    ast.Attribute: "attribute access ('.')", ast.Subscript: "indexing ('[...]')", ast.Lambda: "'lambda'",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generators", ast.List: "lists", ast.Tuple: "tuples (commas)", ast.Set: "sets",
    ast.Dict: "dicts", ast.Compare: "comparisons", ast.BoolOp: "'and'/'or'", ast.IfExp: "'if ... else'",
    ast.NamedExpr: "':='", ast.JoinedStr: "f-strings", ast.Starred: "'*' unpacking", ast.Not: "'not'",
    ast.MatMult: "'@'", ast.BitOr: _BITWISE, ast.BitAnd: _BITWISE, ast.BitXor: _BITWISE, ast.LShift: _BITWISE,
    ast.RShift: _BITWISE, ast.Invert: _BITWISE, ast.Call: "calling anything but a named math function",
}


def normalise(text: str) -> str:
    """The text with the usual spellings of operators made Python's: ``^`` and ``×``, ``÷``, ``−``."""
    # TACO's prompts write x-2^3=0 and models write 830^2: '^' means power, never XOR.
    for old, new in (("^", "**"), ("×", "*"), ("÷", "/"), ("−", "-")):
        text = text.replace(old, new)
    return text.strip()


def check_length(text: str) -> None:
    """Refuse a text over MAX_CHARS before any work is done on it."""
    if len(text) > MAX_CHARS:
        raise MathError(f"expression is too long ({len(text)} characters; the limit is {MAX_CHARS})")


def parse_expression(text: str) -> ast.Expression:
    """ast.parse with parser failures turned into MathError and the tree size bounded."""
    try:
        with warnings.catch_warnings():  # "2x" warns "invalid decimal literal" before failing; say it once
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise MathError(f"could not parse the expression: {exc.msg} (at column {exc.offset}). {_HELP}") from None
    except (RecursionError, MemoryError, ValueError) as exc:  # too deep for the parser, NUL bytes
        raise MathError(f"could not parse the expression: {exc or 'too complex'}") from None
    stack, count = [(tree.body, 1)], 0  # iterative: a deep tree must not recurse here
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise MathError(f"expression is too complex (more than {MAX_NODES} parts); "
                            "split it into smaller calculations")
        if depth > MAX_DEPTH:
            raise MathError(f"expression is nested too deeply or chains too many operators (limit {MAX_DEPTH}); "
                            "split it into smaller calculations")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))
    return tree


def _literal(value: object) -> int | float:
    if type(value) is int:
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise MathError("number too large: literals beyond the float range (about 1.8e308) are not allowed")
        return value
    kind = {bool: "True/False", complex: "complex numbers ('j')", str: "text strings", bytes: "bytes"}
    raise MathError(f"not allowed: {kind.get(type(value), repr(value))}. {_HELP}")


def _checked(value: object) -> int | float:
    """Accept only finite floats and ints below MAX_INT_BITS as (intermediate) results."""
    if type(value) is int:
        if value.bit_length() > MAX_INT_BITS:
            raise MathError(f"result too large: an integer of about {int(value.bit_length() * 0.30103)} digits "
                            f"(the limit is about {int(MAX_INT_BITS * 0.30103)})")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise MathError("result too large: the calculation overflowed the float range (about 1.8e308)")
        return value
    if isinstance(value, complex):
        raise MathError("the result is a complex number (e.g. a negative number to a fractional power); "
                        "only real results are supported")
    raise MathError(f"unexpected result of type {type(value).__name__}")


def check_power_size(base: Any, exp: Any, max_bits: int) -> None:
    """Refuse base**exp if the exact result would need more than max_bits bits."""
    try:
        size = max(abs(base.p), abs(base.q)) if hasattr(base, "q") else abs(base)  # sympy Rational or int
        power = abs(exp)
    except TypeError:
        return
    if type(size) is int and size > 1 and power > 1 and (power > 2**32 or float(power) * math.log2(size) > max_bits):
        raise MathError(f"result too large: the power would have more than {max_bits} bits "
                        f"(about {int(max_bits * 0.30103)} digits)")


def _math_attr(node: ast.AST) -> bool:
    """math.sqrt / math.pi are accepted as spellings of sqrt / pi; no other attribute is."""
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "math" and (node.attr in FUNCTIONS or node.attr in CONSTANTS))


class ExpressionWalker:
    """Whitelisted walk of a parsed expression: anything not listed here raises MathError.

    Subclasses define number(value), name(name), binop(op, left, right) and call(name, args):
    ``_PythonArithmetic`` below computes the value, ``equations._SympyBuilder`` builds a sympy expression.
    """

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            return self.number(_literal(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.visit(node.operand)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return self.binop(node.op, self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.Name) or _math_attr(node):
            return self.name(node.id if isinstance(node, ast.Name) else node.attr)
        if isinstance(node, ast.Call) and (isinstance(node.func, ast.Name) or _math_attr(node.func)):
            return self._call(node)
        raise MathError(f"not allowed: {self._describe(node)}. {_HELP}")

    def _call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        if name not in FUNCTIONS:
            raise MathError(f"unknown function {name!r}. {_HELP}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise MathError(f"{name}(): pass arguments by position, without keywords or '*'")
        _, low, high = FUNCTIONS[name]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            want = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise MathError(f"{name}() takes {want} argument(s), got {len(node.args)}")
        return self.call(name, [self.visit(arg) for arg in node.args])

    @staticmethod
    def _describe(node: ast.AST) -> str:
        return _REFUSED.get(type(getattr(node, "op", None))) or _REFUSED.get(type(node), repr(type(node).__name__))


class _PythonArithmetic(ExpressionWalker):
    """Evaluates with Python's own int/float operators and math, after size checks."""

    def number(self, value: int | float) -> int | float:
        return value

    def name(self, name: str) -> float:
        if name in CONSTANTS:
            return CONSTANTS[name]
        raise MathError(f"unknown name {name!r}: calculate has no variables; to find an unknown, "
                        f"solve an equation instead (e.g. 'x - 8 = 0, what is x?'). {_HELP}")

    def binop(self, op: ast.operator, left: Any, right: Any) -> int | float:
        if isinstance(op, ast.Pow) and type(left) is int and type(right) is int and right > 0:
            check_power_size(left, right, MAX_INT_BITS)
        if (isinstance(op, ast.Mult) and type(left) is int and type(right) is int
                and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1):
            raise MathError(f"result too large: the product would have more than {MAX_INT_BITS} bits")
        return _checked(OPERATORS[type(op)](left, right))

    def call(self, name: str, args: list[Any]) -> int | float:
        try:
            return _checked(FUNCTIONS[name][0](*args))
        except MathError:
            raise
        except (ValueError, TypeError) as exc:
            hint = " (the argument is outside the function's domain, e.g. sqrt or log of a negative number)" \
                if "domain" in str(exc) else ""
            raise MathError(f"{name}() failed: {exc}{hint}") from None


_PYTHON = _PythonArithmetic()


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression the way Python would, without eval/exec.

    ``^`` means power.  TACO's original tool used Python eval, where
    ``0.5 * 830^2`` raised "TypeError: unsupported operand type(s) for ^: 'float'
    and 'int'"; here it returns 344450.0, which is what the model meant (TACO's own
    prompts write powers as ``x-2^3=0``).  A trailing ``=`` or ``= ?`` is dropped.
    Results are exactly Python's (``3.60 - 3.49`` -> 0.10999999999999988).
    Raises MathError (a ValueError) for anything refused, too large or not real,
    and ZeroDivisionError for division by zero.
    """
    if not isinstance(expression, str):
        raise MathError(f"the expression must be a string, not {type(expression).__name__}")
    check_length(expression)
    text = re.sub(r"\s*=\s*\?*\s*$", "", normalise(expression))
    if not text:
        raise MathError(f"the expression is empty. {_HELP}")
    tree = parse_expression(text)
    try:
        return _checked(_PYTHON.visit(tree))
    except OverflowError as exc:  # float overflow, or an int too large to convert to float
        raise MathError(f"result too large: {exc}") from None
