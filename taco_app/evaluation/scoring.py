"""Deciding whether a session's final answer is right.

A scorer turns (prediction, item) into a `Verdict`: `correct`, and `how`, the rule that decided.
The prediction is whatever the session ended with (any JSON value); the item carries one or more
accepted `answers`, and `choices` when it is multiple choice.

`StandardScorer` ("standard") — fixed rules, no model. They are tried in this order:

1. **No answer.** `None`, or text that is empty once normalised, is wrong (how "no answer").
   Other JSON values are read as text first: a number as written (`3`, `14.286`), `true`/`false`
   as "yes"/"no", a list as its elements joined by ", " (`["B", "C"]` → "B, C"), an object as its
   JSON. A JSON number also keeps its value for rule 5.
2. **Multiple choice** (how "choice"; only when the item has `choices`, letters A, B, C… in order).
   Each accepted answer is mapped to an option: by its text (normalised as in rule 3), else as a
   bare letter ("B", "(B)", "b."). The prediction is mapped the same way, and more loosely:
   - the option's text: "The strawberries are the biggest object." picks that option;
   - a letter, alone or after a lead-in, with or without the option's text after it:
     "B", "(B)", "B.", "**B**", "Answer: B", "The answer is (B)", "Option B", "(B) The strawberries",
     "B. The strawberries" (the letter decides; the text after it is not checked);
   - two or more different letters ("A and B", "A, C", "(A)/(B)", `["A", "B"]`) are wrong.
   A letter past the last option ("E" of four) is not a letter. Text comes before letters: with
   options ("B", "C"), "B" is the first option. When the prediction picks an option, this rule
   decides (right or wrong). When it picks none ("I think 4"), the rules below compare it with the
   correct options' texts and the answers that are not options. When no accepted answer is an
   option, the item is scored as if it had no choices.
3. **Exact** (how "exact"): the normalised prediction equals a normalised accepted answer.
   Normalising: Unicode NFKC; curly quotes and the minus sign made plain; lower case; runs of
   whitespace become one space; the characters `. , ; : ! ? ' " ` ( ) [ ] { } < > * _` are stripped
   from both ends (not from inside: "3.5" and "e-mail" stay); the articles "a", "an", "the" are
   dropped as whole words, as VQA's normalisation does, unless nothing else is left ("A" stays "a").
   So "The Eiffel Tower." = "eiffel tower" = "  an  Eiffel tower" and "“Cat”" = "cat", but
   "New-York" ≠ "new york", "3" ≠ "three" (numbers written as words are not read), "cats" ≠ "cat".
   An answer string holding "<OR>" (MM-Vet's notation, "2 <OR> two") is several accepted answers;
   "<AND>" is not split (no fixed rule checks "all of these"; use the judge).
4. **Yes/no** (how "yes/no"): when an accepted answer is "yes" or "no", a prediction whose first
   word is "yes" or "no" followed by a punctuation mark gives that answer: "No, the man is not
   going to fall down." = "no". "Yes and no" and "Not really" give none.
5. **Number** (how "number"): when an accepted answer holds exactly one number and the prediction
   holds exactly one number (the same value written twice counts once), they match within 1% of the
   answer, inclusive: "14.29 gallons" matches 14.286; "$249.98" matches "249.98"; "1,234" is 1234;
   "50%" is read as 50 (the sign is ignored on both sides); "-5" is negative, "2023-05-01" holds
   three numbers. A prediction with several different numbers ("about 14 gallons, 14.29 exactly")
   has no number: this rule does not guess which one is meant. An answer of 0 has no relative
   tolerance: the prediction must be exactly zero ("0", "0.0", "-0"). Only the numbers are
   compared, not the words around them: for the answer "3 apples", "3 pears" matches (keep numeric
   answers bare). Not read: fractions ("1/2" is two numbers), exponents, "1.234,5".
6. Otherwise wrong, how "no match".

`JudgeScorer` ("judge") — asks a language model, as VLMEvalKit scores MM-Vet: the same prompt (a
few-shot table of question | ground truth | prediction | correctness), the accepted answers joined
with " <OR> ", and the model's reply read as a score from 0.0 to 1.0: the whole reply as a number,
else the first number in it. A score of 0.5 or more is right (how "judge"); MM-Vet itself averages
the scores, so this accuracy is not MM-Vet's score. Unlike VLMEvalKit, which asks up to five times
with a rising temperature and then counts 0.0, the model is asked once: a reply without a score in
0–1 is wrong with how "judge: unreadable", so a report can count them. A model that fails (`ask`
raises) is not a verdict: the error goes to the caller. With choices, the options are listed after
the question and a letter answer is shown with its option's text.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    from .data import Item

__all__ = ["Verdict", "Scorer", "StandardScorer", "JudgeScorer", "SCORERS", "make_scorer", "normalise"]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    how: str  # the rule that decided: "exact", "choice", "yes/no", "number", "judge", "no answer", …


class Scorer(ABC):
    name: ClassVar[str]

    @abstractmethod
    def score(self, prediction: Any, item: "Item") -> Verdict: ...


# --- reading text -------------------------------------------------------------------------------

_PLAIN = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "«": '"',
                        "»": '"', "−": "-"})
_EDGE = " .,;:!?'\"`()[]{}<>*_"
_ARTICLES = frozenset({"a", "an", "the"})


def _plain(text: str) -> str:
    """NFKC, plain quotes and minus, one space between words, no surrounding whitespace."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_PLAIN).split())


def normalise(text: str) -> str:
    """The text that the exact rule compares (see the module docstring)."""
    text = _plain(text).casefold().strip(_EDGE)
    words = text.split(" ")
    kept = [w for w in words if w not in _ARTICLES]
    return " ".join(kept).strip(_EDGE) if kept else text


def _as_text(value: Any) -> str | None:
    """A prediction or an answer as text; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        parts = [_as_text(v) for v in value]
        return ", ".join(p for p in parts if p is not None)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


# --- numbers -----------------------------------------------------------------------------------

# A number is not part of a word or of another number ("H2O", "v1.2.3" after "1.2"); thousands are
# grouped by commas in threes ("1,234,567"); a sign counts only where nothing precedes it.
_NUMBER = re.compile(r"(?<![\w.])(-|\+)?(?:(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?|(\.\d+))")


def _numbers(text: str) -> set[float]:
    found = set()
    for sign, whole, frac, bare_frac in _NUMBER.findall(_plain(text)):
        written = (whole.replace(",", "") + frac) if whole else "0" + bare_frac
        value = float(written)
        found.add(-value if sign == "-" else value)
    return found


def _number(value: Any) -> float | None:
    """The one number a value holds: a JSON number, or text with exactly one distinct number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        found = _numbers(value)
        if len(found) == 1:
            number = found.pop()
            return 0.0 if number == 0 else number
    return None


def _close(prediction: float, answer: float) -> bool:
    if answer == 0:
        return prediction == 0
    # 1% inclusive; the tiny slack keeps "exactly 1%" inclusive despite binary rounding.
    return abs(prediction - answer) <= 0.01 * abs(answer) * (1 + 1e-9)


# --- multiple choice ---------------------------------------------------------------------------

_LEAD_IN = re.compile(
    r"^(?:the\s+)?(?:correct\s+|final\s+|best\s+|right\s+)?(?:answer|option|choice)"
    r"(?:\s+is)?\s*[:=-]?\s*", re.IGNORECASE)
_BARE_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_LETTER_LIST = re.compile(
    r"^\(?[A-Za-z]\)?(?:\s*(?:,|/|&|;|\band\b|\bor\b)\s*\(?[A-Za-z]\)?)+\.?$", re.IGNORECASE)
_LETTER_THEN_TEXT = re.compile(r"^(?:\(([A-Za-z])\)\s*|([A-Z])[.:)]\s+)\S")


def _letter_index(letter: str, choices: tuple[str, ...]) -> int | None:
    index = ord(letter.upper()) - ord("A")
    return index if 0 <= index < len(choices) else None


def _text_options(text: str, choices: tuple[str, ...]) -> set[int]:
    wanted = normalise(text)
    return {i for i, choice in enumerate(choices) if wanted and normalise(choice) == wanted}


def _answer_options(answer: Any, choices: tuple[str, ...]) -> set[int]:
    """The options an accepted answer names: by the option's text, else a bare letter."""
    text = _as_text(answer) or ""
    found = _text_options(text, choices)
    if not found:
        bare = _BARE_LETTER.match(_plain(text))
        index = _letter_index(bare.group(1), choices) if bare else None
        if index is not None:
            found = {index}
    return found


def _predicted_options(text: str, choices: tuple[str, ...]) -> set[int] | None:
    """The options a prediction picks; an empty set when it names several letters; None when it
    picks no option."""
    plain = _plain(text).strip(" *_")
    found = _text_options(plain, choices)
    rest = _LEAD_IN.sub("", plain, count=1).strip(" *_")
    if not found and rest != plain:
        found = _text_options(rest, choices)
    if found:
        return found
    bare = _BARE_LETTER.match(rest)
    if bare:
        index = _letter_index(bare.group(1), choices)
        return None if index is None else {index}
    if _LETTER_LIST.match(rest):
        letters = {c.upper() for c in re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", rest)}
        if len(letters) > 1:
            return set()  # two letters: not one answer
        index = _letter_index(letters.pop(), choices)
        return None if index is None else {index}
    lead = _LETTER_THEN_TEXT.match(rest)
    if lead:
        index = _letter_index(lead.group(1) or lead.group(2), choices)
        return None if index is None else {index}
    return None


# --- the standard rules ------------------------------------------------------------------------

_YES_NO = re.compile(r"^(yes|no)(?:$|[,.;:!])")


def _accepted(answers: tuple) -> list[Any]:
    out: list[Any] = []
    for answer in answers:
        if isinstance(answer, str) and "<OR>" in answer:
            out.extend(part.strip() for part in answer.split("<OR>") if part.strip())
        else:
            out.append(answer)
    return out


class StandardScorer(Scorer):
    """Fixed rules: normalised exact, any accepted answer, multiple choice, numbers within 1%."""

    name = "standard"

    def score(self, prediction: Any, item: "Item") -> Verdict:
        text = _as_text(prediction)
        if text is None or not normalise(text):
            return Verdict(False, "no answer")
        answers = _accepted(tuple(item.answers))
        choices = tuple(item.choices) if item.choices else ()
        if choices:
            right: set[int] = set()
            others = []
            for answer in answers:
                options = _answer_options(answer, choices)
                right |= options
                if not options:
                    others.append(answer)
            if right:
                picked = _predicted_options(text, choices)
                if picked is not None:
                    return Verdict(bool(picked & right), "choice")
                answers = others + [choices[i] for i in sorted(right)]
        return self._free(prediction, text, answers)

    @staticmethod
    def _free(prediction: Any, text: str, answers: list[Any]) -> Verdict:
        said = normalise(text)
        written = [normalise(_as_text(a) or "") for a in answers]
        if said in written:
            return Verdict(True, "exact")
        yes_no = _YES_NO.match(said)
        if yes_no and yes_no.group(1) in written:
            return Verdict(True, "yes/no")
        number = _number(prediction if isinstance(prediction, (int, float)) else text)
        if number is not None:
            for answer in answers:
                target = _number(answer)
                if target is not None and _close(number, target):
                    return Verdict(True, "number")
        return Verdict(False, "no match")


# --- the judge ---------------------------------------------------------------------------------

# MM-Vet's grading prompt, as data, from VLMEvalKit `vlmeval/dataset/utils/mmvet.py`
# (build_mmvet_gpt4_prompt) in TACO's copy (SalesforceAIResearch/TACO, commit f1c277f0).
MMVET_JUDGE_PROMPT = """
Compare the ground truth and prediction from AI models, to give a correctness score for the prediction.
<AND> in the ground truth means it is totally right
only when all elements in the ground truth are present in the prediction,
and <OR> means it is totally right when any one element in the ground truth is present in the prediction.
The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right).
Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme talks about Iceland and Greenland. It's pointing out that despite their names,
Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme is using humor to point out the misleading nature of Iceland's and Greenland's names.
Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow.
The text 'This is why I have trust issues' is a playful way to suggest
that these contradictions can lead to distrust or confusion.
The humor in this meme is derived from the unexpected contrast between the names of the countries
and their actual physical characteristics. | 1.0
"""

_SCORE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)")


def judge_prompt(question: str, answers: tuple, prediction: str,
                 choices: tuple[str, ...] | None = None) -> str:
    """The prompt the judge is asked: MM-Vet's table with this item as its last, unfinished row."""
    truths = []
    for answer in answers:
        text = _as_text(answer) or ""
        options = _answer_options(answer, choices) if choices else set()
        if len(options) == 1 and _BARE_LETTER.match(_plain(text)):
            index = options.pop()
            text = f"({chr(ord('A') + index)}) {choices[index]}"
        truths.append(text)
    truth = "<OR>".join(truths).replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    if choices:
        listed = " ".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))
        question = f"{question} Options: {listed}"
    return MMVET_JUDGE_PROMPT + "\n" + " | ".join([question, truth, prediction, ""])


def judge_score(reply: str) -> float | None:
    """The score in a judge's reply: the whole reply as a number, else its first number; None
    unless it lies in 0–1."""
    text = reply.strip()
    try:
        score = float(text)
    except ValueError:
        found = _SCORE.search(text)
        score = float(found.group(1)) if found else math.nan
    return score if 0.0 <= score <= 1.0 else None


class JudgeScorer(Scorer):
    """An LLM judge with MM-Vet's prompt; `ask(prompt)` returns the model's reply text."""

    name = "judge"

    def __init__(self, ask: Callable[[str], str]):
        if not callable(ask):
            raise TypeError(f"JudgeScorer needs a function prompt -> reply text, not {type(ask).__name__}")
        self.ask = ask

    def score(self, prediction: Any, item: "Item") -> Verdict:
        text = _as_text(prediction)
        if text is None or not normalise(text):
            return Verdict(False, "no answer")
        choices = tuple(item.choices) if item.choices else None
        reply = self.ask(judge_prompt(item.question, tuple(item.answers), text, choices))
        score = judge_score(reply) if isinstance(reply, str) else None
        if score is None:
            return Verdict(False, "judge: unreadable")
        return Verdict(score >= 0.5, "judge")


SCORERS: dict[str, type[Scorer]] = {StandardScorer.name: StandardScorer, JudgeScorer.name: JudgeScorer}


def make_scorer(name: str, *, ask: Callable[[str], str] | None = None) -> Scorer:
    """The scorer called `name`. The judge needs `ask`; the standard scorer ignores it."""
    if name not in SCORERS:
        close = difflib.get_close_matches(str(name), SCORERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown scorer {name!r}{hint}; choose one of: {', '.join(sorted(SCORERS))}")
    if name == JudgeScorer.name:
        if ask is None:
            raise ValueError(
                "the judge scorer needs a model to ask: pass ask=<function prompt -> reply text> "
                "(on the command line: --judge-model NAME and --judge-base-url URL of an "
                "OpenAI-compatible server)")
        return JudgeScorer(ask)
    return SCORERS[name]()
