"""Finding and loading a TACO checkpoint with transformers: weights, processor, quantisation, status.

- Where: a local folder, a folder under ``models/``, or a Hub id (from the local cache; fetched only
  with ``TACO_ALLOW_DOWNLOAD=1`` or by ``python app.py download --taco``), at an optional revision.
- What: ``LlavaForConditionalGeneration`` (the Mantis/Llama-3 checkpoints) or
  ``LlavaOnevisionForConditionalGeneration`` (the Qwen2 checkpoint after ``python app.py convert``).
- The processor: the released Mantis checkpoints name ``MLlavaProcessor``, which transformers does
  not know, and ``AutoProcessor`` then quietly returns the bare tokenizer. :func:`load_processor`
  notices and builds a ``LlavaProcessor`` from the tokenizer, the saved image-processor settings and
  the model's own config (feature strategy, patch size, image token, CLS token or not).
- How: 4-bit NF4 with bitsandbytes by default on CUDA (bf16 compute; the vision tower, projector and
  ``lm_head`` stay unquantised), ``8bit`` or ``none`` on request. Without CUDA nothing is loaded
  unless the device is asked for explicitly: an 8B model on a CPU is rarely what anyone wants.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from taco_app.cota.backend import BackendError
from taco_app.settings import DEFAULT_MODEL, QUANTISATIONS, current
from taco_app.weights import cuda_available, downloads_allowed, local_path
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# Kept in full precision under 4/8-bit: small, and sensitive to quantisation. transformers 5 matches
# these against full module names, hence the ``model.`` prefix.
FAMILY_OF_TEXT_MODEL = {"llama": "mantis", "qwen2": "qwen2"}
SKIP_QUANTISATION = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@dataclass(frozen=True)
class LoadOptions:
    model_id: str = DEFAULT_MODEL
    revision: str | None = None
    device: str | None = None  # None: CUDA when present; "cpu" loads on the CPU even so
    quantisation: str | None = None  # None: 4bit on CUDA, none on the CPU
    max_new_tokens: int = 2000
    prefix_cache: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> "LoadOptions":
        """From the settings (``TACO_MODEL``, ``TACO_DEVICE`` …, or their flags); an override not None wins."""
        settings = current()
        values: dict[str, Any] = {
            "model_id": settings.model,
            "revision": settings.model_revision,
            "device": settings.device,
            "quantisation": settings.quantisation,
            "max_new_tokens": settings.max_new_tokens,
            "prefix_cache": settings.prefix_cache,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).checked()

    def checked(self) -> "LoadOptions":
        if self.quantisation is not None and self.quantisation not in QUANTISATIONS:
            raise BackendError(f"unknown quantisation {self.quantisation!r}; use one of {', '.join(QUANTISATIONS)}")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise BackendError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N")
        if self.max_new_tokens < 1:
            raise BackendError("max new tokens must be at least 1")
        return self


@dataclass
class ModelStatus:
    """What the UI shows about the local model: where loading is, and what it runs on."""

    state: str = "not loaded"  # not loaded | loading | ready | failed
    model_id: str = ""
    revision: str | None = None
    family: str | None = None
    device: str | None = None
    dtype: str | None = None
    quantisation: str | None = None
    progress: float = 0.0  # 0..1 while loading
    stage: str = ""
    message: str = ""  # why it failed, in words
    load_s: float | None = None
    gpu_memory_bytes: int | None = None
    events: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.state == "ready":
            memory = f", {self.gpu_memory_bytes / 2**30:.1f} GiB GPU memory" if self.gpu_memory_bytes else ""
            return f"{self.model_id} on {self.device} ({self.quantisation}, {self.dtype}){memory}"
        if self.state == "loading":
            return f"loading {self.model_id}: {self.stage} ({self.progress:.0%})"
        if self.state == "failed":
            return f"{self.model_id} could not be loaded: {self.message}"
        return f"{self.model_id} (not loaded yet)"


@dataclass
class LoadedCheckpoint:
    """A TACO checkpoint ready to generate: the model, its processor, and how it was loaded."""

    model: Any
    processor: Any
    family: str  # "mantis" | "qwen2"
    device: str
    quantisation: str
    dtype: str


def resolve(model_id: str, revision: str | None = None) -> Path | str:
    """The checkpoint's folder on this machine, or the Hub id when downloads are allowed.

    Raises a :class:`BackendError` naming the fix when the weights are not here.
    """
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BackendError(f"{folder} has no config.json: it is not a model checkpoint folder")
        return folder
    under_models = MODELS_DIR / model_id.rsplit("/", 1)[-1]
    if (under_models / "config.json").is_file():
        return under_models
    cached = local_path(model_id, revision=revision)
    if cached is not None:
        return cached
    if model_id.count("/") != 1 or model_id.startswith((".", "/", "~")):
        raise BackendError(f"model {model_id!r} is neither a folder with a checkpoint nor a Hugging Face id")
    if downloads_allowed():
        return model_id
    hint = "python app.py download --taco" if model_id.startswith("Salesforce/") else f"huggingface-cli download {model_id}"
    raise BackendError(
        f"the weights of {model_id}{'@' + revision if revision else ''} are not on this machine: run `{hint}`"
        " with internet access (or set TACO_ALLOW_DOWNLOAD=1 to fetch them on first use), or put the checkpoint"
        f" in {MODELS_DIR}/"
    )


def family_of(config: Any) -> str:
    """The prompt family a checkpoint speaks, from its config."""
    model_type = getattr(config, "model_type", "")
    if model_type == "qwen2" and (getattr(config, "mm_vision_tower", None) or getattr(config, "mm_projector_type", None)):
        raise BackendError(
            "this checkpoint is in the original LLaVA-NeXT layout, which transformers cannot load;"
            " convert it once: python app.py convert SRC models/qwen2-siglip-llava-ov-taco-7b-hf"
        )
    if model_type not in ("llava", "llava_onevision"):
        raise BackendError(f"{model_type or 'this'} checkpoint is not a TACO model (expected llava or llava_onevision)")
    text_type = getattr(config.text_config, "model_type", "")
    if text_type not in FAMILY_OF_TEXT_MODEL:
        raise BackendError(f"the text model {text_type!r} has no TACO prompt format (expected llama or qwen2)")
    return FAMILY_OF_TEXT_MODEL[text_type]


def load_processor(source: Path | str, config: Any, revision: str | None = None) -> Any:
    """A processor that expands ``<image>`` exactly as the model's config needs."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, LlavaProcessor

    kwargs = hub_kwargs(revision)
    processor = AutoProcessor.from_pretrained(str(source), **kwargs)
    if hasattr(processor, "image_processor"):
        return processor
    # Mantis's processor class is unknown to transformers: build the equivalent from parts.
    if config.model_type != "llava":
        raise BackendError(f"{source} has no processor that transformers can load for {config.model_type}")
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(str(source), **kwargs)
    vision = config.vision_config
    # A CLIP tower prepends a CLS embedding to its patches; SigLIP does not. "default" drops the first.
    extra = 1 if vision.model_type == "clip_vision_model" else 0
    image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy, image_token=image_token,
        num_additional_image_tokens=extra,
    )


def hub_kwargs(revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": not downloads_allowed()}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def plan(options: LoadOptions) -> LoadOptions:
    """Settle device and quantisation, refusing an implicit 8B load on a machine without CUDA."""
    has_cuda = cuda_available()
    device = options.device
    if device is None:
        if not has_cuda:
            raise BackendError(
                "no CUDA GPU here: a TACO checkpoint (8B parameters) needs one to run at a usable speed."
                " Replayed examples and manual steps still work; --backend openai uses a model served"
                " elsewhere; --device cpu loads it on the CPU anyway (slow; ~32 GB of RAM)"
            )
        device = "cuda"
    elif device.startswith("cuda") and not has_cuda:
        raise BackendError(f"device {device} was asked for, but torch sees no CUDA GPU on this machine")
    quantisation = options.quantisation or ("4bit" if device.startswith("cuda") else "none")
    return replace(options, device=device, quantisation=quantisation)


def quantization_config(quantisation: str) -> Any:
    if quantisation == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401  (checked here so the message names the missing package)
    except ImportError:
        raise BackendError(f"{quantisation} loading needs bitsandbytes: pip install -r requirements.txt") from None
    import torch
    from transformers import BitsAndBytesConfig

    if quantisation == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                  llm_int8_skip_modules=SKIP_QUANTISATION)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_QUANTISATION)


def load(options: LoadOptions, report: Callable[[str, float], None] = lambda stage, progress: None) -> LoadedCheckpoint:
    """Load model and processor; every failure becomes a :class:`BackendError` that says the fix."""
    options = plan(options)
    report("finding the weights", 0.05)
    source = resolve(options.model_id, options.revision)
    report("reading the config", 0.1)
    import torch
    from transformers import AutoConfig, LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(str(source), **hub_kwargs(options.revision))
    except ValueError as err:  # e.g. model_type qwen2 with mm_* keys is still a Qwen2Config; others fail here
        raise BackendError(f"cannot read the config of {options.model_id}: {err}") from err
    except OSError as err:
        raise BackendError(_hub_error(options.model_id, err)) from err
    family = family_of(config)
    cls = LlavaForConditionalGeneration if config.model_type == "llava" else LlavaOnevisionForConditionalGeneration
    dtype = torch.bfloat16 if options.device.startswith("cuda") else torch.float32
    report(f"loading the weights ({options.quantisation})", 0.2)
    try:
        model = cls.from_pretrained(
            str(source), dtype=dtype, device_map={"": options.device},
            quantization_config=quantization_config(options.quantisation), **hub_kwargs(options.revision),
        ).eval()
    except torch.OutOfMemoryError as err:
        raise BackendError(_oom_message(options)) from err
    except OSError as err:
        raise BackendError(_hub_error(options.model_id, err)) from err
    report("loading the processor", 0.9)
    try:
        processor = load_processor(source, config, options.revision)
    except OSError as err:
        raise BackendError(_hub_error(options.model_id, err)) from err
    report("ready", 1.0)
    return LoadedCheckpoint(model, processor, family, options.device, options.quantisation, str(dtype).removeprefix("torch."))


def _oom_message(options: LoadOptions) -> str:
    hint = " Try --quantisation 4bit." if options.quantisation != "4bit" else ""
    return (f"out of GPU memory while loading {options.model_id} ({options.quantisation}); close other programs"
            f" using the GPU (nvidia-smi lists them) or pick a smaller setting.{hint}")


def _hub_error(model_id: str, err: OSError) -> str:
    text = str(err)
    if "gated" in text.lower() or "401" in text or "403" in text:
        return (f"{model_id} is gated or private on the Hugging Face Hub: accept its licence on its page and log in"
                " (huggingface-cli login), then run python app.py download --taco")
    if "connect" in text.lower() or "resolve" in text.lower() or "offline" in text.lower():
        return f"the Hugging Face Hub cannot be reached to fetch {model_id}: check the network, or download it where there is one"
    return f"{model_id} could not be loaded: {text.splitlines()[0] if text else type(err).__name__}"


def gpu_memory_bytes(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.memory_allocated(device))


def timed_load(options: LoadOptions, status: ModelStatus) -> LoadedCheckpoint:
    """:func:`load`, keeping ``status`` current for the UI (progress, then the result or the error)."""

    def report(stage: str, progress: float) -> None:
        status.stage, status.progress = stage, progress
        status.events.append(stage)

    status.state, status.model_id, status.revision, status.message = "loading", options.model_id, options.revision, ""
    started = time.perf_counter()
    try:
        loaded = load(options, report)
    except BackendError as err:
        status.state, status.message = "failed", str(err)
        raise
    except Exception as err:  # a corrupt file, an unsupported setting: the app keeps running, and says why
        status.state, status.message = "failed", f"{options.model_id} could not be loaded: {type(err).__name__}: {err}"
        raise BackendError(status.message) from err
    status.state, status.load_s = "ready", round(time.perf_counter() - started, 3)
    status.family, status.device, status.dtype, status.quantisation = loaded.family, loaded.device, loaded.dtype, loaded.quantisation
    status.gpu_memory_bytes = gpu_memory_bytes(loaded.device)
    return loaded
