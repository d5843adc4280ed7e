"""The ``transformers`` backend on tiny checkpoints that mirror the released TACO ones.

The checkpoints are built here (random weights, real layout and config switches), saved, and loaded
through the same code users hit. Their text is garbage; the loop must handle it all the same.
"""

from __future__ import annotations

import json
import sys
import threading

import pytest
from PIL import Image

from taco_app.backends import BackendError
from taco_app.backends.transformers.loading import LoadOptions, load_processor, resolve
from taco_app.backends.transformers.backend import Detokenizer, PrefixCache, TransformersBackend, common_prefix
from taco_app.cota import events as ev
from taco_app.cota.prompt import build_prompt, user_request
from taco_app.cota.traces import load_trace
from taco_app.store.db import Store
from taco_app.store.queries import get_trace

from .conftest import ROOT, of_kind, run_loop
from .tiny import mantis

FUEL = ROOT / "assets" / "examples" / "fuel_prices.png"
QUESTION = "How much gas can I buy with $50?"


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory):
    return mantis.build(tmp_path_factory.mktemp("mantis-siglip"), tower="siglip")


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    return mantis.build(tmp_path_factory.mktemp("mantis-clip"), tower="clip")


def backend(path, **options) -> TransformersBackend:
    options.setdefault("max_new_tokens", 16)
    return TransformersBackend(LoadOptions(model_id=str(path), device="cpu", **options))


def session(be, images, max_replies=1, **kwargs) -> list[ev.Event]:
    return list(run_loop(QUESTION, images, be, max_replies=max_replies, **kwargs))


# --- the processor -------------------------------------------------------------------------------


@pytest.mark.parametrize("tower,tokens", [("siglip", 728), ("clip", 576)])
def test_processor_is_rebuilt_from_the_model_config(siglip_checkpoint, clip_checkpoint, tower, tokens):
    from transformers import AutoConfig, AutoProcessor, LlavaProcessor

    folder = siglip_checkpoint if tower == "siglip" else clip_checkpoint
    # The trap the released checkpoints set: their processor class is unknown, AutoProcessor
    # returns the bare tokenizer, and images would silently not be expanded.
    assert not hasattr(AutoProcessor.from_pretrained(folder), "image_processor")
    config = AutoConfig.from_pretrained(folder)
    processor = load_processor(folder, config)
    assert isinstance(processor, LlavaProcessor)
    assert processor.vision_feature_select_strategy == "default"
    inputs = processor(text="image-0: <image>\nhi", images=[Image.open(FUEL).convert("RGB")], return_tensors="pt")
    assert (inputs["input_ids"][0] == config.image_token_id).sum().item() == tokens


@pytest.mark.reference
def test_golden_conversation_token_sequence(siglip_checkpoint, reference):
    """The tokens fed for the golden Mantis prompt: the reference text, 728 image tokens per image."""
    be, ids, tensors, runs = golden_tokens(siglip_checkpoint, reference / "traces" / "TACO-Llama3-SigLIP-125.json", "mantis")
    assert [end - start for start, end in runs] == [728, 728]
    assert tensors["pixel_values"].shape[0] == 2
    # Collapse each run back to one placeholder and decode: the reference text, after Llama-3's BOS.
    tokenizer = be.load().processor.tokenizer
    golden = (reference / "golden_prompt_mantis_trace125_step3.txt").read_text("utf-8")
    assert tokenizer.decode(collapse_runs(ids, runs)) == "<|begin_of_text|>" + golden


def golden_tokens(checkpoint, trace, family):
    """The backend, token ids, image tensors and image-token runs of a reference trace's next prompt."""
    conversation = load_trace(trace)
    prompt = build_prompt(conversation.until_last_user_turn(), family)
    images = [Image.open(conversation.image_paths[i]) for i in prompt.image_ids]
    be = backend(checkpoint)
    ids, tensors = be.encode(prompt, images)
    return be, ids, tensors, be._runs(ids)


def collapse_runs(ids, runs):
    """The token ids with each image's run of image tokens cut to one (which decodes as ``<image>``)."""
    collapsed, previous = [], None
    for start, end in runs:
        collapsed += ids[previous:start] + [ids[start]]
        previous = end
    return collapsed + ids[previous:]


# --- whole CoTA steps --------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["siglip", "clip"])
def test_two_streamed_steps_on_real_images(siglip_checkpoint, clip_checkpoint, tower):
    be = backend(siglip_checkpoint if tower == "siglip" else clip_checkpoint)
    events = session(be, [Image.open(FUEL), Image.new("RGB", (640, 200), "white")])
    steps = of_kind(events, ev.StepStarted)
    assert [s.step for s in steps] == [1, 2]
    for step in (1, 2):
        deltas = [e for e in of_kind(events, ev.ThoughtDelta) if e.step == step]
        assert len(deltas) > 1, "the reply is streamed in pieces, not all at once"
        replies = [e for e in events if isinstance(e, (ev.ActionParsed, ev.ParseError)) and e.step == step]
        assert replies[0].raw == "".join(d.text for d in deltas)
        assert replies[0].usage["output_tokens"] == 16
    finished = events[-1]
    assert isinstance(finished, ev.Finished) and finished.status == "max_steps"  # garbage never terminates


def test_session_is_logged_with_tokens_and_quantisation(siglip_checkpoint):
    be = backend(siglip_checkpoint)
    store = Store.open()
    events = list(store.record(run_loop(QUESTION, [Image.open(FUEL)], be, max_replies=1)))
    trace = get_trace(store, events[0].session_id)
    assert trace.session["backend"] == "transformers" and trace.session["quantisation"] == "none"
    assert [s["prompt_tokens"] for s in trace.steps] == [u.usage["prompt_tokens"] for u in events if getattr(u, "usage", None)]
    assert all(s["output_tokens"] == 16 for s in trace.steps)


def test_prefix_cache_gives_identical_output_and_prefills_only_the_suffix(siglip_checkpoint):
    images = [Image.open(FUEL)]
    cached = backend(siglip_checkpoint, max_new_tokens=24)
    plain = backend(siglip_checkpoint, max_new_tokens=24, prefix_cache=False)
    with_cache = session(cached, images, max_replies=4)
    without = session(plain, images, max_replies=4)

    def replies(events):
        return [e for e in events if isinstance(e, (ev.ActionParsed, ev.ParseError))]

    assert [r.raw for r in replies(with_cache)] == [r.raw for r in replies(without)]
    usage = [r.usage for r in replies(with_cache)]
    prefilled = [u["prompt_tokens"] - u["cached_tokens"] for u in usage]
    full = [u["prompt_tokens"] for u in usage]
    print("prompt tokens per step:", full, "prefilled with the cache:", prefilled)
    assert len(usage) == 5 and all(u["cached_tokens"] == 0 for u in replies(without) for u in [u.usage])
    assert prefilled[0] == full[0]  # the first prompt ever: nothing to reuse yet
    for step in range(1, 5):  # later steps prefill only what the previous step did not contain
        assert prefilled[step] < 400 < full[step]
    # A second session reuses the pinned system prompt (and the shared image request).
    again = replies(session(cached, images, max_replies=0))[0].usage
    assert again["cached_tokens"] >= 3000


def test_prefix_cache_keeps_image_tokens_whole():
    cache = PrefixCache()

    class Fake:
        def __init__(self, n):
            self.n = n

        def get_seq_length(self):
            return self.n

        def crop(self, delta):
            self.n += delta

    cache.put([1, 2, 9, 9, 9, 3], Fake(6))
    kept_cache, kept = cache.take([1, 2, 9, 9, 8, 8], align=lambda keep: 2 if 2 < keep < 5 else keep)
    assert kept == 2 and kept_cache.n == 2
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0


def test_detokenizer_never_splits_a_character(siglip_checkpoint):
    tokenizer = backend(siglip_checkpoint).load().processor.tokenizer
    text = "Gasoline costs €3.49 — 日本語 ✓ {\"thought\": \"ok\"}"
    detok = Detokenizer(tokenizer)
    pieces = [detok.push(t) for t in tokenizer(text, add_special_tokens=False).input_ids]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)


def test_stop_ends_generation_and_the_next_run_is_fine(siglip_checkpoint):
    be = backend(siglip_checkpoint, max_new_tokens=200)
    cancel = threading.Event()
    events = []
    for event in run_loop(QUESTION, [Image.open(FUEL)], be, cancel=cancel):
        events.append(event)
        if isinstance(event, ev.ThoughtDelta):
            cancel.set()
    assert events[-1].status == "cancelled" and len(of_kind(events, ev.ThoughtDelta)) == 1
    after = session(be, [Image.open(FUEL)], max_replies=0)
    assert after[-1].status == "max_steps" and of_kind(after, ev.ParseError)[0].usage["output_tokens"] == 200


# --- quantisation and devices ----------------------------------------------------------------------


def test_4bit_on_cpu_quantises_the_language_model_only(siglip_checkpoint):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit
    from torch import nn

    be = backend(siglip_checkpoint, quantisation="4bit")
    model = be.load().model
    assert isinstance(model.model.language_model.layers[0].mlp.up_proj, Linear4bit)
    assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, Linear4bit)
    tower = [m for m in model.model.vision_tower.modules() if isinstance(m, (nn.Linear, Linear4bit))]
    for kept in (model.lm_head, model.model.multi_modal_projector.linear_1, *tower):
        assert isinstance(kept, nn.Linear) and not isinstance(kept, Linear4bit)
    events = session(be, [Image.open(FUEL)], max_replies=0)
    assert of_kind(events, ev.ParseError)[0].usage["output_tokens"] == 16
    assert be.status.state == "ready" and be.status.quantisation == "4bit"


def without_cuda(monkeypatch) -> None:
    """This process as on a machine without CUDA: the app's CUDA check, wherever it was imported, and torch's."""
    import torch

    from taco_app import weights

    real = weights.cuda_available
    for module in [m for name, m in sys.modules.items() if name.startswith("taco_app")]:
        if getattr(module, "cuda_available", None) is real:
            monkeypatch.setattr(module, "cuda_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_without_cuda_the_default_refuses_to_load_an_8b_model(monkeypatch):
    without_cuda(monkeypatch)
    with pytest.raises(BackendError, match="no CUDA GPU here.*--device cpu"):
        TransformersBackend(LoadOptions())
    with pytest.raises(BackendError, match="no CUDA GPU"):
        TransformersBackend(LoadOptions(device="cuda"))


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(BackendError, match=r"python app.py download --taco"):
        resolve("Salesforce/llama3-siglip-mantis-taco-8b")
    with pytest.raises(BackendError, match="no config.json"):
        resolve(str(tmp_path))


def test_original_llava_next_layout_asks_for_convert(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["LlavaQwenForCausalLM"], "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 10}))
    with pytest.raises(BackendError, match="python app.py convert"):
        backend(tmp_path).family


def test_a_failed_load_is_reported_and_the_backend_stays_usable(tmp_path, siglip_checkpoint):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (broken / name).write_bytes((siglip_checkpoint / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    be = backend(broken)
    events = session(be, [Image.open(FUEL)], max_replies=0)
    assert events[-1].status == "failed" and of_kind(events, ev.Error)[0].code == "backend"
    assert be.status.state == "failed" and be.status.message


@pytest.mark.gpu
def test_4bit_on_cuda(siglip_checkpoint):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from bitsandbytes.nn import Linear4bit

    be = TransformersBackend(LoadOptions(model_id=str(siglip_checkpoint), max_new_tokens=16))
    assert be.quantisation == "4bit"
    model = be.load().model
    assert isinstance(model.model.language_model.layers[0].mlp.up_proj, Linear4bit)
    assert model.model.multi_modal_projector.linear_1.weight.dtype == torch.bfloat16
    events = session(be, [Image.open(FUEL)], max_replies=1)
    assert events[-1].status == "max_steps" and be.status.gpu_memory_bytes > 0


def test_benchmark_runs_on_a_tiny_model(siglip_checkpoint, tmp_path):
    from benchmarks import bench_model

    out = tmp_path / "bench.json"
    assert bench_model.main(["--size", "tiny", "--new-tokens", "8", "--checkpoint", str(siglip_checkpoint), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    run_ = report["runs"][0]
    assert run_["quantisation"] == "none" and run_["load_s"] > 0
    assert run_["step1_cold"]["cached_tokens"] == 0 and run_["step1_cold"]["output_tokens"] == 8
    cached, plain = run_["step2_with_prefix_cache"], run_["step2_without_prefix_cache"]
    assert cached["prompt_tokens"] == plain["prompt_tokens"] and plain["cached_tokens"] == 0
    assert cached["prompt_tokens"] - cached["cached_tokens"] < 400 < cached["cached_tokens"]


def test_status_follows_the_load(siglip_checkpoint):
    be = backend(siglip_checkpoint)
    assert be.status.state == "not loaded" and "not loaded" in be.status.summary()
    be.load()
    status = be.status
    assert status.state == "ready" and status.progress == 1.0 and status.load_s > 0
    assert status.events == ["finding the weights", "reading the config", "loading the weights (none)", "loading the processor", "ready"]
    assert (status.device, status.dtype, status.quantisation, status.family) == ("cpu", "float32", "none", "mantis")
    assert status.summary() == f"{siglip_checkpoint} on cpu (none, float32)"


@pytest.mark.parametrize("raised,message", [
    ("oom", "out of GPU memory while loading"),
    (OSError("401 Client Error: access to model Salesforce/x is restricted (gated repo)"), "gated or private"),
    (OSError("Failed to resolve 'huggingface.co' ([Errno -3] Temporary failure in name resolution)"), "cannot be reached"),
])
def test_load_failures_are_explained_and_the_app_goes_on(siglip_checkpoint, monkeypatch, raised, message):
    import torch
    from transformers import LlavaForConditionalGeneration

    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") if raised == "oom" else raised

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", fail)
    be = backend(siglip_checkpoint)
    events = session(be, [Image.open(FUEL)], max_replies=0)
    assert events[-1].status == "failed" and message in of_kind(events, ev.Error)[0].message
    assert be.status.state == "failed" and message in be.status.message
    monkeypatch.undo()
    assert session(be, [Image.open(FUEL)], max_replies=0)[-1].status == "max_steps"  # fixed: the next run loads


# --- the Qwen2 checkpoint, after convert ----------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_checkpoint(tmp_path_factory):
    from taco_app.backends.transformers.convert import convert

    from .tiny import llava_qwen

    root = tmp_path_factory.mktemp("qwen2")
    return convert(llava_qwen.build(root / "original"), root / "converted")


def test_converted_qwen2_runs_two_streamed_steps(qwen_checkpoint):
    be = backend(qwen_checkpoint)
    assert be.family == "qwen2"
    events = session(be, [Image.open(FUEL), Image.new("RGB", (300, 900), "white")])
    assert [s.step for s in of_kind(events, ev.StepStarted)] == [1, 2]
    replies = [e for e in events if isinstance(e, (ev.ActionParsed, ev.ParseError))]
    assert len(replies) == 2 and all(r.usage["output_tokens"] == 16 for r in replies)
    assert replies[1].usage["cached_tokens"] > 0
    assert len([e for e in of_kind(events, ev.ThoughtDelta) if e.step == 1]) > 1
    assert events[-1].status == "max_steps"


@pytest.mark.reference
def test_golden_qwen2_token_sequence_has_a_newline_after_each_image(qwen_checkpoint, reference):
    be, ids, _tensors, runs = golden_tokens(qwen_checkpoint, reference / "traces" / "TACO-Qwen2-SigLIP-21.json", "qwen2")
    tokenizer = be.load().processor.tokenizer
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert len(runs) == 2 and all(ids[end:end + len(newline)] == newline for _start, end in runs)
    golden = (reference / "golden_prompt_qwen2_trace21_step2.txt").read_text("utf-8")
    assert tokenizer.decode(collapse_runs(ids, runs)) == golden.replace("<image>", "<image>\n")


def test_cli_convert(tmp_path):
    import subprocess
    import sys

    from .tiny import llava_qwen

    source = llava_qwen.build(tmp_path / "original")
    command = [sys.executable, "app.py", "convert", str(source), str(tmp_path / "converted")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "converted")
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and len(again.stderr.strip().splitlines()) == 1


def test_the_benchmark_builds_the_real_mantis_8b_shapes(tmp_path):
    """The random-weight benchmark model has Llama-3-8B's and SigLIP so400m's parameter counts."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from .tiny import chat_tokenizer

    config = mantis.config(chat_tokenizer.build(tmp_path, "mantis"), "siglip", size="real")
    with torch.device("meta"):  # shapes only: no memory
        model = LlavaForConditionalGeneration(config)
    language = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert round(language / 1e9, 2) == 8.03  # Llama-3-8B-Instruct (+ the two added token rows)
    assert 0.40e9 < vision < 0.43e9  # SigLIP so400m's vision half
    assert config.vision_feature_select_strategy == "default" and config.vision_config.image_size == 384


def test_a_hub_id_loads_from_the_local_cache_at_a_revision(siglip_checkpoint, tmp_path, monkeypatch):
    """``transformers:ORG/NAME`` with ``--revision`` resolves in the Hugging Face cache, offline."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--Salesforce--tiny-taco"
    for ref, commit in (("main", "a" * 40), ("v1", "b" * 40)):
        shutil.copytree(siglip_checkpoint, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve("Salesforce/tiny-taco") == repo / "snapshots" / ("a" * 40)
    assert resolve("Salesforce/tiny-taco", revision="v1") == repo / "snapshots" / ("b" * 40)
    with pytest.raises(BackendError, match="tiny-taco@v2 are not on this machine"):
        resolve("Salesforce/tiny-taco", revision="v2")
    be = TransformersBackend(LoadOptions(model_id="Salesforce/tiny-taco", revision="v1", device="cpu", max_new_tokens=4))
    events = session(be, [Image.open(FUEL)], max_replies=0)
    assert events[0].model == "Salesforce/tiny-taco" and events[0].revision == "v1"
    assert of_kind(events, ev.ParseError)[0].usage["output_tokens"] == 4


def test_a_folder_under_models_is_found_by_name(siglip_checkpoint, monkeypatch, tmp_path):
    from taco_app.backends.transformers import loading

    monkeypatch.setattr(loading, "MODELS_DIR", tmp_path)
    (tmp_path / "llama3-siglip-mantis-taco-8b").symlink_to(siglip_checkpoint)
    assert resolve("Salesforce/llama3-siglip-mantis-taco-8b") == tmp_path / "llama3-siglip-mantis-taco-8b"


def test_a_fork_prefills_only_what_comes_after_the_fork_point(siglip_checkpoint):
    """Fork step 3 of a stored session with an edited Calculate: the backend that ran the parent
    reuses its cached prefix, up to the end of step 2's observation, and prefills only the rest."""
    from taco_app.fork import fork, plan_fork
    from taco_app.tools import default_tools

    store = Store.open()
    cached = backend(siglip_checkpoint, max_new_tokens=12)
    parent = list(store.record(run_loop(QUESTION, [Image.open(FUEL)], cached, max_replies=2)))
    parent_usage = [e.usage for e in parent if isinstance(e, (ev.ActionParsed, ev.ParseError))]
    plan = plan_fork(store, parent[-1].session_id, 3, thought="add",
                     action={"name": "Calculate", "arguments": {"expression": "50/3.89"}})

    def fork_usage(be):
        events = list(store.record(fork(plan, be, tools=default_tools(), sink=store.images, max_replies=3)))
        assert any(isinstance(e, ev.Observation) and e.step == 3 and "12.85" in e.observation for e in events)
        return [e.usage for e in events if isinstance(e, (ev.ActionParsed, ev.ParseError)) and e.step == 4][0]

    warm = fork_usage(cached)
    cold = fork_usage(backend(siglip_checkpoint, max_new_tokens=12))  # a backend that never saw the parent
    at_fork = parent_usage[2]["prompt_tokens"]  # the parent's step-3 prompt: everything before the fork point, and its cue
    prefilled = warm["prompt_tokens"] - warm["cached_tokens"]
    print(f"fork at step 3: step 4's prompt is {warm['prompt_tokens']} tokens; the parent's step 3 prompt {at_fork}; "
          f"prefilled {prefilled} with the parent's cache, {cold['prompt_tokens'] - cold['cached_tokens']} without")
    assert warm["prompt_tokens"] == cold["prompt_tokens"] > at_fork
    assert at_fork - 16 <= warm["cached_tokens"] < at_fork  # all of the prefix but the assistant cue after it
    assert prefilled == warm["prompt_tokens"] - warm["cached_tokens"] < 200
    assert cold["cached_tokens"] < 3000 < at_fork  # a fresh backend reuses only the pinned system prompt
