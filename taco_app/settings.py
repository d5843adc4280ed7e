"""Settings: every ``TACO_*`` variable, declared once: its type, default, flag and meaning.

Flags override the environment, which overrides these defaults. A command reads them once, when it
starts (:meth:`Settings.read`, the flags given as values), and installs them (:func:`use`); the code
that needs one deep down reads :func:`current`. Outside a command (a test, a library caller)
:func:`current` is the environment's, read again whenever a ``TACO_*`` variable changes.

A value that cannot be used is a :class:`SettingsError`: one line naming the variable (or flag), the
value and what is allowed. ``python -m taco_app.settings --markdown`` prints the README's table.

This is a base module: it imports nothing else from the app.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(ValueError):
    """A ``TACO_*`` variable (or the flag that sets it) holds a value that cannot be used; the message names it."""


PREFIX = "TACO_"
DEFAULT_MODEL = "Salesforce/llama3-siglip-mantis-taco-8b"
DEFAULT_WIKIPEDIA = "https://en.wikipedia.org"
QUANTISATIONS = ("4bit", "8bit", "none")
MAX_SECONDS = 86_400
SECONDS = f"a positive number of seconds (at most {MAX_SECONDS})"
PROBABILITY = "a number between 0 and 1"
SECRETS = ("openai_api_key", "auth")  # never shown: doctor masks them, an error does not repeat them
SWITCH = "on or off (1, true, yes, on / 0, false, no, off)"


def _setting(default: Any, meaning: str, *, allowed: str = "", flag: str = "", shown: str = "", **rules: Any) -> Any:
    """A declared setting: ``allowed`` is said when a value is refused, ``shown`` is the default in words."""
    extra = {key: value for key, value in (("allowed", allowed), ("flag", flag), ("shown", shown)) if value}
    return Field(default, description=meaning, json_schema_extra=extra, **rules)


def _seconds(default: float, meaning: str, *, most: float = MAX_SECONDS) -> Any:
    allowed = SECONDS if most == MAX_SECONDS else f"a positive number of seconds (at most {most:g})"
    return _setting(default, meaning, allowed=allowed, shown=f"{default:g} s", gt=0, le=most)


def _probability(default: float, meaning: str) -> Any:
    return _setting(default, meaning, allowed=PROBABILITY, ge=0, le=1)


def _http_url(value: str | None, example: str) -> str | None:
    if value is None:
        return None
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an http(s) URL like {example}")
    return value


class Settings(BaseSettings):
    """Every ``TACO_*`` setting. Build it with :meth:`read` (which names a bad value); it never changes."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, frozen=True, validate_default=True,
                                      extra="forbid")

    # --- where things are kept
    home: Path = _setting(Path("~/.taco"), "data folder, private to its owner: the database, every session's images"
                          " (`images/`), the web app's temporary files (`tmp/`) and torch's compile cache (`cache/`)",
                          allowed="a folder, not a file (or a path where one can be made)", flag="--home",
                          shown="`~/.taco`")
    db_url: str | None = _setting(None, "the database every session is logged to: any SQLAlchemy URL, e.g."
                                  " `postgresql+psycopg://user@host/taco` for a shared deployment",
                                  flag="--db", shown="`sqlite:///$TACO_HOME/taco.db`")
    db_timeout: float = _seconds(30.0, "the longest wait on the database: SQLite's wait for a lock, PostgreSQL's"
                                 " connection and lock waits (a statement gets twice this)")
    # --- the step loop and its inputs
    tool_timeout: float = _seconds(120.0, "the longest one tool call may take; past it the model is told, and the"
                                   " session goes on")
    max_image_pixels: int = _setting(64_000_000, "larger images are refused before decoding, with their size",
                                     allowed="a whole number of pixels, at least 1", shown="64,000,000", gt=0)
    # --- the tools
    detection_model: str = _setting("IDEA-Research/grounding-dino-tiny", "LocalizeObjects' GroundingDINO: a Hub id or"
                                    " a local model folder")
    depth_model: str = _setting("depth-anything/Depth-Anything-V2-Small-hf", "the depth tools' Depth-Anything: a Hub"
                                " id or a local model folder")
    clip_model: str = _setting("openai/clip-vit-base-patch32", "the similarity tools' and GetObjects' CLIP: a Hub id"
                               " or a local model folder")
    box_threshold: float = _probability(0.35, "GroundingDINO's box threshold (LocalizeObjects)")
    text_threshold: float = _probability(0.25, "GroundingDINO's text threshold (LocalizeObjects)")
    tag_threshold: float = _probability(0.05, "the probability a tag needs for GetObjects to keep it")
    wikipedia_url: str = _setting(DEFAULT_WIKIPEDIA, "QueryKnowledgeBase's wiki: another language's Wikipedia,"
                                  " a mirror", allowed=f"an http(s) URL like {DEFAULT_WIKIPEDIA}")
    kb_timeout: float = _seconds(5.0, "QueryKnowledgeBase's one deadline for a whole lookup", most=60)
    allow_download: bool = _setting(False, "let tools and the local model fetch missing weights on first use instead"
                                    " of answering \"run `python app.py download`\"", allowed=SWITCH, shown="off")
    # --- the local TACO model (--backend transformers / auto)
    model: str = _setting(DEFAULT_MODEL, "the TACO checkpoint of `--backend transformers`/`auto`: a Hub id or a folder"
                          " (`--backend transformers:MODEL` names one for a run)", shown=f"`{DEFAULT_MODEL}`")
    model_revision: str | None = _setting(None, "a branch, tag or commit of that Hub checkpoint", flag="--revision",
                                          shown="latest")
    device: str | None = _setting(None, "where the local model runs: `cpu`, `cuda` or `cuda:N`",
                                  allowed="cpu, cuda or cuda:N", flag="--device", shown="CUDA if present",
                                  pattern=r"^(cpu|cuda(:\d+)?)$")
    quantisation: Literal["4bit", "8bit", "none"] | None = _setting(
        None, "how the local model's weights are held: `4bit`, `8bit` or `none`", allowed="4bit, 8bit or none",
        flag="--quantisation", shown="4bit on CUDA, none on the CPU")
    max_new_tokens: int = _setting(2000, "the longest reply, in tokens (as TACO), for the local model and `openai`",
                                   allowed="a whole number of tokens, at least 1", flag="--max-new-tokens", ge=1)
    prefix_cache: bool = _setting(True, "keep the KV cache of the system prompt and earlier steps (`0` turns it off)",
                                  allowed=SWITCH, shown="on")
    # --- an OpenAI-compatible server (--backend openai)
    openai_base_url: str | None = _setting(None, "the server of `--backend openai`, e.g. `http://127.0.0.1:8000/v1`",
                                           allowed="an http(s) URL like http://127.0.0.1:8000/v1", flag="--base-url",
                                           shown="none")
    openai_model: str | None = _setting(None, "the model name that server serves", flag="--api-model", shown="none")
    openai_api_key: SecretStr | None = _setting(
        None, "the key sent to that server", allowed="printable ASCII without spaces", shown="none",
        validation_alias=AliasChoices("TACO_OPENAI_API_KEY", "OPENAI_API_KEY"))
    openai_timeout: float = _seconds(120.0, "how long to wait for each chunk of the server's reply")
    openai_extra_body: Annotated[dict[str, Any], NoDecode] = _setting(
        {}, "a JSON object merged into each request, e.g. `{\"stop_token_ids\": [128009]}`",
        allowed="a JSON object, e.g. '{\"stop_token_ids\": [128009]}'", shown="none")
    # --- the web app
    auth: SecretStr | None = _setting(None, "`user:password`: the login the web app asks for", allowed="user:password",
                                      flag="--auth", shown="none")
    benchmarks: Path | None = _setting(None, "the folder the web app's Evaluate tab reads benchmarks (and their"
                                       " images) from; the command line reads any path", allowed="a folder",
                                       shown="`$TACO_HOME/benchmarks`")

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("home")
    @classmethod
    def _a_folder(cls, home: Path) -> Path:
        home = home.expanduser()
        try:  # the path itself, or the nearest part of it that exists, must be a folder
            existing = next(p for p in (home, *home.parents) if p.exists() or p == p.parent)
            usable = existing.is_dir() or not existing.exists()
        except OSError:  # not even readable (no permission): no use as a data folder either
            usable = False
        if not usable:
            raise ValueError("not a folder")
        return home

    @field_validator("wikipedia_url")
    @classmethod
    def _wiki(cls, value: str) -> str:
        return _http_url(value, DEFAULT_WIKIPEDIA) or DEFAULT_WIKIPEDIA

    @field_validator("openai_base_url")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        return _http_url(value, "http://127.0.0.1:8000/v1")

    @field_validator("openai_api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        key = value.get_secret_value().strip() if value is not None else ""
        if key and not (key.isascii() and key.isprintable() and " " not in key):
            raise ValueError("printable ASCII without spaces")
        return SecretStr(key) if key else None

    @field_validator("auth")
    @classmethod
    def _login(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and split_login(value.get_secret_value()) is None:
            raise ValueError("user:password")
        return value

    @field_validator("openai_extra_body", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("a JSON object") from None
        if not isinstance(value, dict):
            raise ValueError("a JSON object")
        return value

    @model_validator(mode="after")
    def _default_db(self) -> "Settings":
        if self.db_url is None:  # set once, while being built: frozen from then on
            object.__setattr__(self, "db_url", f"sqlite:///{self.home / 'taco.db'}")
        return self

    # --- building one -----------------------------------------------------------------------------

    @classmethod
    def read(cls, flags: dict[str, Any] | None = None) -> "Settings":
        """The environment's settings with ``flags`` (field name -> a flag's value; None: not given) over them.

        Raises :class:`SettingsError` with one line for the first value that cannot be used.
        """
        given = {name: value for name, value in (flags or {}).items() if value is not None}
        try:
            settings = cls(**given)
        except ValidationError as err:
            raise SettingsError(_one_line(err, given)) from None
        settings._sources = {name: _source(name, given) for name in cls.model_fields}
        return settings

    # --- what people ask of it ------------------------------------------------------------------

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def benchmarks_dir(self) -> Path:
        return (self.benchmarks or self.home / "benchmarks").expanduser()

    @property
    def cache_dir(self) -> Path:
        """What libraries would otherwise keep in the system temp folder (e.g. torch's compile cache)."""
        return self.home / "cache"

    @property
    def temp_dir(self) -> Path:
        """The web app's temporary files: one folder per running instance, removed when it stops."""
        return self.home / "tmp"

    def ensure_home(self) -> Path:
        """Create the data folder readable by its owner only: it holds people's photos and questions.

        An existing folder is left as its owner set it. torch (under easyocr and the local model) keeps
        its compile cache in the system temp folder, readable by every user there, unless told
        otherwise: it is told to use this folder's ``cache/``.
        """
        if not self.home.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.home.chmod(0o700)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.cache_dir / "torchinductor"))
        return self.home

    def secret(self, name: str) -> str | None:
        """A secret setting's text (``auth``, ``openai_api_key``), None when unset."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def setting(self, variable: str) -> Any:
        """The value of the setting an environment variable names (``TACO_CLIP_MODEL``); None if none does."""
        name = variable.removeprefix(PREFIX).lower() if variable.startswith(PREFIX) else ""
        return getattr(self, name) if name in type(self).model_fields else None

    def source(self, name: str) -> str:
        """Where a setting's value came from: ``default``, ``environment (TACO_X)`` or ``flag (--x)``."""
        return self._sources.get(name) or _source(name, {})

    def rows(self) -> list[tuple[str, str, str]]:
        """(variable, value, where it came from) for every setting; secrets are masked."""
        return [(variable(name), self.shown(name), self.source(name)) for name in type(self).model_fields]

    def shown(self, name: str) -> str:
        value = getattr(self, name)
        if value is None or value == {}:
            return "-"
        if isinstance(value, SecretStr):
            return "******** (set)"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        return f"{value:g}" if isinstance(value, float) else str(value)


# --- the declaration, read ------------------------------------------------------------------------


def variable(name: str) -> str:
    """The environment variable of a setting: ``tool_timeout`` -> ``TACO_TOOL_TIMEOUT``."""
    return PREFIX + name.upper()


def _extra(name: str) -> dict[str, Any]:
    return Settings.model_fields[name].json_schema_extra or {}  # type: ignore[return-value]


def flag(name: str) -> str:
    """The command-line flag that sets a setting ("" when none does)."""
    return str(_extra(name).get("flag", ""))


def flag_values(namespace: Any) -> dict[str, Any]:
    """The settings the command line gave: each declared flag's value in an argparse namespace."""
    return {name: getattr(namespace, flag(name).lstrip("-").replace("-", "_"), None)
            for name in Settings.model_fields if flag(name)}


def default_of(variable_name: str) -> Any:
    """The declared default of the setting an environment variable names."""
    return Settings.model_fields[variable_name.removeprefix(PREFIX).lower()].default


def _environment_names(name: str) -> tuple[str, ...]:
    alias = Settings.model_fields[name].validation_alias
    return tuple(alias.choices) if isinstance(alias, AliasChoices) else (variable(name),)  # type: ignore[arg-type]


def _from_environment(name: str) -> str | None:
    """The variable that set ``name`` (case as pydantic-settings matches it), None when none did."""
    present = {key.upper(): key for key, value in os.environ.items() if value}
    return next((key for key in _environment_names(name) if key.upper() in present), None)


def _source(name: str, given: dict[str, Any]) -> str:
    if name in given:
        return f"flag ({flag(name)})" if flag(name) else "given"
    found = _from_environment(name)
    return f"environment ({found})" if found else "default"


def _one_line(err: ValidationError, given: dict[str, Any]) -> str:
    """The first refused value as a person reads it: which variable or flag, the value, what is allowed."""
    problem = err.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else ""
    name = field if field in Settings.model_fields else next(
        (n for n in Settings.model_fields if field.upper() in _environment_names(n)), field)
    allowed = _extra(name).get("allowed") if name in Settings.model_fields else None
    allowed = allowed or str(problem["msg"]).removeprefix("Value error, ")
    value = "(hidden)" if name in SECRETS else repr(problem["input"] if not isinstance(problem["input"], Path)
                                           else str(problem["input"]))
    more = len(err.errors()) - 1
    tail = f" ({more} more setting{'s' if more > 1 else ''} to fix)" if more else ""
    if name in given:
        return f"{flag(name) or name} must be {allowed}, got {value}{tail}"
    where = _from_environment(name) if name in Settings.model_fields else None
    return f"{where or variable(name)} must be {allowed}, got {value}: fix or unset it{tail}"


def split_login(value: str) -> tuple[str, str] | None:
    """``user:password`` as its two parts; None when either is missing."""
    user, sep, password = value.partition(":")
    return (user, password) if sep and user and password else None


# --- the settings in force ----------------------------------------------------------------------------

_installed: Settings | None = None
_cached: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def current() -> Settings:
    """The settings the running command was started with; else the environment's (re-read when it changes)."""
    global _cached
    if _installed is not None:
        return _installed
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX) or k == "OPENAI_API_KEY"))
    cached = _cached
    if cached is None or cached[0] != key:
        cached = _cached = (key, Settings.read())
    return cached[1]


@contextmanager
def use(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` what :func:`current` returns, for as long as a command runs."""
    global _installed
    previous, _installed = _installed, settings
    try:
        yield settings
    finally:
        _installed = previous


# --- the README's table -------------------------------------------------------------------------------


def markdown() -> str:
    """The configuration table of README.md: every variable, its default, its flag and what it means."""
    lines = ["| variable | default | flag | meaning |", "| --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = _extra(name).get("shown") or (f"`{default}`" if isinstance(default, str) else f"{default:g}")
        variables = " or ".join(f"`{v}`" for v in _environment_names(name))
        flagged = f"`{flag(name)}`" if flag(name) else ""
        lines.append(f"| {variables} | {shown} | {flagged} | {info.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m taco_app.settings --markdown")
    sys.stdout.write(markdown())
