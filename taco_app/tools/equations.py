"""Equation solving for SolveMathEquation: TACO-style queries such as ``"x-2^3=0, what is x?"``.

The query is cut into math runs; each equation is parsed and walked by the whitelist of
:mod:`taco_app.tools.safe_math` (``parse_expression``, ``ExpressionWalker``) and built into a sympy
expression (never ``sympify``/``parse_expr``, which call eval). ``sympy.solve`` cannot be
interrupted, so the size, degree, number of unknowns and kinds of terms are bounded up front
(``_check_solvable``); inputs past those bounds are refused with a message saying how to simplify.
Errors: ``MathError`` (a ``ValueError``) with a message a language model can act on, or
``ZeroDivisionError``.
"""
from __future__ import annotations

import ast
import fractions
import math
import re
from itertools import pairwise
from collections.abc import Callable
from typing import Any

from taco_app.tools.safe_math import (CONSTANTS, FUNCTIONS, OPERATORS, ExpressionWalker, MathError, calculate,
                                      check_length, check_power_size, limit_arguments, normalise, parse_expression)

__all__ = ["solve_equation"]

MAX_SYMPY_BITS = 1024     # sympy factors numbers in sqrt() etc.; keep them small
MAX_DEGREE = 10           # polynomial degree limit for solve_equation
MAX_UNKNOWNS = 5          # unknowns / equations in one system
MAX_DEGREE_MULTI = 4      # degree limit once there are several unknowns
MAX_BEZOUT = 4            # product of the degrees in a nonlinear system (beyond it sympy can take minutes)

_VAR_RE = re.compile(r"[A-Za-z](?:_?[0-9]+)?")  # unknowns: single letters, optionally x1 / x_1
_TOKEN_RE = re.compile(r"(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
                       r"|(?P<op>\*\*|//|[-+*/%()=,])|(?P<space>\s+)|(?P<other>.)", re.DOTALL)
_TARGET_RE = re.compile(r"\b(?:what\s+(?:is|are|was|were)|find|for|of|determine|calculate|compute)\s+(?:the\s+)?"
                        r"(?:(?:values?|solutions?)\s+(?:of|for)\s+)?"
                        r"([A-Za-z](?:_?[0-9]+)?(?:\s*(?:,|&|\band\b)\s*[A-Za-z](?:_?[0-9]+)?)*)\b", re.IGNORECASE)


def _is_math_name(word: str) -> bool:
    return word in FUNCTIONS or word in CONSTANTS or bool(_VAR_RE.fullmatch(word))


def _math_runs(text: str) -> list[str]:
    """Maximal stretches of math in a query; prose words, '?', ';' and top-level commas end one.

    Implicit multiplication is made explicit on the way: 2x -> 2*x, 2(x+1) -> 2*(x+1),
    (x+1)(x-1) -> (x+1)*(x-1), x(x+1) -> x*(x+1); function calls like sin(x) are left alone.
    """
    runs: list[str] = []
    current: list[str] = []
    prev: tuple[str, str] | None = None  # last non-space token of the current run
    depth = 0
    for match in _TOKEN_RE.finditer(text):
        kind, tok = match.lastgroup or "other", match.group()
        mathy = kind in ("num", "op", "space") or (kind == "name" and _is_math_name(tok))
        if not mathy or (tok == "," and depth == 0):
            runs.append("".join(current).strip())
            current, prev, depth = [], None, 0
            continue
        depth = depth + 1 if tok == "(" else max(0, depth - 1) if tok == ")" else depth
        if kind == "space":
            current.append(tok)
            continue
        if prev is not None:
            ends_factor = prev[0] == "num" or prev[1] == ")" or (prev[0] == "name" and prev[1] not in FUNCTIONS)
            starts_factor = kind == "name" or tok == "(" or (kind == "num" and prev[1] == ")")
            if ends_factor and starts_factor:
                current.append("*")
        current.append(tok)
        prev = (kind, tok)
    runs.append("".join(current).strip())
    return [run for run in runs if run]


def _has_unknowns(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id not in CONSTANTS and n.id not in FUNCTIONS for n in ast.walk(tree))


def _degree(node: ast.AST) -> float:
    """Upper bound on an expression's polynomial degree, found before sympy sees it."""
    if isinstance(node, ast.Name):
        return 0 if node.id in CONSTANTS else 1
    if isinstance(node, ast.UnaryOp):
        return _degree(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = _degree(node.left), _degree(node.right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return max(left, right)
        if isinstance(node.op, ast.Pow) and left and not right:
            power = abs(calculate(ast.unparse(node.right)))  # numeric exponent, e.g. x**3
            if power > MAX_DEGREE:
                raise MathError(f"the equation's degree is too high (the limit is {MAX_DEGREE})")
            return left * power
        return left + right  # products; also clearing denominators and 2**x-style terms
    if isinstance(node, ast.Call):
        return sum(_degree(arg) for arg in node.args)
    return 0


def _hard_terms(node: ast.AST, found: dict[str, set[Any]], in_trans: bool = False, in_hard: bool = False) -> None:
    """Collect, before sympy starts, the terms of an equation that are not polynomial in the unknowns.

    found["trans"]: transcendental terms (sin(x), 2**x, x // 2, ...); found["alg"]: roots (sqrt(x),
    x**0.5) and found["denominators"] their root orders; found["in_trans"] / found["out_trans"] /
    found["out_hard"]: unknowns seen inside / outside transcendental terms and outside all such terms.
    """
    if isinstance(node, ast.Name) and node.id not in CONSTANTS and node.id not in FUNCTIONS:
        found["in_trans" if in_trans else "out_trans"].add(node.id)
        if not in_hard:
            found["out_hard"].add(node.id)
    kind = None
    if isinstance(node, (ast.Call, ast.BinOp)) and _has_unknowns(node):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", "")
            kind = "alg" if name in ("sqrt", "cbrt") else "trans"
            root = 2 if name == "sqrt" else 3
        elif isinstance(node.op, (ast.FloorDiv, ast.Mod)) or (
                isinstance(node.op, ast.Pow) and _has_unknowns(node.right)):
            kind = "trans"
        elif isinstance(node.op, ast.Pow) and type(power := calculate(ast.unparse(node.right))) is not int:
            kind, root = "alg", fractions.Fraction(power).limit_denominator(1000).denominator
        if kind == "alg":
            found["denominators"].add(root)
    if kind:
        found[kind].add(ast.unparse(node))
    for child in ast.iter_child_nodes(node):
        _hard_terms(child, found, in_trans or kind == "trans", in_hard or kind is not None)


def _check_solvable(pairs: list[tuple[ast.Expression, ast.Expression]], degree: float) -> bool:
    """Refuse the shapes where sympy.solve can run for minutes; True if the equation is not polynomial.

    Measured with sympy 1.14: one function of the unknown (sin(x)^2 + sin(x) = 1/2, 2^x = 8,
    sqrt(x+5) = x - 1) solves in well under a second, but two different ones (tan(x)*sin(x) = 1),
    a high power of one (exp(x)^10 + exp(x) = 5), roots mixed with powers (x^2 - x^(1/5) = 1,
    x^0.3 + x^0.7 = 2) or several unknowns can run for minutes; x + sin(x) = 1 has no closed form.
    """
    keys = ("trans", "alg", "denominators", "in_trans", "out_trans", "out_hard")
    found: dict[str, set[Any]] = {key: set() for key in keys}
    for pair in pairs:
        for side in pair:
            _hard_terms(side.body, found)
    hard = found["trans"] | found["alg"]
    if not hard:
        return False
    mixed = found["in_trans"] & found["out_trans"]
    if mixed:
        raise MathError(f"{', '.join(sorted(mixed))} appears both inside and outside a function such as sin or exp "
                        "(or an exponent); such equations have no closed-form solution here")
    unknowns = found["out_trans"] | found["in_trans"]
    if (len(pairs) > 1 or len(unknowns) > 1 or len(found["trans"]) > 1 or len(hard) > 2 or degree > 2
            or ((len(hard) > 1 or found["out_hard"]) and max(found["denominators"], default=2) > 3)
            or (found["out_hard"] and (len(hard) > 1 or degree > 1))):
        raise MathError("this equation is too complex to solve exactly; supported: polynomial equations and "
                        "systems, or one equation in one unknown with one function of it (sin, exp, 2^x, ...) "
                        "or up to two square/cube roots, degree at most 2 (at most 1 when the unknown is also "
                        "outside the root)")
    return True


class _SympyBuilder(ExpressionWalker):
    """Builds a sympy expression; floats become exact rationals (0.5 -> 1/2)."""

    def __init__(self) -> None:
        import sympy  # imported lazily so calculate() works without sympy installed
        self.sp = sympy
        def log(x: Any, base: Any = None) -> Any:
            return sympy.log(x) if base is None else sympy.log(x, base)

        self.funcs: dict[str, Callable[..., Any]] = {
            "sqrt": sympy.sqrt, "cbrt": sympy.cbrt, "exp": sympy.exp, "log": log, "ln": sympy.log,
            "log10": lambda x: sympy.log(x, 10), "log2": lambda x: sympy.log(x, 2),
            "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "asin": sympy.asin, "acos": sympy.acos,
            "atan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
            "degrees": lambda x: x * 180 / sympy.pi, "radians": lambda x: x * sympy.pi / 180,
            "floor": sympy.floor, "ceil": sympy.ceiling, "abs": sympy.Abs, "fabs": sympy.Abs,
            "factorial": limit_arguments(sympy.factorial), "hypot": lambda *a: sympy.sqrt(sum(x**2 for x in a)),
            "min": sympy.Min, "max": sympy.Max,
        }

    def _checked(self, value: Any) -> Any:
        if getattr(value, "is_Rational", False) and max(abs(value.p), value.q).bit_length() > MAX_SYMPY_BITS:
            raise MathError(f"number too large for the equation solver (limit {MAX_SYMPY_BITS} bits)")
        return value

    def number(self, value: int | float) -> Any:
        return self._checked(self.sp.Integer(value) if type(value) is int else self.sp.Rational(repr(value)))

    def name(self, name: str) -> Any:
        constants = {"pi": self.sp.pi, "e": self.sp.E, "tau": 2 * self.sp.pi}
        if name in constants:
            return constants[name]
        if not _VAR_RE.fullmatch(name):
            raise MathError(f"unknowns must be single letters such as x or x1, not {name!r}")
        return self.sp.Symbol(name)

    def binop(self, op: ast.operator, left: Any, right: Any) -> Any:
        if isinstance(op, ast.Pow) and left.is_Number and right.is_Number:
            check_power_size(left, right, MAX_SYMPY_BITS)
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise ZeroDivisionError("division by zero")
        if isinstance(op, ast.FloorDiv):
            return self._checked(self.sp.floor(left / right))
        if isinstance(op, ast.Mod):
            return self._checked(self.sp.Mod(left, right))
        return self._checked(OPERATORS[type(op)](left, right))

    def call(self, name: str, args: list[Any]) -> Any:
        if name not in self.funcs:
            raise MathError(f"{name}() is not supported inside equations; compute that part with calculate first")
        if not any(arg.free_symbols for arg in args):  # exp(10^300) would keep sympy's evalf busy for minutes
            try:
                FUNCTIONS[name][0](*(float(arg) for arg in args))
            except OverflowError:
                raise MathError(f"result too large: {name}() of these numbers overflows") from None
            except (TypeError, ValueError):
                pass  # complex or outside the real domain: sympy handles those exactly
        return self._checked(self.funcs[name](*args))


def _numeric(value: Any) -> tuple[float, float] | None:
    """(real part, imaginary part) of a constant sympy value, or None if it has none."""
    import sympy
    try:
        real_part, imag_part = (float(part) for part in sympy.N(value, 30).as_real_imag())
    except (TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(real_part) and math.isfinite(imag_part)):
        return None
    # sympy often cannot decide realness of Cardano-style radicals; a 30-digit evaluation can.
    return real_part, (0.0 if abs(imag_part) <= 1e-12 * max(1.0, abs(real_part)) else imag_part)


def _format_value(value: Any) -> tuple[str, bool]:
    """('8' | '5/2 (2.5)' | 'sqrt(2) (1.41421356237)' | decimals for long or inexact forms, is it real)."""
    import sympy
    exact = str(value)
    number = None if value.free_symbols else _numeric(value)
    if number is None:
        return exact, value.is_real is not False
    real_part, imag_part = number
    if all(part.is_Rational for part in value.as_real_imag()) and (imag_part or value.is_Integer):
        return exact, not imag_part  # 8, -I, 1 + 2*I: a decimal would add nothing
    decimal = f"{real_part:.12g}" + (f" {'-' if imag_part < 0 else '+'} {abs(imag_part):.12g}*I" if imag_part else "")
    if value.has(sympy.Float) or len(exact) > 60:  # a model can use a decimal; a page of radicals it cannot
        return decimal, not imag_part
    return (exact if exact == decimal else f"{exact} ({decimal})"), not imag_part


def _polynomial_roots(polynomial: Any, unknown: Any) -> list[dict[Any, Any]]:
    """Roots of one polynomial in one unknown: closed forms if sympy finds them all, else decimals.

    Used instead of sympy.solve, which took 5 s on x^10 + 12345678901x^7 - 3x + 1 = 0.
    """
    import sympy
    poly = sympy.Poly(polynomial, unknown)
    roots = sympy.roots(poly)
    found = list(roots)
    if sum(roots.values()) < poly.degree():
        try:
            found = list(dict.fromkeys(poly.nroots(n=15, maxsteps=200)))
        except Exception as exc:  # mpmath.NoConvergence and friends
            raise MathError(f"could not find the roots numerically: {exc}") from None

    def order(root: Any) -> tuple[bool, float, float]:  # real roots first, ascending
        real_part, imag_part = _numeric(root) or (0.0, 0.0)
        return imag_part != 0, real_part, imag_part

    found.sort(key=order)
    return [{unknown: root} for root in found]


def _sympy_equations(pairs: list[tuple[ast.Expression, ast.Expression]]) -> tuple[list[Any], list[int], bool] | str:
    """(sympy equations as expressions = 0, their degrees, whether non-polynomial), or a final answer."""
    builder = _SympyBuilder()
    sp = builder.sp
    all_degrees = [max(_degree(left.body), _degree(right.body)) for left, right in pairs]
    if max(all_degrees) > MAX_DEGREE:
        raise MathError(f"the equation's degree is too high ({max(all_degrees):g}; the limit is {MAX_DEGREE})")
    hard = _check_solvable(pairs, max(all_degrees))
    equations, degrees = [], []
    for (left, right), degree in zip(pairs, all_degrees, strict=True):
        lhs, rhs = builder.visit(left), builder.visit(right)
        if lhs.has(sp.zoo, sp.nan, sp.oo) or rhs.has(sp.zoo, sp.nan, sp.oo):
            raise MathError("the equation contains an undefined value (e.g. division by zero or log(0))")
        equation = sp.Eq(lhs, rhs)
        if equation is sp.false:
            return "no solution"
        if equation is not sp.true and sp.expand(lhs - rhs) != 0:  # else an identity: true for every value
            equations.append(lhs - rhs)
            degrees.append(max(1, math.ceil(degree)))
    return equations, degrees, hard


def _format_solutions(solutions: list[dict[Any, Any]], targets: list[Any], exact: bool) -> str:
    real, complex_ = [], []
    for solution in solutions:
        values = {s: _format_value(solution[s]) for s in targets if s in solution}
        text = ", ".join(f"{s} = {shown}" for s, (shown, _) in values.items())
        free = [str(s) for s in targets if s not in solution]
        if free:
            text += f" (infinitely many solutions; {', '.join(free)} can be any value)"
        (real if all(is_real for _, is_real in values.values()) else complex_).append(text)
    if real:
        return " or ".join(real) + (f" (complex solutions: {' or '.join(complex_)})" if complex_ else "")
    if complex_:
        return "no real solution; complex solutions: " + " or ".join(complex_)
    # sympy returns [] both for "none exists" and for some nonlinear systems it cannot solve.
    return "no solution" if exact else "no solution found (there may be none, or none in closed form)"


def _solve(pairs: list[tuple[ast.Expression, ast.Expression]], query: str) -> str:
    import sympy
    if len(pairs) > MAX_UNKNOWNS:
        raise MathError(f"too many equations ({len(pairs)}; the limit is {MAX_UNKNOWNS})")
    built = _sympy_equations(pairs)
    if isinstance(built, str):
        return built
    equations, degrees, hard = built
    if not equations:
        return "infinitely many solutions: the equation holds for every value"
    unknowns = sorted(set().union(*(eq.free_symbols for eq in equations)), key=str)
    if len(unknowns) > MAX_UNKNOWNS or len(equations) > MAX_UNKNOWNS:
        raise MathError(f"too many unknowns or equations (the limit is {MAX_UNKNOWNS} of each)")
    if len(unknowns) > 1 and max(degrees) > MAX_DEGREE_MULTI:
        raise MathError(f"with several unknowns the degree limit is {MAX_DEGREE_MULTI}; simplify the equations")
    if len(equations) > 1 and math.prod(degrees) > MAX_BEZOUT:
        raise MathError("this system of equations is too complex; simplify it or solve it step by step")
    wanted = {name for match in _TARGET_RE.finditer(query) for name in re.split(r"\s*(?:,|&|\band\b)\s*", match[1])}
    targets = [s for s in unknowns if str(s) in wanted] or unknowns
    denominators: list[Any] = []
    if not hard:  # polynomial/rational: solve the numerators; sympy's own checking can take minutes
        fractions = [sympy.fraction(sympy.cancel(sympy.together(eq))) for eq in equations]
        equations, denominators = [n for n, _ in fractions], [d for _, d in fractions if not d.is_Number]
    try:
        if not hard and len(equations) == 1 and len(unknowns) == 1:
            solutions = _polynomial_roots(equations[0], unknowns[0])
        else:  # one equation is passed bare: sympy drops CRootOf solutions of a 1-element list
            solutions = sympy.solve(equations[0] if len(equations) == 1 else equations, targets, dict=True, check=hard)
    except MathError:
        raise
    except Exception as exc:  # sympy raises many exception types (NotImplementedError, PolynomialError, ...)
        raise MathError(f"could not solve the equation: {type(exc).__name__}: {exc}") from None
    solutions = [sol for sol in solutions if not any(d.subs(sol) == 0 for d in denominators)]
    return _format_solutions(solutions, targets, not hard and (len(equations) == 1 or max(degrees) == 1))


def solve_equation(query: str) -> str:
    """Solve a TACO-style query such as "x-2^3=0, what is x?" and return "x = 8".

    Output formats:
      one solution            "x = 8"
      several solutions       "x = -2 or x = 2"   (alternatives are joined with " or ")
      systems                 "x = 6, y = 4"       (variables of one solution joined with ", ")
      non-integers            "x = 5/2 (2.5)", "x = sqrt(2) (1.41421356237)"
      complex only            "no real solution; complex solutions: x = -I or x = I"
      none / every value      "no solution" / "infinitely many solutions: ..."
      no unknown ("2+2=?")    "4" (computed by calculate)
    ``^`` is power, implicit multiplication (2x, 2(x+1)) is understood, an expression
    without '=' ("x^2 - 4, solve for x") is set to 0, and the unknowns come from
    "what is x" / "for x" / "find x", else all letters in the equations (unknowns are
    single letters, optionally with digits: x, y, x1; e and pi are the constants).
    Limits, checked before sympy runs: polynomial degree 10 (4 with several unknowns),
    5 equations/unknowns, nonlinear systems with a degree product of at most 4, and one
    equation in one unknown when sin/exp/2^x/roots are involved.
    Raises MathError (a ValueError) or ZeroDivisionError.
    """
    if not isinstance(query, str):
        raise MathError(f"the query must be a string, not {type(query).__name__}")
    check_length(query)
    text = normalise(query).replace("==", "=")
    equations: list[tuple[ast.Expression, ast.Expression]] = []
    questions: list[str] = []  # "2 + 2 = ?" -> just compute it
    bare: list[str] = []  # math without '=' ("x^2 - 4")
    for run in _math_runs(text):
        parts = [part.strip() for part in run.split("=")]
        while len(parts) > 1 and not parts[-1]:
            parts.pop()
        if len(parts) > 1 and all(parts):
            equations += [(parse_expression(a), parse_expression(b)) for a, b in pairwise(parts)]
        elif len(parts) == 1 and parts[0] and (run.endswith("=") or re.search(r"[-+*/%(]", run)):
            (questions if run.endswith("=") else bare).append(parts[0])
    if not equations and not questions:
        for expression in bare:  # "x^2 - 4, solve for x" means x^2 - 4 = 0
            tree = parse_expression(expression)
            if _has_unknowns(tree):
                equations.append((tree, parse_expression("0")))
            else:
                questions.append(expression)
    if any(_has_unknowns(side) for pair in equations for side in pair):
        return _solve(equations, text)  # numeric ones stay in: "x = 1 = 2" has no solution
    questions = [q for q in questions if not _has_unknowns(parse_expression(q))]
    if questions:
        return ", ".join(str(calculate(q)) for q in questions)
    if equations:  # only numbers: check the claim, e.g. "2 + 2 = 4"
        left, right = (calculate(ast.unparse(side)) for side in equations[0])
        return f"true ({left} = {right})" if left == right else f"false ({left} != {right})"
    raise MathError("could not find an equation in the query; write it like 'x - 8 = 0, what is x?'")
