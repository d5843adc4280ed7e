"""The command line: ``python app.py [ui|run|fork|eval|eval-report|prompt|doctor|download|convert|export|import|rate|prefer] …``.

The command names and flags are a contract (scripts and checks rely on them); see DESIGN.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from taco_app import __version__


DIRECT_MAX_NEW_TOKENS = 512


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from taco_app.backends import backend_help
    from taco_app.cota.prompt import FAMILIES, MAX_REPLIES, MODES
    from taco_app.evaluation.scoring import SCORERS
    from taco_app.settings import QUANTISATIONS
    from taco_app.store.export import DATASET, FORMATS, RATINGS
    from taco_app.weights import SLOT_KEYS

    parser = argparse.ArgumentParser(prog="app.py", description="TACO Studio: run, watch, judge and improve TACO models.")
    parser.add_argument("--version", action="version", version=f"TACO Studio {__version__}")
    parser.add_argument("--home", help="data folder (default: $TACO_HOME or ~/.taco)")
    parser.add_argument("--db", help="database URL (default: $TACO_DB_URL or SQLite in the data folder)")
    sub = parser.add_subparsers(dest="command")

    ui = sub.add_parser("ui", help="start the web app (the default)")
    for target in (parser, ui):  # `python app.py --port 8000` and `python app.py ui --port 8000` alike
        target.add_argument("--host", default=argparse.SUPPRESS, help="address to listen on (default 127.0.0.1)")
        target.add_argument("--port", type=int, default=argparse.SUPPRESS, help="default 7860")
        target.add_argument("--share", action="store_true", default=argparse.SUPPRESS,
                            help="also publish a temporary public link (off by default)")
        target.add_argument("--auth", metavar="USER:PASSWORD", default=argparse.SUPPRESS,
                            help="require this login (or set TACO_AUTH)")

    run = sub.add_parser("run", help="run one session without the web app")
    run.add_argument("--image", action="append", default=[], metavar="PATH", help="an input image (repeatable)")
    run.add_argument("--question", required=True)
    fork = sub.add_parser("fork", help="run a stored session again from step K, with that step edited (or not)")
    fork.add_argument("session_id", metavar="SESSION_ID")
    fork.add_argument("--step", type=int, required=True, metavar="K", help="the step to replace (1: run again)")
    fork.add_argument("--thought", help="step K's new thought (default: the stored one)")
    fork.add_argument("--action", metavar="JSON", help='step K\'s new action, e.g. \'{"name": "Calculate", '
                      '"arguments": {"expression": "2+3"}}\' (default: the stored one); neither: the model writes step K')
    evaluate = sub.add_parser("eval", help="run a benchmark through the model: every item a stored session, scored")
    evaluate.add_argument("--data", required=True, metavar="FILE",
                          help="a JSONL file (one item per line), a folder saved with datasets' save_to_disk, or a parquet file")
    evaluate.add_argument("--name", required=True, metavar="RUN",
                          help="the run's name; running it again goes on where it stopped")
    evaluate.add_argument("--mode", choices=MODES, default="cota",
                          help="cota: TACO's chain of thought-and-action (default); direct: its direct-answer baseline")
    evaluate.add_argument("--concurrency", type=int, default=1, metavar="N",
                          help="sessions at once (default 1): for --backend openai, requests the server batches")
    evaluate.add_argument("--limit", type=int, metavar="N", help="only the first N items")
    evaluate.add_argument("--resume", action="store_true",
                          help="go on with a run of this name although its settings (data, mode, model …) changed")
    evaluate.add_argument("--scorer", choices=list(SCORERS), default="standard",
                          help="standard: exact, accepted answers, choices, numbers within 1%% (default); judge: an LLM judge")
    evaluate.add_argument("--judge-model", metavar="NAME", help="--scorer judge: the model name on the judge's server")
    evaluate.add_argument("--judge-base-url", metavar="URL",
                          help="--scorer judge: an OpenAI-compatible server (default: --base-url / TACO_OPENAI_BASE_URL)")
    report = sub.add_parser("eval-report", help="write an eval run's report: report.json, report.md and plots")
    report.add_argument("run", metavar="RUN")
    report.add_argument("--vs", metavar="OTHER_RUN", help="compare with another run, item by item (the baseline)")
    report.add_argument("--out", required=True, metavar="DIR", help="where to write the report (made if missing)")
    for command in (run, fork, evaluate):
        command.add_argument("--backend", default="auto",
                             help=f"where the model's replies come from (default auto). {backend_help()}")
        command.add_argument("--family", choices=FAMILIES, help="prompt format (default: the backend's)")
        model = command.add_argument_group("local checkpoint (--backend transformers[:MODEL])")
        model.add_argument("--device", help="cuda, cuda:N or cpu (default: CUDA when present; $TACO_DEVICE)")
        model.add_argument("--quantisation", choices=QUANTISATIONS,
                           help="default: 4bit on CUDA, none on the CPU ($TACO_QUANTISATION)")
        model.add_argument("--revision", help="a branch, tag or commit of a Hub checkpoint ($TACO_MODEL_REVISION)")
        model.add_argument("--max-new-tokens", type=int, help="per reply (default 2000, as TACO; $TACO_MAX_NEW_TOKENS)")
        api = command.add_argument_group("OpenAI-compatible server (--backend openai)")
        api.add_argument("--base-url", help="e.g. http://127.0.0.1:8000/v1 ($TACO_OPENAI_BASE_URL)")
        api.add_argument("--api-model", help="the model name the server knows ($TACO_OPENAI_MODEL)")
        command.add_argument("--max-replies", type=int, default=MAX_REPLIES,
                             help=f"replies allowed after the first (default {MAX_REPLIES}, as TACO)")
        command.add_argument("--json", action="store_true", help="one JSON object per event per line")

    prompt = sub.add_parser("prompt", help="print the exact text the model is given")
    prompt.add_argument("--family", choices=FAMILIES, default=FAMILIES[0])
    prompt.add_argument("--trace", help="a conversation (reference trace format): print the prompt for its next step")

    sub.add_parser("doctor", help="what works on this machine, and every setting with where it came from")
    download = sub.add_parser("download", help="fetch model weights into the Hugging Face cache for offline use")
    download.add_argument("--taco", action="store_true", help="also the TACO checkpoints (about 16 GB each)")
    download.add_argument("--only", action="append", choices=SLOT_KEYS, help="just these tool models")
    convert = sub.add_parser("convert", help="turn the original LLaVA-NeXT TACO-Qwen2 checkpoint into a transformers LLaVA-OneVision one")
    convert.add_argument("src", metavar="SRC", help="the original checkpoint: a folder, or a Hub id in the local cache"
                         " (e.g. Salesforce/qwen2-siglip-llava-ov-taco-7b)")
    convert.add_argument("dst", metavar="DST", help="a new or empty folder for the converted checkpoint")
    export = sub.add_parser("export", help="export sessions as CoTA training data")
    export.add_argument("--format", choices=list(FORMATS), required=True)
    export.add_argument("--out", required=True, metavar="DIR", help="an empty folder (or pass --force)")
    export.add_argument("--rating", choices=RATINGS, help="only sessions with this rating (up: thumbs-up)")
    export.add_argument("--corrected-only", action="store_true", help="only sessions with a correction")
    export.add_argument("--since", metavar="YYYY-MM-DD", help="only sessions created on or after this date (UTC)")
    export.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    export.add_argument("--dataset-name", default=DATASET, metavar="NAME",
                        help=f"the rows' metadata.dataset and id prefix (default {DATASET})")
    export.add_argument("--push-to-hub", metavar="REPO",
                        help="then upload the folder as a private Hugging Face dataset repository (needs the network)")
    pairs = list(dict.fromkeys(value for fmt in FORMATS.values() for value in fmt.options.get("pair", ())))
    export.add_argument("--pair", choices=pairs or None, help=f"what a preference pair holds (trl-dpo): "
                        f"{' or '.join(pairs)}: the two different steps, or the two rests of the traces from there")
    import_ = sub.add_parser("import", help="import reference traces (JSON files, folders) or a cota-mantis .jsonl export")
    import_.add_argument("paths", nargs="+", metavar="PATH")
    # Values are checked by the commands, not argparse, so that a bad one is one line on stderr.
    rate = sub.add_parser("rate", help="thumbs up or down on a stored session, or on one of its steps")
    rate.add_argument("session_id", metavar="SESSION_ID")
    rate.add_argument("rating", metavar="up|down")
    rate.add_argument("--step", metavar="K", help="rate step K instead of the whole session")
    rate.add_argument("--blame", metavar="tool|model",
                      help="a step rated down: the tool's observation was wrong, or the model misused a right one (default: not said, counted as the model's)")
    rate.add_argument("--note", metavar="TEXT", help="a note kept with the rating")
    prefer = sub.add_parser("prefer", help="record that one session answered better than another on the same question and images")
    prefer.add_argument("winner_id", metavar="WINNER_ID")
    prefer.add_argument("loser_id", metavar="LOSER_ID")
    prefer.add_argument("--reason", metavar="TEXT", help="why (kept with the preference)")
    prefer.add_argument("--tie", action="store_true", help="the two answered as well as each other")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. Settings are read and checked first: a bad one stops it (exit 2)."""
    args = build_parser().parse_args(argv)
    command = args.command or "ui"
    if command != "ui":  # a command's failure is its one line on stderr; the web app logs details instead
        logging.getLogger("taco_app").addHandler(logging.NullHandler())
    from taco_app.settings import Settings, SettingsError, flag_values, use
    from taco_app.store.db import StoreError

    try:  # flags over the environment, without touching the environment
        settings = Settings.read(flag_values(args))
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with use(settings):
            return COMMANDS[command](args)
    except (UsageError, SettingsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StoreError as err:  # the database is unreachable, locked, full or gone: not the caller's mistake
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- commands ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from taco_app.runner import InputImage, run
    from taco_app.settings import current
    from taco_app.tools import default_tools
    from taco_app.media import ImageLoadError

    from taco_app.cota.prompt import check_question

    try:
        args.question = check_question(args.question)
    except ValueError as err:
        raise UsageError(f"--question: {err}") from None
    if args.max_replies < 0:
        raise UsageError("--max-replies must be 0 or more")
    try:
        inputs = [InputImage.open(path) for path in args.image]
    except ImageLoadError as err:
        raise UsageError(str(err)) from None
    for k, image in enumerate(inputs):
        for note in image.notes:  # e.g. an animation: only its first frame is used
            print(f"note: image-{k}: {note}", file=sys.stderr)
    backend = _backend(args)

    from taco_app.store.db import Store

    store = Store.open()
    return _follow(store, lambda cancel: run(args.question, inputs, backend, tools=default_tools(), sink=store.images,
                                             max_replies=args.max_replies, cancel=cancel,
                                             tool_timeout_s=current().tool_timeout), args.json)


def cmd_fork(args: argparse.Namespace) -> int:
    """``run`` from a stored session's step K; the final line adds ``parent_session_id`` and ``fork_step``."""
    from taco_app.fork import ForkError, fork, plan_fork
    from taco_app.settings import current
    from taco_app.store.db import Store
    from taco_app.tools import default_tools

    if args.max_replies < 0:
        raise UsageError("--max-replies must be 0 or more")
    store = Store.open()
    try:
        plan = plan_fork(store, args.session_id, args.step, thought=args.thought, action=args.action)
    except ForkError as err:
        raise UsageError(str(err)) from None
    backend = _backend(args)
    lineage = {"parent_session_id": plan.parent_session_id, "fork_step": plan.step}
    return _follow(store, lambda cancel: fork(plan, backend, tools=default_tools(), sink=store.images,
                                              max_replies=args.max_replies, cancel=cancel,
                                              tool_timeout_s=current().tool_timeout), args.json, lineage)


def cmd_eval(args: argparse.Namespace) -> int:
    """Progress and skipped rows on stderr; with --json one line per finished item, then the summary."""
    from taco_app.evaluation.data import DataError, load_benchmark
    from taco_app.evaluation.runs import EvalError, check_name, evaluate
    from taco_app.settings import current
    from taco_app.store.db import Store
    from taco_app.tools import default_tools

    try:
        check_name(args.name)
        benchmark = load_benchmark(args.data)
    except (EvalError, DataError) as err:
        raise UsageError(str(err)) from None
    for problem in benchmark.problems:
        print(f"skipped {problem}", file=sys.stderr)
    scorer = _scorer(args)
    # TACO's harness let a direct answer have 512 new tokens (2000 for a CoTA step): the same here unless
    # --max-new-tokens or TACO_MAX_NEW_TOKENS says otherwise.
    direct_default = args.mode == "direct" and current().source("max_new_tokens") == "default"
    backend = _backend(args, max_new_tokens=DIRECT_MAX_NEW_TOKENS if direct_default else None)
    if args.concurrency > 1 and backend.max_sessions and backend.max_sessions < args.concurrency:
        print(f"note: the {backend.name} backend runs {backend.max_sessions} session(s) at a time, not {args.concurrency}",
              file=sys.stderr)
    sys.stdout.reconfigure(errors="backslashreplace")
    bar = _EvalBar(args.json)
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl-C: finished items are kept
    try:
        summary = evaluate(Store.open(), benchmark, args.name, backend, tools=default_tools(), backend_spec=args.backend,
                           mode=args.mode, scorer=scorer, concurrency=args.concurrency, resume=args.resume,
                           limit=args.limit, cancel=cancel, on_item=bar.item, on_failure=bar.failure,
                           on_start=bar.start, max_replies=args.max_replies, tool_timeout_s=current().tool_timeout)
    except EvalError as err:
        raise UsageError(str(err)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    line = summary.as_dict()
    if args.json:
        print(json.dumps(line, ensure_ascii=False), flush=True)
    else:
        lo, hi = line["ci95"]
        accuracy = f"{line['accuracy']:.1%} (95% CI {lo:.1%}–{hi:.1%})" if summary.n else "no item finished"
        print(f"{args.name}: {summary.correct} of {summary.n} right, {accuracy}; report: python app.py eval-report"
              f" {args.name} --out DIR")
    if summary.failed:
        print(f"{len(summary.failed)} item(s) not finished; run the same command again to retry them:", file=sys.stderr)
        for failure in summary.failed[:10]:
            print(f"  {failure.item_id}: {failure.message}", file=sys.stderr)
    if summary.cancelled:
        print(f"stopped: {summary.n} item(s) are kept; run the same command again to go on", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


class _EvalBar:
    """An eval's progress on the terminal (tqdm on stderr: items, accuracy so far, items/s, ETA) and,
    with --json, its item lines on stdout. Called one item at a time."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.bar = None

    def start(self, progress) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=progress.total, initial=progress.done, unit="item", file=sys.stderr, disable=None,
                        dynamic_ncols=True, desc=progress.name)
        self._show(progress)

    def _show(self, progress) -> None:
        if self.bar is not None:
            accuracy = "-" if progress.accuracy is None else f"{progress.accuracy:.1%}"
            self.bar.set_postfix_str(f"accuracy {accuracy}" + (f", {progress.failed} failed" if progress.failed else ""))

    def item(self, done, progress) -> None:
        if self.as_json:
            if self.bar is not None:
                self.bar.clear()
            print(json.dumps(done.as_dict(), ensure_ascii=False), flush=True)
        if self.bar is not None:
            self.bar.update(1)
        self._show(progress)

    def failure(self, failure, progress) -> None:
        if self.bar is not None:
            self.bar.write(f"not finished: {failure.item_id}: {failure.message}", file=sys.stderr)
        self._show(progress)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _scorer(args: argparse.Namespace):
    from taco_app.backends import BackendError
    from taco_app.evaluation.scoring import make_scorer

    if args.scorer != "judge":
        return make_scorer(args.scorer)
    from taco_app.backends.openai import OpenAIBackend
    from taco_app.settings import current

    base_url = args.judge_base_url or args.base_url or current().openai_base_url
    if not base_url or not args.judge_model:
        raise UsageError("--scorer judge needs --judge-model (and --judge-base-url, or --base-url / TACO_OPENAI_BASE_URL):"
                         " the OpenAI-compatible server and model that judge the answers")
    try:
        judge = OpenAIBackend(base_url, args.judge_model, timeout=current().openai_timeout, max_tokens=256)
    except BackendError as err:
        raise UsageError(f"--scorer judge: {err}") from None
    return make_scorer("judge", ask=judge.generate_text)


def cmd_eval_report(args: argparse.Namespace) -> int:
    from taco_app.evaluation.report import write_report
    from taco_app.store import evals
    from taco_app.store.db import Store

    store = Store.open()
    runs = {}
    for name in filter(None, (args.run, args.vs)):
        try:
            runs[name] = evals.run_data(store, name)
        except KeyError:
            known = [info.name for info in evals.list_runs(store)]
            have = f"the runs are: {', '.join(known[:20])}" if known else "there are no eval runs yet (python app.py eval …)"
            raise UsageError(f"no eval run named {name!r}; {have}") from None
    try:
        paths = write_report(runs[args.run], Path(args.out), runs.get(args.vs) if args.vs else None)
    except OSError as err:
        print(f"error: cannot write the report: {err.strerror or err} ({err.filename or args.out})", file=sys.stderr)
        return 1
    run = runs[args.run]
    right = sum(item.correct for item in run.items)
    print(f"{args.run}: {right} of {len(run.items)} right" + (f"; compared with {args.vs}" if args.vs else ""))
    for path in paths:
        print(f"  {path}")
    return 0


def _backend(args: argparse.Namespace, *, max_new_tokens: int | None = None):
    """The backend ``--backend`` names; ``max_new_tokens``: a default for this command, under the flag."""
    from taco_app.backends import BackendError, BackendOptions, create_backend

    try:  # the model's flags (--device, --base-url …) are in the settings, read by each backend
        return create_backend(args.backend, BackendOptions(family=args.family,
                                                           max_new_tokens=args.max_new_tokens or max_new_tokens))
    except BackendError as err:
        raise UsageError(str(err)) from None


def _follow(store, start, as_json: bool, final: dict | None = None) -> int:
    """Record and print the session ``start(cancel)`` yields; Ctrl-C stops it cleanly. ``final``: keys
    the last JSON line adds. Exit 1 when the store could not keep it."""
    from taco_app.cota import events as ev

    # A model can write text that is not valid UTF-8 (a lone surrogate): shown escaped, never a crash.
    sys.stdout.reconfigure(errors="backslashreplace")
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl-C stops the session cleanly
    saved = True
    try:
        for event in store.record(start(cancel)):
            saved = saved and not (isinstance(event, ev.Error) and event.code == "store")
            if as_json:
                line = ev.to_json(event)
                if final and isinstance(event, ev.Finished):
                    line = json.dumps({**json.loads(line), **final}, ensure_ascii=False)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            else:
                _print_human(event)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0 if saved else 1


def _print_human(event) -> None:
    from taco_app.cota import events as ev

    if isinstance(event, ev.SessionStarted):
        print(f"session {event.session_id} · backend {event.backend} · {len(event.images)} image(s)")
    elif isinstance(event, ev.StepStarted):
        print(f"\n── step {event.step} ──")
    elif isinstance(event, ev.ActionParsed):
        print(f"thought: {event.thought}")
        print(f"action:  {json.dumps(event.action.as_dict(), ensure_ascii=False) if event.action else '(none)'}")
    elif isinstance(event, ev.ParseError):
        print(f"could not parse the reply ({event.code}): {event.message}")
    elif isinstance(event, ev.Observation):
        body = event.observation.split("\nThe OBSERVATION can be incomplete")[0]
        print(f"observation: {body}")
    elif isinstance(event, ev.ImageProduced) and event.image:
        print(f"new image {event.image.image_id}: {event.image.path}")
    elif isinstance(event, ev.Error):
        print(f"error: {event.message}")
    elif isinstance(event, ev.Finished):
        print(f"\nanswer: {event.answer if event.answer is not None else '(none)'}   [{event.status}, {event.steps} steps, {event.total_s:.2f}s]")


def cmd_prompt(args: argparse.Namespace) -> int:
    from taco_app.cota.prompt import build_prompt, system_prompt
    from taco_app.cota.traces import TraceFormatError, parse_trace
    from taco_app.store.importer import MAX_TRACE_BYTES
    from taco_app.store.reading import Unreadable, read_regular

    if args.trace:
        try:  # any path: read only a regular file of bounded size (never a FIFO or /dev/zero)
            data = json.loads(read_regular(args.trace, MAX_TRACE_BYTES))
            turns = parse_trace(data, base_dir=Path(args.trace).parent).until_last_user_turn()
        except (Unreadable, TraceFormatError, ValueError, RecursionError) as err:  # ValueError: not UTF-8 or JSON
            raise UsageError(f"--trace {args.trace}: {str(err) or type(err).__name__}") from None
        text = build_prompt(turns, args.family).text
    else:
        text = system_prompt()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from taco_app import doctor

    sys.stdout.write(doctor.text())
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch every tool weight (and with --taco the TACO checkpoints) into the Hugging Face cache."""
    from taco_app.weights import SLOTS, TACO_CHECKPOINTS, download

    targets = [(slot.title, slot.model_id) for slot in SLOTS if not args.only or slot.key in args.only]
    if args.taco:
        targets += [("TACO checkpoint (~16 GB)", model_id) for model_id in TACO_CHECKPOINTS]
    failed = []
    for title, model_id in targets:
        print(f"{title}: {model_id}", flush=True)
        try:
            folder = download(model_id)
        except Exception as err:  # network, permissions, disk: report each and go on with the rest
            failed.append(model_id)
            print(f"  could not download {model_id}: {str(err).splitlines()[0]}", file=sys.stderr)
            continue
        print(f"  ready in {folder}")
    if failed:
        print(f"{len(failed)} of {len(targets)} downloads failed (no internet access?). "
              "Run `python app.py download` again once online; `python app.py doctor` shows what works.", file=sys.stderr)
        return 1
    print("All weights are in the Hugging Face cache; HF_HUB_OFFLINE=1 now works.")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from taco_app.settings import current
    from taco_app.ui.app import serve

    try:
        serve(getattr(args, "host", "127.0.0.1"), getattr(args, "port", 7860), share=getattr(args, "share", False),
              auth=current().secret("auth"))
    except ValueError as err:  # a malformed --auth
        raise UsageError(str(err)) from None
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Progress on stderr; stdout is only the converted folder, for scripts."""
    from taco_app.backends.transformers.convert import ConversionError, convert

    try:
        dst = convert(args.src, args.dst, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except ConversionError as err:
        raise UsageError(str(err)) from None
    print(dst)
    print(f"load it with: python app.py run --backend transformers:{dst} …", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from taco_app.store.db import Store
    from taco_app.store.export import check_dataset_name, export
    from taco_app.store.export.hub import PushError, check_repo, push_to_hub

    try:
        check_dataset_name(args.dataset_name)
        if args.push_to_hub:
            check_repo(args.push_to_hub)
        result = export(Store.open(), args.out, args.format, rating=args.rating, corrected_only=args.corrected_only,
                        since=args.since, force=args.force, dataset=args.dataset_name, pair=args.pair)
    except ValueError as err:  # a non-empty folder, a bad date or name, a refused image path
        raise UsageError(str(err)) from None
    except OSError as err:  # a full disk, no write permission: the earlier files are left whole
        print(f"error: cannot write the export: {err.strerror or err} ({err.filename or args.out})", file=sys.stderr)
        return 1
    print(result.summary(args.format))
    for path in result.files:
        print(f"  {path}")
    if result.skipped:
        print(f"left out {len(result.skipped)} {result.unit}(s):", *result.skipped, sep="\n  ", file=sys.stderr)
    if args.push_to_hub:
        try:
            print(f"pushed to {push_to_hub(Path(args.out), args.push_to_hub)}")
        except PushError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Each bad file or row is skipped with a line on stderr saying why; the rest are imported."""
    from taco_app.store.db import Store
    from taco_app.store.importer import check_paths, import_paths

    try:
        paths = check_paths(args.paths)  # a path that is missing or a FIFO: refused before anything is stored
    except ValueError as err:  # TraceFormatError is a ValueError
        raise UsageError(str(err)) from None
    try:
        report = import_paths(Store.open(), paths)
    except OSError as err:  # the images folder cannot be written (a full disk): what is stored is whole
        print(f"error: cannot store the imported images: {err.strerror or err}", file=sys.stderr)
        return 1
    print(report.summary())
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if report.skipped else 0


def cmd_rate(args: argparse.Namespace) -> int:
    """One line saying what was recorded; a refusal (unknown session or step, a misplaced blame) records nothing."""
    from taco_app.store import queries
    from taco_app.store.db import Store

    step = _step_number(args.step)
    try:
        queries.rate(Store.open(), args.session_id, args.rating, step=step, blame=args.blame, note=args.note)
    except ValueError as err:
        raise UsageError(str(err)) from None
    rated = f"step {step} of session {args.session_id}" if step is not None else f"session {args.session_id}"
    blamed = f", blamed on the {args.blame}" if args.blame else ""
    print(f"recorded: {rated} rated {args.rating}{blamed}{', with a note' if args.note else ''}")
    return 0


def _step_number(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--step must be a step number (1, 2, …), not {text!r}") from None


def cmd_prefer(args: argparse.Namespace) -> int:
    """One line saying what was recorded; two sessions that cannot be compared are refused."""
    from taco_app.store import queries
    from taco_app.store.db import Store

    try:
        queries.prefer(Store.open(), args.winner_id, args.loser_id, reason=args.reason, tie=args.tie)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.tie:
        print(f"recorded: sessions {args.winner_id} and {args.loser_id} answered as well as each other")
    else:
        print(f"recorded: session {args.winner_id} answered better than session {args.loser_id}")
    return 0


COMMANDS = {
    "ui": cmd_ui,
    "run": cmd_run,
    "fork": cmd_fork,
    "eval": cmd_eval,
    "eval-report": cmd_eval_report,
    "prompt": cmd_prompt,
    "doctor": cmd_doctor,
    "download": cmd_download,
    "convert": cmd_convert,
    "export": cmd_export,
    "import": cmd_import,
    "rate": cmd_rate,
    "prefer": cmd_prefer,
}
