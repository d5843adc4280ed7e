"""Turn raw model text into a thought and the first action, or a typed parse error.

TACO's checkpoints emit compact JSON, but real outputs also come wrapped in markdown fences, with
prose around the object, trailing commas or Python-style single quotes. The parser accepts all of
those, and never raises: every failure is a :class:`ParseFailure` whose message becomes TACO's
repair turn (``json`` for unreadable JSON, ``unknown`` for a readable object of the wrong shape).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from taco_app.cota.actions import Action

MAX_CANDIDATES = 16  # objects tried per output; bounds the work on hostile text
# TACO's steps nest 3 or 4 levels. Deeper objects are refused here, so that nothing downstream (the
# store's JSON columns, copies, the page) ever recurses deeper than this on a model's data.
MAX_DEPTH = 64
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)(?:```|$)", re.S)


@dataclass(frozen=True)
class ParsedStep:
    thought: str
    action: Action | None  # a name and an arguments object; None = empty actions list


@dataclass(frozen=True)
class ParseFailure:
    code: Literal["json", "unknown"]
    message: str


def parse(text: str) -> ParsedStep | ParseFailure:
    """Parse one model output. Never raises."""
    try:
        return _parse(text if isinstance(text, str) else str(text))
    except Exception as err:  # the promise is "never raises"; any slip is reported, not thrown
        return ParseFailure("unknown", f"Unexpected {type(err)}: {err}.")


def _parse(text: str) -> ParsedStep | ParseFailure:
    obj, error = _find_object(text)
    if obj is None:
        return ParseFailure("json", error)
    return _interpret(obj)


def nesting_depth(value: Any) -> int:
    """How many levels of lists and objects ``value`` has (0 for a scalar), without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _interpret(obj: Any) -> ParsedStep | ParseFailure:
    if nesting_depth(obj) > MAX_DEPTH:
        return ParseFailure("unknown", f"Unexpected <class 'ValueError'>: the step is nested more than {MAX_DEPTH} levels deep.")
    if not isinstance(obj, dict):
        return ParseFailure("unknown", f"Unexpected <class 'TypeError'>: expected a JSON object, got {type(obj).__name__}.")
    if "actions" not in obj:
        return ParseFailure("unknown", "Unexpected <class 'KeyError'>: 'actions'.")
    thought = obj.get("thought", "")
    thought = thought if isinstance(thought, str) else json.dumps(thought, ensure_ascii=False)
    actions = obj["actions"]
    if isinstance(actions, dict):  # a single action not wrapped in a list
        actions = [actions]
    if not isinstance(actions, list):
        return ParseFailure("unknown", "Unexpected <class 'TypeError'>: 'actions' must be a list of actions.")
    if not actions:
        return ParsedStep(thought, None)
    action = actions[0]
    if not isinstance(action, dict) or "name" not in action or "arguments" not in action:
        return ParseFailure(
            "unknown", "Unexpected <class 'AssertionError'>: missing 'name' or 'arguments' in the parsed action."
        )
    name, arguments = action["name"], action["arguments"]
    if not isinstance(name, str):
        return ParseFailure("unknown", "Unexpected <class 'TypeError'>: the action 'name' must be a string.")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ParseFailure("unknown", "Unexpected <class 'TypeError'>: the action 'arguments' must be an object.")
    return ParsedStep(thought, Action(name, arguments))


# --- finding the object -----------------------------------------------------------------------


def _find_object(text: str) -> tuple[Any, str]:
    """The first decodable ``{...}`` object in the text, or ``(None, error message)``."""
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    first_error = ""
    tried = 0
    for source in [*fenced, text]:
        for candidate in _balanced_objects(source):
            tried += 1
            if tried > MAX_CANDIDATES:
                break
            obj, error = _decode(candidate)
            if obj is not None or error is None:
                return obj, ""
            first_error = first_error or error
    if not first_error:
        # Nothing object-like at all: report what json.loads says about the text, as TACO did.
        obj, first_error = _decode(text.strip())
        if obj is not None:
            return obj, ""
    return None, first_error or "<class 'json.decoder.JSONDecodeError'>: Expecting value: line 1 column 1 (char 0)."


def _decode(candidate: str) -> tuple[Any, str | None]:
    try:
        return json.loads(candidate), None
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        strict_error = f"{type(err)}: {err}."
    try:
        return json.loads(_normalise(candidate)), None
    except (json.JSONDecodeError, RecursionError, ValueError):
        return None, strict_error


def _balanced_objects(text: str):
    """Yield each outermost ``{...}`` span, skipping braces inside strings. Linear time.

    A span left unclosed at the end of the text is yielded as-is (with closing braces added), so
    an output cut off by a token limit still gets a precise JSON error or a repair.
    """
    start = text.find("{")
    while start != -1:
        depth, i, quote, n = 0, start, "", len(text)
        end = -1
        while i < n:
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                # an apostrophe inside prose (`don't`) is not a quote: only a quote after a
                # delimiter opens a single-quoted string
                if ch == '"' or _opens_single_quote(text, i):
                    quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
            i += 1
        if end == -1:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)


def _opens_single_quote(text: str, i: int) -> bool:
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j < 0 or text[j] in "{[,:"


_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _normalise(candidate: str) -> str:
    """Rewrite near-JSON into JSON: single-quoted strings, trailing commas, Python literals.

    Also drops a trailing period after the object and balances braces and brackets of an output
    that was cut off. One pass over the text, no recursion.
    """
    out: list[str] = []
    stack: list[str] = []
    i, n = 0, len(candidate)
    while i < n:
        ch = candidate[i]
        if ch == '"' or (ch == "'" and _opens_single_quote(candidate, i)):
            j, buf = i + 1, []
            while j < n and candidate[j] != ch:
                c = candidate[j]
                if c == "\\" and j + 1 < n:
                    nxt = candidate[j + 1]
                    buf.append(nxt if nxt == "'" else c + nxt)
                    j += 2
                    continue
                if c == '"':
                    buf.append('\\"')
                elif c == "\n":
                    buf.append("\\n")
                elif c == "\t":
                    buf.append("\\t")
                else:
                    buf.append(c)
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
            continue
        if ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            while out and out[-1].strip() in (",", ""):
                if out[-1].strip() == ",":
                    out.pop()
                    break
                out.pop()
            if stack:
                stack.pop()
            if not stack:
                out.append(ch)
                break
        elif ch.isalpha():
            j = i
            while j < n and (candidate[j].isalnum() or candidate[j] == "_"):
                j += 1
            word = candidate[i:j]
            out.append(_PY_LITERALS.get(word, word))
            i = j
            continue
        out.append(ch)
        i += 1
    while stack:
        while out and out[-1].strip() in (",", ""):
            out.pop()
        out.append(stack.pop())
    return "".join(out)


# --- streaming ------------------------------------------------------------------------------------

_THOUGHT_KEY = re.compile(r"""["']thought["']\s*:\s*(["'])""")


def partial_thought(text: str) -> str | None:
    """The ``thought`` value of a JSON object that is still being generated, or None.

    Used to stream the thought as it grows: ``{"thought":"I need to re`` gives ``I need to re``.
    An escape sequence cut in half by the stream is left out until its end arrives.
    """
    match = _THOUGHT_KEY.search(text)
    if match is None:
        return None
    quote, start = match.group(1), match.end()
    i, complete = start, False
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            complete = True
            break
        i += 1
    body = text[start:i]
    if quote == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    for cut in range(0, 13):  # drop at most one partial escape (e.g. half a surrogate pair)
        try:
            value = json.loads('"' + body[: len(body) - cut] + '"', strict=False)
        except (json.JSONDecodeError, ValueError):
            continue
        if not complete and value and "\ud800" <= value[-1] <= "\udbff":
            continue
        return value
    return None
