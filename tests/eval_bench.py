"""A benchmark made here, with every answer known, and a fake TACO that answers it behind an OpenAI API.

``make_benchmark(folder)`` draws the images (two numbers on a card, k coloured squares, one large
square), writes them and ``data.jsonl`` and returns the :class:`Truth`: what every number of an eval
of that data must be, for each scripted model and mode.

:class:`FakeTACO` is an OpenAI-compatible chat-completions server on 127.0.0.1 that plays a script
per item, the same however requests interleave: it finds the item from the question in the request's
user text, the step from how many ``###Human:`` turns the text holds (one per observation, repair or
failed call fed back), and streams that step's reply, then the usage. ``--api-model`` picks the
script: ``taco-a``, or ``taco-b``, which differs from A on known items in both directions. A request
whose text does not hold the CoTA system prompt is a direct-mode one, answered with the item's direct
reply. The scripts plant right and wrong answers, a reply that is not JSON, one of the wrong shape,
an unknown action, bad arguments, an item that never calls Terminate, numbers that need the 1%
tolerance, multiple-choice letters and option texts, and an item with two images.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

MODELS = ("taco-a", "taco-b")
COLOURS = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "orange": "#ff7f0e", "purple": "#9467bd"}
LETTERS = "ABCD"
REQUEST_MARK = "###Human: "  # every user turn of TACO's flattened text; the system prompt has none
COTA_MARK = "[BEGIN OF ACTIONS]"  # only TACO's CoTA system prompt has it
NOW = "Now please generate your response:"

# One item of each kind, in this order; a benchmark of more than 32 items starts again at the top.
KINDS = (
    ("sum", "math"), ("sum_wrong", "math"), ("gallons", "math"), ("ratio_off", "math"),
    ("not_json_first", "math"), ("wrong_shape_second", "math"), ("not_json_twice", "math"),
    ("bad_arguments", "math"), ("solve", "math"), ("dozen", "math"), ("two_cards", "math"), ("product", "math"),
    ("crop", "count"), ("zoom", "count"), ("count_wrong", "count"), ("unknown_action", "count"),
    ("never_ends", "count"), ("crop_wrong", "count"), ("count", "count"), ("count_words", "count"),
    ("crop_no_bbox", "count"), ("count", "count"),
    ("letter", "choice"), ("letter_wrong", "choice"), ("option_text", "choice"), ("letter", "choice"),
    ("option_text_wrong", "choice"), ("letter", "choice"), ("crop_letter", "choice"), ("letter", "choice"),
    ("letter_wrong", "choice"), ("letter", "choice"),
)
# Model B against model A, by position in KINDS: right in A and wrong in B, wrong in A and right in B,
# and answers that differ without changing the verdict (B names the option, or is wrong another way).
B_WRONG = (0, 12, 18, 22, 25)
B_RIGHT = (1,)
B_OTHER = (14, 27)
DIRECT_WRONG_EVERY = 3  # in direct mode, every third item (i % 3 == 2) is answered wrongly


# --- replies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted model output and what the app must make of it."""

    text: str
    kind: str  # tool | final | parse_error | unknown_action | bad_arguments | no_action
    action: str | None = None  # the action it names (a tool, Terminate, or an unknown name)
    answer: Any = None  # Terminate's answer
    correct: bool = False  # whether that answer is right


def step(thought: str, name: str, **arguments: Any) -> str:
    """A TACO step as the checkpoints write it: compact JSON, one action."""
    return json.dumps({"thought": thought, "actions": [{"name": name, "arguments": arguments}]})


def tool(name: str, thought: str = "I use a tool.", **arguments: Any) -> Reply:
    return Reply(step(thought, name, **arguments), "tool", name)


def final(answer: Any, correct: bool, thought: str = "I have the answer.") -> Reply:
    return Reply(step(thought, "Terminate", answer=answer), "final", "Terminate", answer, correct)


NOT_JSON = Reply("Let me look at the picture carefully before I decide.", "parse_error")
WRONG_SHAPE = Reply(json.dumps({"thought": "The numbers are easy to read."}), "parse_error")  # no "actions"
NO_ACTION = Reply(json.dumps({"thought": "I am still looking at the image.", "actions": []}), "no_action")


def usage(text: str, step_index: int, mode: str) -> dict[str, int]:
    """The token counts the fake reports for a reply: known, so the report's sums are."""
    return {"prompt_tokens": (1000 + 100 * step_index) if mode == "cota" else 300,
            "completion_tokens": len(text.encode()) // 4 + 1}


# --- the benchmark ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """One item: its row of data.jsonl and the scripts that answer it."""

    id: str
    category: str
    kind: str
    question: str
    answer: Any  # as written in data.jsonl
    images: list[str]
    choices: list[str] | None
    scripts: dict[str, list[Reply]]  # model -> its reply at each step; the last one repeats
    direct: dict[str, Reply]  # model -> the one direct-mode reply ("final", stripped answer)

    def row(self) -> dict[str, Any]:
        row = {"id": self.id, "images": self.images, "question": self.question, "answer": self.answer,
               "category": self.category}
        if self.choices is not None:
            row["choices"] = self.choices
        return row


@dataclass
class ItemTruth:
    id: str
    category: str
    status: str  # finished | max_steps
    prediction: Any
    correct: bool
    steps: int
    parse_errors: int
    unknown_actions: int
    bad_arguments: int
    tools_run: Counter  # tool name -> calls that ran (gave an observation)
    tool_calls: Counter  # tool name -> steps that called it, whatever came of it (bad arguments too)
    actions_named: Counter  # action name -> steps that named it (parsed): tools, Terminate, unknown names
    prompt_tokens: int
    output_tokens: int


@dataclass
class RunTruth:
    """What an eval of the whole benchmark with one script must report."""

    items: dict[str, ItemTruth]

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def correct(self) -> int:
        return sum(item.correct for item in self.items.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def by_category(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for item in self.items.values():
            cat = out.setdefault(item.category, {"n": 0, "correct": 0})
            cat["n"] += 1
            cat["correct"] += item.correct
        return out

    @property
    def steps(self) -> int:
        return sum(item.steps for item in self.items.values())

    @property
    def parse_errors(self) -> dict[str, int]:
        return {"steps": sum(item.parse_errors for item in self.items.values()),
                "sessions": sum(item.parse_errors > 0 for item in self.items.values())}

    @property
    def unknown_actions(self) -> int:
        return sum(item.unknown_actions for item in self.items.values())

    @property
    def bad_arguments(self) -> int:
        return sum(item.bad_arguments for item in self.items.values())

    @property
    def max_steps(self) -> int:
        return sum(item.status == "max_steps" for item in self.items.values())

    def tools(self) -> dict[str, dict[str, int]]:
        """Per tool the model called (not Terminate, not an unknown name): its calls, the sessions with
        one, and how many of those sessions were right."""
        out: dict[str, dict[str, int]] = {}
        for item in self.items.values():
            for name, uses in item.tool_calls.items():
                entry = out.setdefault(name, {"uses": 0, "sessions": 0, "correct": 0})
                entry["uses"] += uses
                entry["sessions"] += 1
                entry["correct"] += item.correct
        return out

    @property
    def tokens(self) -> dict[str, int]:
        return {"prompt": sum(i.prompt_tokens for i in self.items.values()),
                "output": sum(i.output_tokens for i in self.items.values())}


@dataclass
class Truth:
    folder: Path
    data: Path
    plans: list[Plan]
    _runs: dict[tuple[str, str, int], RunTruth] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [plan.id for plan in self.plans]

    def plan(self, item_id: str) -> Plan:
        return next(plan for plan in self.plans if plan.id == item_id)

    def run(self, model: str = "taco-a", mode: str = "cota", max_replies: int = 2) -> RunTruth:
        key = (model, mode, max_replies)
        if key not in self._runs:
            self._runs[key] = RunTruth({plan.id: _play(plan, model, mode, max_replies) for plan in self.plans})
        return self._runs[key]

    def flips(self, run: str = "taco-a", other: str = "taco-b", max_replies: int = 2) -> tuple[list[str], list[str]]:
        """(right in ``run`` and wrong in ``other``, wrong in ``run`` and right in ``other``), in item order."""
        a, b = self.run(run, max_replies=max_replies).items, self.run(other, max_replies=max_replies).items
        return ([i for i in self.ids if a[i].correct and not b[i].correct],
                [i for i in self.ids if not a[i].correct and b[i].correct])


def _play(plan: Plan, model: str, mode: str, max_replies: int) -> ItemTruth:
    """What the step loop does with the script: TACO's rules, written out independently of the app."""
    if mode == "direct":
        reply = plan.direct[model]
        use = usage(reply.text, 1, mode)
        return ItemTruth(plan.id, plan.category, "finished", reply.answer, reply.correct, 1, 0, 0, 0, Counter(),
                         Counter(), Counter(), use["prompt_tokens"], use["completion_tokens"])
    script = plan.scripts[model]
    last = max_replies + 1
    truth = ItemTruth(plan.id, plan.category, "max_steps", None, False, 0, 0, 0, 0, Counter(), Counter(), Counter(),
                      0, 0)
    for index in range(1, last + 1):
        reply = script[min(index, len(script)) - 1]
        use = usage(reply.text, index, mode)
        truth.steps, truth.prompt_tokens = index, truth.prompt_tokens + use["prompt_tokens"]
        truth.output_tokens += use["completion_tokens"]
        if reply.action:
            truth.actions_named[reply.action] += 1
        if reply.kind == "final":
            truth.status, truth.prediction, truth.correct = "finished", reply.answer, reply.correct
            break
        truth.parse_errors += reply.kind == "parse_error"
        truth.unknown_actions += reply.kind == "unknown_action"
        truth.bad_arguments += reply.kind == "bad_arguments"
        if reply.kind in ("tool", "bad_arguments"):
            truth.tool_calls[reply.action] += 1
        if reply.kind == "tool" and index < last:  # the loop runs no tool at its last step
            truth.tools_run[reply.action] += 1
    return truth


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_card(a: Any, b: Any) -> Image.Image:
    card = Image.new("RGB", (200, 120), "#f4f1e8")
    draw = ImageDraw.Draw(card)
    draw.rectangle([4, 4, 195, 115], outline="#333333", width=3)
    draw.text((55, 60), str(a), font=_font(40), fill="black", anchor="mm")
    draw.text((145, 60), str(b), font=_font(40), fill="#b00000", anchor="mm")
    return card


def draw_squares(k: int, colour: str, rng: random.Random) -> Image.Image:
    picture = Image.new("RGB", (200, 120), "#dddddd")
    draw = ImageDraw.Draw(picture)
    cells = rng.sample([(x, y) for x in range(6) for y in range(3)], k + 2)
    others = [c for c in COLOURS if c != colour]
    for j, (x, y) in enumerate(cells):
        fill = COLOURS[colour] if j < k else COLOURS[rng.choice(others)]
        draw.rectangle([8 + 32 * x, 8 + 36 * y, 32 + 32 * x, 32 + 36 * y], fill=fill)
    return picture


def draw_large_square(colour: str) -> Image.Image:
    picture = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle([30, 10, 130, 110], fill=COLOURS[colour])
    return picture


def _item(i: int, kind: str, category: str, rng: random.Random, folder: Path) -> Plan:
    """Draw item ``i``'s images and write its question, answer and model A's script and direct reply."""
    item_id = f"q{i:02d}"
    images: list[str] = []

    def save(picture: Image.Image, suffix: str = "") -> None:
        name = f"images/{item_id}{suffix}.png"
        picture.save(folder / name)
        images.append(name)

    choices = None
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    if category == "math":
        total = a + b
        if kind == "gallons":
            budget, price = 50, 3.5
            save(draw_card(f"${budget}", f"${price}"))
            question = f"Card {i} shows a budget and the price of a gallon of gas. How many gallons can be bought?"
            answer, right, wrong = round(budget / price, 3), "14.29 gallons", "15.5 gallons"
            script = [tool("Calculate", "I divide the budget by the price.", expression=f"{budget}/{price}"),
                      final(right, True, "About 14.29 gallons.")]
        elif kind == "ratio_off":
            save(draw_card(a * 10, b))
            question = f"What is the first number on card {i} divided by the second, to two decimals?"
            answer, right = round(a * 10 / b, 3), f"{a * 10 / b:.2f}"
            wrong = f"{a * 10 / b * 1.05:.2f}"  # 5% off: outside the 1% tolerance
            script = [tool("Calculate", expression=f"{a * 10}/{b}"), final(wrong, False)]
        elif kind == "solve":
            save(draw_card(f"x-{a}", b))
            question = f"Card {i} shows x - {a} = {b}. What is x?"
            answer, right, wrong = total, str(total), str(total + 3)
            script = [tool("SolveMathEquation", "I solve the equation.", query=f"x-{a}={b}, what is x?"),
                      final(right, True)]
        elif kind == "dozen":
            save(draw_card(6, 6))
            question = f"Card {i} shows two boxes of 6 eggs. How many eggs are there, in words?"
            answer, right, wrong = ["12", "a dozen"], "a dozen", "a half dozen"
            script = [final(right, True)]  # right by the second accepted answer
        elif kind == "two_cards":
            c, d = rng.randint(2, 9), rng.randint(2, 9)
            save(draw_card(a, b), "-left")
            save(draw_card(c, d), "-right")
            total = a + b + c + d
            question = f"What is the sum of all four numbers on the two cards of item {i}?"
            answer, right, wrong = total, str(total), str(total + 4)
            script = [tool("Calculate", expression=f"{a}+{b}+{c}+{d}"), final(right, True)]
        elif kind == "product":
            save(draw_card(a, b))
            question = f"What is the product of the two numbers on card {i}?"
            answer, right, wrong = a * b, str(a * b), str(a * b + 5)
            script = [tool("Calculate", expression=f"{a}*{b}"), final(a * b, True)]  # a JSON number
        else:
            save(draw_card(a, b))
            question = f"What is the sum of the two numbers on card {i}?"
            answer, right, wrong = total, str(total), str(total + 1)  # totals under 20: +1 is over 5% off
            calc = tool("Calculate", "I add the two numbers.", expression=f"{a}+{b}")
            script = {
                "sum": [calc, final(right, True)],
                "sum_wrong": [calc, final(wrong, False)],
                "not_json_first": [NOT_JSON, calc, final(right, True)],
                "wrong_shape_second": [calc, WRONG_SHAPE, final(right, True)],
                "not_json_twice": [NOT_JSON, NOT_JSON, final(right, True)],
                "bad_arguments": [Reply(step("I add them.", "Calculate", expr=f"{a}+{b}"), "bad_arguments",
                                        "Calculate"), final(right, True)],
            }[kind]
    elif category == "count":
        colour = rng.choice(list(COLOURS))
        k = rng.randint(2, 6)
        save(draw_squares(k, colour, rng))
        question = f"How many {colour} squares are in picture {i}?"
        answer, right, wrong = str(k), str(k), str(k + 2)
        crop = tool("Crop", "I look closer.", image="image-0", bbox=[0.0, 0.0, 1.0, 1.0])
        script = {
            "crop": [crop, final(right, True)],
            "zoom": [tool("ZoomIn", "I zoom in.", image="image-0", bbox=[0.0, 0.0, 0.5, 1.0], zoom_factor=2),
                     final(right, True)],
            "count_wrong": [final(wrong, False)],
            "unknown_action": [Reply(step("I count them.", "CountSquares", image="image-0"), "unknown_action",
                                     "CountSquares"), final(right, True)],
            "never_ends": [NO_ACTION],  # no action, every step: the session ends at the step limit
            "crop_wrong": [crop, final(str(k - 1), False)],
            "count": [final(right, True)],
            "count_words": [final(f"{k} squares", True)],  # the number in the text, exactly
            "crop_no_bbox": [Reply(step("I crop.", "Crop", image="image-0"), "bad_arguments", "Crop"), crop,
                             final(right, True)],
        }[kind]
    else:
        names = rng.sample(list(COLOURS), 4)
        colour = names[rng.randrange(4)]
        save(draw_large_square(colour))
        question = f"What colour is the large square in picture {i}?"
        choices = names
        correct_index = names.index(colour)
        answer = right = LETTERS[correct_index]
        wrong_index = (correct_index + 1) % 4
        wrong = LETTERS[wrong_index]
        script = {
            "letter": [final(right, True)],
            "letter_wrong": [final(wrong, False)],
            "option_text": [final(names[correct_index], True)],
            "option_text_wrong": [final(names[wrong_index], False)],
            "crop_letter": [tool("Crop", image="image-0", bbox=[0.1, 0.1, 0.9, 0.9]), final(right, True)],
        }[kind]
    position = i % len(KINDS)
    script_b = list(script)
    if position in B_WRONG:
        script_b[-1] = final(wrong, False)
    elif position in B_RIGHT:
        script_b[-1] = final(right, True)
    elif position in B_OTHER:
        script_b[-1] = final(choices[LETTERS.index(right)], True) if choices else final(str(int(wrong) + 1), False)
    direct_right = i % DIRECT_WRONG_EVERY != 2
    said = right if direct_right else wrong
    direct = Reply(f" {said}\n", "final", None, said, direct_right)  # the app strips the reply
    return Plan(item_id, category, kind, question, answer, images, choices, {"taco-a": script, "taco-b": script_b},
                {"taco-a": direct, "taco-b": direct})


def make_benchmark(folder: str | Path, n: int = 32, seed: int = 15) -> Truth:
    """Draw ``n`` items into ``folder`` (images/ and data.jsonl) and return what every report must say."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plans = [_item(i, *KINDS[i % len(KINDS)], rng, folder) for i in range(n)]
    questions = [plan.question for plan in plans]
    assert len(set(questions)) == n and not any(p != q and p in q for p in questions for q in questions)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(plan.row()) + "\n" for plan in plans))
    return Truth(folder, data, plans)


# --- the fake server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    item_id: str | None
    step: int
    mode: str  # cota | direct
    model: str
    body: dict[str, Any]

    @property
    def user_text(self) -> str:
        return user_text(self.body)


def user_text(body: dict[str, Any]) -> str:
    """The user message as the model reads it: text parts, with ``<image>`` at each image part."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else "<image>" for part in content)


class FakeTACO:
    """A deterministic TACO behind an OpenAI-compatible API; use as a context manager.

    ``delay_s``: seconds before each reply (a model's generation time). ``hold``: item ids whose
    replies wait until :attr:`release` is set. ``finish_budget``: after that many items have been sent
    their last reply, every other item's last reply waits for :attr:`release` too; :attr:`holding` is
    set when a reply is first held. ``max_replies`` is the run's, so the fake knows an item's last step.
    """

    def __init__(self, truth: Truth, *, delay_s: float = 0.0, max_replies: int = 2, chunk: int = 16):
        self.plans = {plan.question: plan for plan in truth.plans}
        self.delay_s, self.max_replies, self.chunk = delay_s, max_replies, chunk
        self.hold: set[str] = set()
        self.finish_budget: int | None = None
        self.release, self.holding = threading.Event(), threading.Event()
        self.requests: list[Request] = []
        self.finished: list[str] = []  # items whose last reply was let through, in order
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.close_connection = True
                try:
                    fake._answer(self, body)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (Ctrl-C)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> "FakeTACO":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def cli_args(self, model: str = "taco-a") -> list[str]:
        return ["--backend", "openai", "--base-url", self.url, "--api-model", model]

    def seen(self) -> set[str]:
        """The items asked about so far."""
        with self.lock:
            return {r.item_id for r in self.requests if r.item_id}

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    # --- one request ------------------------------------------------------------------------

    def find(self, text: str) -> tuple[Plan | None, str, int]:
        """The item, mode and step of a request's user text."""
        mode = "cota" if COTA_MARK in text else "direct"
        start = text.find(REQUEST_MARK)
        if start < 0:
            return None, mode, 0
        end = text.find(NOW, start) if mode == "cota" else -1
        request = text[start:end if end > 0 else len(text)]
        matches = [plan for question, plan in self.plans.items() if question in request]
        plan = max(matches, key=lambda p: len(p.question), default=None)
        return plan, mode, text.count(REQUEST_MARK) if mode == "cota" else 1

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        model = body.get("model")
        plan, mode, index = self.find(user_text(body)) if isinstance(body.get("messages"), list) else (None, "", 0)
        with self.lock:
            self.requests.append(Request(plan.id if plan else None, index, mode, str(model), body))
        if model not in MODELS:
            return _error(handler, 404, f"The model `{model}` does not exist.")
        if plan is None:
            return _error(handler, 400, "no benchmark question in this request")
        if mode == "direct":
            reply, last = plan.direct[model], True
        else:
            script = plan.scripts[model]
            reply = script[min(index, len(script)) - 1]
            last = reply.kind == "final" or index >= self.max_replies + 1
        held = plan.id in self.hold
        if last:
            with self.lock:
                if self.finish_budget is not None and len(self.finished) >= self.finish_budget:
                    held = True
                else:
                    self.finished.append(plan.id)
        if held:
            self.holding.set()
            self.release.wait()
        if self.delay_s:
            time.sleep(self.delay_s)  # the model generating
        _stream(handler, reply.text, usage(reply.text, index, mode), self.chunk)


def _event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _stream(handler: BaseHTTPRequestHandler, text: str, use: dict[str, int], size: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()

    def send(raw: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        handler.wfile.flush()

    send(_event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}))
    for i in range(0, len(text), size):
        send(_event({"choices": [{"index": 0, "delta": {"content": text[i:i + size]}, "finish_reason": None}]}))
    send(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    send(_event({"choices": [], "usage": {**use, "total_tokens": use["prompt_tokens"] + use["completion_tokens"]}}))
    send(b"data: [DONE]\n\n")
    handler.wfile.write(b"0\r\n\r\n")


def _error(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
    data = json.dumps({"error": {"message": message}}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
