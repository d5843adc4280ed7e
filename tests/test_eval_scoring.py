"""Scoring a final answer (taco_app.evaluation.scoring) and the report's statistics
(taco_app.evaluation.stats), the statistics checked against scipy's and numpy's own results."""

from __future__ import annotations

import ast
import math
import random
import subprocess
from pathlib import Path

import numpy
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri

from taco_app.evaluation.data import Item
from taco_app.evaluation.scoring import (
    MMVET_JUDGE_PROMPT,
    SCORERS,
    JudgeScorer,
    StandardScorer,
    Verdict,
    judge_prompt,
    judge_score,
    make_scorer,
    normalise,
)
from taco_app.evaluation.stats import Z95, mcnemar_exact, percentile, wilson

from .conftest import examples

TACO_MIRROR = Path("/work/.mirror/SalesforceAIResearch+TACO/repo")


def item(*answers, choices=None, question="What is in the image?") -> Item:
    return Item(id="q1", question=question, answers=tuple(answers), images=(),
                choices=tuple(choices) if choices else None)


STANDARD = StandardScorer()


def verdict(prediction, *answers, choices=None) -> tuple[bool, str]:
    v = STANDARD.score(prediction, item(*answers, choices=choices))
    assert isinstance(v, Verdict)
    return v.correct, v.how


# --- normalising ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower.", "eiffel tower"),
    ("  an  Eiffel\ttower ", "eiffel tower"),
    ("“Cat”", "cat"),
    ("'cat'!", "cat"),
    ("**Paris**", "paris"),
    ("(yes)", "yes"),
    ("A", "a"),  # an article alone stays: it may be a letter answer
    ("a cat on the mat", "cat on mat"),
    ("theatre", "theatre"),  # whole words only
    ("3.5", "3.5"),
    ("e-mail", "e-mail"),
    ("−5", "-5"),
    ("ＡＢＣ", "abc"),  # NFKC: full-width letters
    ("", ""),
    (" . ", ""),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


@settings(max_examples=examples(100), deadline=None)
@given(st.text())
def test_normalise_is_idempotent(text):
    once = normalise(text)
    assert normalise(once) == once


# --- exact, several answers, yes/no -----------------------------------------------------------

@pytest.mark.parametrize("prediction, answers, expected", [
    ("The Eiffel Tower.", ["eiffel tower"], (True, "exact")),
    ("Minneapolis", ["minneapolis"], (True, "exact")),
    ("Phytoplankton and zooplankton", ["phytoplankton and zooplankton."], (True, "exact")),
    ("cats", ["cat"], (False, "no match")),
    ("New-York", ["new york"], (False, "no match")),
    ("three", ["3"], (False, "no match")),  # numbers written as words are not read
    ("the cat", ["a dog", "the cat"], (True, "exact")),  # any accepted answer
    ("dog", ["cat", "kitten"], (False, "no match")),
    ("two", ["2 <OR> two"], (True, "exact")),  # MM-Vet's <OR>
    ("2", ["2 <OR> two"], (True, "exact")),
    ("-1 <AND> -5", ["-1 <AND> -5"], (True, "exact")),
    ("-1", ["-1 <AND> -5"], (False, "no match")),  # <AND> is not split
    ("No, the man is not going to fall down.", ["no"], (True, "yes/no")),
    ("Yes, there is a reflection of the zebra in the water.", ["Yes"], (True, "yes/no")),
    ("Yes, it is.", ["no"], (False, "no match")),
    ("Yes and no", ["yes"], (False, "no match")),
    ("Not really", ["no"], (False, "no match")),
    ("No.", ["no"], (True, "exact")),
    ("No, it is red.", ["red"], (False, "no match")),  # the yes/no rule only for yes/no answers
])
def test_free_answers(prediction, answers, expected):
    assert verdict(prediction, *answers) == expected


# --- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, answer, expected", [
    ("14.29 gallons", 14.286, (True, "number")),
    ("You can buy 14.29 gallons.", "14.286", (True, "number")),
    ("1,234", 1234, (True, "number")),
    ("1234", "1,234", (True, "number")),
    ("1,234,567.5", 1234567.5, (True, "number")),
    ("$249.98", "249.98", (True, "number")),
    ("14.80€", "14.8", (True, "number")),
    ("50%", "50", (True, "number")),
    ("x = -5", "-5", (True, "number")),
    ("5", "-5", (False, "no match")),
    ("101", 100, (True, "number")),  # exactly 1%: inclusive
    ("99", 100, (True, "number")),
    ("0.303", 0.3, (True, "number")),
    ("101.01", 100, (False, "no match")),
    ("98.9", 100, (False, "no match")),
    ("0.11", "0.1", (False, "no match")),
    (".5", "0.5", (True, "number")),
    ("13.7", "13.70", (True, "number")),
    ("3 apples, so 3", 3, (True, "number")),  # the same value twice is one number
    ("3 or 3.01", 3, (False, "no match")),  # two values, though each is close
    ("about 14 gallons, 14.29 exactly", "14.29", (False, "no match")),  # several: no guess
    ("2023-05-01", 2023, (False, "no match")),
    ("H2O", 2, (False, "no match")),  # inside a word: not a number
    ("1/2", 0.5, (False, "no match")),  # fractions are not read
    ("1,2", 1.2, (False, "no match")),
    ("3 pears", "3 apples", (True, "number")),  # only the numbers are compared
    ("0", 0, (True, "exact")),
    ("0.0", 0, (True, "number")),
    ("-0", "0", (True, "number")),
    ("There are 0 dogs", 0, (True, "number")),
    ("0.001", 0, (False, "no match")),  # an answer of 0 has no relative tolerance
    ("1e-9", 0, (False, "no match")),
])
def test_numbers(prediction, answer, expected):
    assert verdict(prediction, answer) == expected


@settings(max_examples=examples(150), deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(lambda a: abs(a) > 1e-3),
       st.floats(min_value=0.0, max_value=0.05))
def test_numbers_match_within_one_percent(answer, off):
    prediction = answer * (1 + off)
    written = f"{prediction:.10f}"
    correct, how = verdict(f"about {written} units", answer)
    if off <= 0.0099:
        assert (correct, how) == (True, "number")
    elif off >= 0.0101:
        assert (correct, how) == (False, "no match")


# --- multiple choice --------------------------------------------------------------------------

CHOICES = ("The apples are the biggest object.", "The strawberries are the biggest object.",
           "The pears are the biggest object.", "The plums are the biggest object.")


@pytest.mark.parametrize("answer", ["B", "(B)", "b", "B.", "The strawberries are the biggest object.",
                                    "the strawberries are the biggest object"])
@pytest.mark.parametrize("prediction, correct", [
    ("B", True), ("(B)", True), ("B.", True), ("b", True), ("**B**", True), ("B)", True),
    ("Answer: B", True), ("answer: (b)", True), ("The answer is B", True), ("The correct option is (B).", True),
    ("Option B", True), ("The strawberries are the biggest object.", True),
    ("the strawberries are the biggest object", True), ("Answer: The strawberries are the biggest object.", True),
    ("(B) The strawberries are the biggest object.", True), ("B. The strawberries", True),
    ("B. The apples are the biggest object.", True),  # the letter decides
    ("A", False), ("(C)", False), ("The apples are the biggest object.", False),
    ("A and B", False), ("A, B", False), ("(A)/(B)", False), ("B or C", False), (["A", "B"], False),
    ("B, C.", False),
])
def test_choice(prediction, answer, correct):
    assert verdict(prediction, answer, choices=CHOICES) == (correct, "choice")


@pytest.mark.parametrize("prediction", ["E", "I think B", "strawberries", "", None, "Answer:"])
def test_choice_that_picks_no_option_is_wrong(prediction):
    correct, how = verdict(prediction, "B", choices=CHOICES)
    assert not correct and how in ("no match", "no answer")


def test_choice_text_before_letter_and_fallbacks():
    # Options that are letters themselves: the text decides, so "B" is the first option.
    assert verdict("B", "B", choices=("B", "C")) == (True, "choice")
    assert verdict("B", "C", choices=("B", "C")) == (False, "choice")
    # A prediction that picks no option is compared with the correct option's text.
    assert verdict("4", "B", choices=("3 apples", "4 apples")) == (True, "number")
    assert verdict("3", "B", choices=("3 apples", "4 apples")) == (False, "no match")
    # Several accepted answers: either option is right.
    assert verdict("A", "A", "C", choices=("x", "y", "z")) == (True, "choice")
    assert verdict("C", "A", "C", choices=("x", "y", "z")) == (True, "choice")
    # An answer that is no option: scored as if there were no choices.
    assert verdict("green", "green", choices=("red", "blue")) == (True, "exact")
    assert verdict("A", "green", choices=("red", "blue")) == (False, "no match")
    # A letter past the options is not a letter of this item.
    assert verdict("E", "E", choices=("x", "y")) == (True, "exact")


# --- what a prediction may be -----------------------------------------------------------------

@pytest.mark.parametrize("prediction, answers, expected", [
    (None, ["cat"], (False, "no answer")),
    ("", ["cat"], (False, "no answer")),
    ("  ... ", ["cat"], (False, "no answer")),
    ([], ["cat"], (False, "no answer")),
    (3, ["3"], (True, "exact")),
    (3.0, ["3"], (True, "number")),
    (14.29, [14.286], (True, "number")),
    (1e-7, ["0.0000001"], (True, "number")),  # a JSON number keeps its value, not its text "1e-07"
    (float("nan"), [1], (False, "no match")),
    (float("inf"), ["inf"], (True, "exact")),
    (True, ["yes"], (True, "exact")),
    (False, ["yes"], (False, "no match")),
    (False, [0], (False, "no match")),  # a bool is not a number
    (["cat"], ["cat"], (True, "exact")),
    (["cat", "dog"], ["cat"], (False, "no match")),
    ([14.29], [14.286], (True, "number")),
    ({"answer": "cat"}, ["cat"], (False, "no match")),
    ({"answer": 3}, [3], (True, "number")),
])
def test_predictions_of_any_json_type(prediction, answers, expected):
    assert verdict(prediction, *answers) == expected


@settings(max_examples=examples(100), deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=8),
       st.lists(st.text() | st.integers() | st.floats(allow_nan=False), min_size=1, max_size=3),
       st.none() | st.lists(st.text(), min_size=1, max_size=5))
def test_any_prediction_gets_a_verdict(prediction, answers, choices):
    v = STANDARD.score(prediction, item(*answers, choices=choices))
    assert isinstance(v.correct, bool)
    assert v.how in ("exact", "choice", "yes/no", "number", "no match", "no answer")


@settings(max_examples=examples(100), deadline=None)
@given(st.text(min_size=1).filter(lambda t: normalise(t) != ""))
def test_an_accepted_answer_is_right(answer):
    assert STANDARD.score(answer, item("something else", answer)).correct


# --- the judge --------------------------------------------------------------------------------

def test_judge_asks_mmvet_prompt_and_reads_the_score():
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return "0.6"

    judge = JudgeScorer(ask)
    v = judge.score("x = -1", item("-1<AND>-5", question="What is x in the equation?"))
    assert v == Verdict(True, "judge")
    assert asked == [MMVET_JUDGE_PROMPT + "\nWhat is x in the equation? | -1 <AND> -5 | x = -1 | "]


@pytest.mark.parametrize("reply, expected", [
    ("1.0", Verdict(True, "judge")), ("0.5", Verdict(True, "judge")), (" 0.5\n", Verdict(True, "judge")),
    ("0.4", Verdict(False, "judge")), ("0", Verdict(False, "judge")), ("1", Verdict(True, "judge")),
    ("Correctness: 0.8", Verdict(True, "judge")), ("0.3 | ", Verdict(False, "judge")),
    ("The score is 0.7 out of 1.0", Verdict(True, "judge")),
    ("", Verdict(False, "judge: unreadable")), ("totally right", Verdict(False, "judge: unreadable")),
    ("7/10", Verdict(False, "judge: unreadable")), ("-0.5", Verdict(False, "judge: unreadable")),
    ("1.5", Verdict(False, "judge: unreadable")), ("nan", Verdict(False, "judge: unreadable")),
    ("inf", Verdict(False, "judge: unreadable")), (None, Verdict(False, "judge: unreadable")),
    (0.9, Verdict(False, "judge: unreadable")),  # not text: ask broke its promise
])
def test_judge_reply(reply, expected):
    assert JudgeScorer(lambda prompt: reply).score("cat", item("cat")) == expected


def test_judge_score_values():
    assert judge_score("0.55") == 0.55
    assert judge_score("score 1.0 (totally right)") == 1.0
    assert judge_score("x1 .2") == 0.2  # "1" inside a word is not a number
    assert judge_score("12") is None


def test_judge_without_an_answer_does_not_ask():
    def ask(prompt):
        raise AssertionError("asked")

    judge = JudgeScorer(ask)
    assert judge.score(None, item("cat")) == Verdict(False, "no answer")
    assert judge.score("  ", item("cat")) == Verdict(False, "no answer")


def test_judge_lets_a_failing_model_raise():
    def ask(prompt):
        raise ConnectionError("judge server down")

    with pytest.raises(ConnectionError, match="judge server down"):
        JudgeScorer(ask).score("cat", item("cat"))


def test_judge_prompt_for_several_answers_choices_and_json():
    prompt = judge_prompt("Which is biggest?", ("B", "plums"), "(B)", CHOICES[:2] + ("plums",))
    assert prompt.startswith(MMVET_JUDGE_PROMPT + "\n")
    row = prompt[len(MMVET_JUDGE_PROMPT) + 1:]
    assert row == ("Which is biggest? Options: (A) The apples are the biggest object. "
                   "(B) The strawberries are the biggest object. (C) plums | "
                   "(B) The strawberries are the biggest object. <OR> plums | (B) | ")
    asked = []
    JudgeScorer(lambda p: asked.append(p) or "1").score([14.29, "gallons"], item(14.286))
    assert asked[0].endswith("\nWhat is in the image? | 14.286 | 14.29, gallons | ")


def _vlmevalkit_prompt_builder():
    """build_mmvet_gpt4_prompt from TACO's copy of VLMEvalKit, without its package imports."""
    if not (TACO_MIRROR / "HEAD").exists() and not (TACO_MIRROR / ".git").exists():
        pytest.skip(f"TACO's repository is not mirrored at {TACO_MIRROR}")
    source = subprocess.run(
        ["git", "-C", str(TACO_MIRROR), "show", "HEAD:VLMEvalKit/vlmeval/dataset/utils/mmvet.py"],
        capture_output=True, text=True, check=True).stdout
    tree = ast.parse(source)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_mmvet_gpt4_prompt")
    namespace: dict = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "mmvet.py", "exec"), namespace)
    return namespace["build_mmvet_gpt4_prompt"]


@pytest.mark.parametrize("question, answer, prediction", [
    ("What is x in the equation?", "-1<AND>-5", "x = -1"),
    ("How many gallons can I buy with $50?", 14.286, "14.29 gallons"),
    ("Is the man going to fall?", "no<OR>No", "No, the man is not going to fall down."),
    ("Can you explain this meme?", "It pokes fun at\nIceland and Greenland.", "It is about | names."),
])
def test_judge_prompt_is_vlmevalkits(question, answer, prediction):
    build = _vlmevalkit_prompt_builder()
    line = {"question": question, "answer": answer, "prediction": prediction}
    assert judge_prompt(question, (answer,), prediction) == build(line)


# --- choosing a scorer ------------------------------------------------------------------------

def test_make_scorer():
    assert set(SCORERS) == {"standard", "judge"}
    assert isinstance(make_scorer("standard"), StandardScorer)
    judge = make_scorer("judge", ask=lambda prompt: "1.0")
    assert isinstance(judge, JudgeScorer) and judge.name == "judge"
    assert judge.score("anything", item("cat")) == Verdict(True, "judge")
    with pytest.raises(ValueError, match=r"judge scorer needs a model to ask: pass ask=.*--judge-model"):
        make_scorer("judge")
    with pytest.raises(ValueError, match=r"unknown scorer 'jugde' \(did you mean 'judge'\?\); choose one of: judge, standard"):
        make_scorer("jugde")
    with pytest.raises(TypeError, match="prompt -> reply text"):
        JudgeScorer("gpt-4o")


# --- statistics, against scipy and numpy ------------------------------------------------------

def test_wilson_matches_scipy():
    pairs = [(k, n) for n in range(1, 31) for k in range(n + 1)]
    rng = random.Random(15)
    for _ in range(80):
        n = rng.randint(31, 100_000)
        pairs.append((rng.randint(0, n), n))
    pairs += [(0, 100_000), (100_000, 100_000), (1, 1_000_000)]
    for k, n in pairs:
        ci = scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
        lo, hi = wilson(k, n)
        assert lo == pytest.approx(ci.low, abs=1e-12, rel=0), (k, n)
        assert hi == pytest.approx(ci.high, abs=1e-12, rel=0), (k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.99, 0.999])
def test_wilson_other_levels_match_scipy(level):
    z = float(ndtri(0.5 + 0.5 * level))
    for n, ks in ((1, range(2)), (7, range(8)), (30, range(31)), (1001, (0, 1, 2, 500, 999, 1000))):
        for k in ks:
            ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            assert wilson(k, n, z) == pytest.approx((ci.low, ci.high), abs=1e-12, rel=0)


def test_wilson_edges():
    assert Z95 == float(ndtri(0.975))
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    for bad in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson(*bad)


def test_mcnemar_matches_scipy():
    pairs = [(b, c) for b in range(21) for c in range(21) if b + c]
    rng = random.Random(15)
    for _ in range(60):
        pairs.append((rng.randint(0, 2000), rng.randint(0, 2000)))
    pairs += [(0, 1000), (1000, 0), (480, 520), (1, 1), (5000, 5100)]
    for b, c in pairs:
        if b + c == 0:
            continue
        expected = scipy.stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-12, rel=1e-9), (b, c)


def test_mcnemar_edges():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 7) == 1.0
    assert mcnemar_exact(0, 5) == 2 / 32
    assert mcnemar_exact(3, 1) == mcnemar_exact(1, 3) == 10 / 16
    assert mcnemar_exact(0, 3000) == 0.0  # underflows like scipy's, never raises
    with pytest.raises(ValueError, match="counts >= 0"):
        mcnemar_exact(-1, 3)


def test_percentile_matches_numpy():
    rng = random.Random(15)
    qs = [0, 5, 25, 33.3, 50, 66.6667, 90, 95, 99, 99.9, 100]
    for size in list(range(1, 30)) + [101, 1000]:
        for _ in range(5):
            values = [rng.choice([rng.uniform(-1e3, 1e3), rng.expovariate(0.3), float(rng.randint(0, 9))])
                      for _ in range(size)]
            for q in qs + [rng.uniform(0, 100)]:
                expected = float(numpy.percentile(values, q))
                got = percentile(values, q)
                assert got == expected, (values, q)  # numpy's own arithmetic, so bit for bit


def test_percentile_edges():
    assert percentile([], 50) is None
    assert percentile((), 95) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2], 100) == 2.0 and percentile([1, 2], 0) == 1.0
    assert percentile([5, 1, 3], 50) == 3.0  # unsorted input
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    for q in (-1, 100.5, math.nan):
        with pytest.raises(ValueError, match="0 <= q <= 100"):
            percentile([1.0], q)
