"""The ``openai`` backend: TACO's prompt sent to any OpenAI-compatible chat-completions server.

That is vLLM serving a TACO checkpoint, or a hosted vision model prompted with the CoTA prompt as in
the paper's baseline. The request carries the same TACO text as the local backend: the family's
system message, then one user message whose text and images alternate exactly where the flattened
prompt has ``<image>``. Replies are streamed over server-sent events and read line by line, so
text reaches the UI as it is generated and closing the stream closes the connection.

Only the standard library speaks HTTP here (``http.client``): no new dependency for one endpoint.
The API key comes from the argument, else the setting ``TACO_OPENAI_API_KEY`` (else ``OPENAI_API_KEY``),
and is never written into an error message.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import weakref
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from PIL import Image

from taco_app.cota.backend import Backend, BackendError, Chunk, LanguageModel, Stream
from taco_app.cota.events import Usage
from taco_app.cota.prompt import FAMILIES, IMAGE_TOKEN, Prompt, chat_system
from taco_app.settings import current

# Above this a PNG is sent as a JPEG (quality 95): the API keeps no state, so every step re-sends
# every image, and a 12-megapixel photo is ~20 MB of PNG per image per step; vision towers resize
# to a few hundred pixels, where a q95 JPEG is indistinguishable. Small images stay lossless.
MAX_PNG_BYTES = 8 * 2**20
TAIL_TIMEOUT_S = 2.0  # after finish_reason, how long to wait for the usage chunk and [DONE]
SERVE_HINT = "Start one with vLLM (see README, 'Serving TACO with vLLM'), or check --base-url"

# Chat templates for `vllm serve --chat-template FILE --chat-template-content-format openai`: they
# render the messages of this backend to `Prompt.text`, with `<image>` where each image part is
# (Mantis: after the BOS its tokenizer adds locally; Qwen2: with the newline TACO's harness put after
# each image). Templates that ship with llava checkpoints put all images first, not where TACO has them.
CHAT_TEMPLATES = {
    "mantis": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
        "{% else %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "qwen2": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
        "{% else %}{{ '<image>\\n' }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}


def api_key_from_env() -> str | None:
    return current().secret("openai_api_key")


def encode_image(image: Image.Image) -> str:
    """A ``data:`` URL: PNG, or JPEG for very large photos (see MAX_PNG_BYTES)."""
    if image.mode != "RGB":  # what the model sees; PNG cannot hold modes such as CMYK or F
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    mime = "image/png"
    if buffer.tell() > MAX_PNG_BYTES:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class OpenAIBackend(Backend):
    name = "openai"  # revision and quantisation stay unknown: the server knows its checkpoint, we only its name

    def __init__(self, base_url: str, api_model: str, *, api_key: str | None = None, family: str = "mantis",
                 timeout: float = 120.0, max_tokens: int = 2000, extra_body: dict[str, Any] | None = None):
        if family not in FAMILIES:
            raise BackendError(f"unknown prompt family {family!r}; use one of {', '.join(FAMILIES)}")
        base_url = base_url.strip().rstrip("/").removesuffix("/chat/completions")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"--base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
        if not api_model:
            raise BackendError("--api-model is required: the model name the server serves (see GET /v1/models)")
        self.base_url, self.model_id, self.family = base_url, api_model, family
        self.api_key = (api_key or api_key_from_env() or "").strip() or None
        if self.api_key and not (self.api_key.isascii() and self.api_key.isprintable() and " " not in self.api_key):
            # http.client would reject it with an error that quotes the key: say so without it.
            raise BackendError("the API key has spaces, control or non-ASCII characters; check TACO_OPENAI_API_KEY"
                               " (or OPENAI_API_KEY)")
        if not timeout > 0:
            raise BackendError(f"the timeout must be a positive number of seconds, not {timeout!r}")
        self.timeout, self.max_tokens = timeout, max_tokens
        self.extra_body = dict(extra_body or {})  # server-specific fields, e.g. vLLM's stop_token_ids
        self._split = parts
        self._encoded: dict[int, tuple[weakref.ref, str]] = {}  # images are re-sent every step
        self._in_flight: set[Any] = set()  # the sockets of the requests being answered (see abort)
        self._in_flight_lock = threading.Lock()

    @classmethod
    def from_options(cls, options: Any) -> "OpenAIBackend":
        """From the command line's choices; a field left None falls back to the settings."""
        settings = current()
        base_url = getattr(options, "base_url", None) or settings.openai_base_url
        api_model = getattr(options, "api_model", None) or settings.openai_model
        if not base_url:
            raise BackendError("--backend openai needs --base-url (or TACO_OPENAI_BASE_URL), e.g."
                               f" http://127.0.0.1:8000/v1 for a local vLLM server. {SERVE_HINT}")
        if not api_model:
            raise BackendError("--backend openai needs --api-model (or TACO_OPENAI_MODEL): the model name the"
                               f" server serves, listed at {base_url.rstrip('/')}/models")
        return cls(base_url, api_model, family=getattr(options, "family", None) or "mantis",
                   timeout=settings.openai_timeout, extra_body=settings.openai_extra_body,
                   max_tokens=getattr(options, "max_new_tokens", None) or settings.max_new_tokens)

    # --- the interface ------------------------------------------------------------------------

    def stream(self, prompt: Prompt, images: Sequence[Image.Image]) -> Stream:
        texts = prompt.user.split(IMAGE_TOKEN)
        if len(texts) - 1 != len(images):
            raise BackendError(f"the prompt has {len(texts) - 1} {IMAGE_TOKEN} placeholders but {len(images)}"
                               " images were given; each placeholder takes one image, in order")
        parts: list[dict[str, Any]] = []
        for i, text in enumerate(texts):
            if i:
                parts.append({"type": "image_url", "image_url": {"url": self._data_url(images[i - 1])}})
            if text:
                parts.append({"type": "text", "text": text})
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": parts}]
        return self._chat(messages)

    def language_model(self) -> LanguageModel:
        return self.generate_text

    def generate_text(self, prompt: str) -> str:
        """The served model answering a plain text question (for QueryLanguageModel)."""
        messages = [{"role": "system", "content": chat_system(self.family)}, {"role": "user", "content": prompt}]
        return "".join(chunk for chunk in self._chat(messages) if isinstance(chunk, str))

    def abort(self) -> None:
        """Cut every request in flight: a reply the server is still thinking about ends now, as a dropped
        connection (the loop, told to stop, ends such a session ``cancelled``)."""
        with self._in_flight_lock:
            sockets = list(self._in_flight)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    # --- HTTP ---------------------------------------------------------------------------------

    def _data_url(self, image: Image.Image) -> str:
        for key in [k for k, (ref, _) in list(self._encoded.items()) if ref() is None]:
            self._encoded.pop(key, None)
        cached = self._encoded.get(id(image))
        if cached and cached[0]() is image:
            return cached[1]
        url = encode_image(image)
        self._encoded[id(image)] = (weakref.ref(image), url)
        return url

    def _fail(self, message: str) -> BackendError:
        if self.api_key and len(self.api_key) >= 4:  # servers sometimes echo the key they refused
            message = message.replace(self.api_key, "***")
        return BackendError(message)

    def _chat(self, messages: list[dict[str, Any]]) -> Stream:
        body = json.dumps({
            **self.extra_body, "model": self.model_id, "messages": messages, "temperature": 0,
            "max_tokens": self.max_tokens, "stream": True, "stream_options": {"include_usage": True},
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        cls = http.client.HTTPSConnection if self._split.scheme == "https" else http.client.HTTPConnection
        conn = cls(self._split.hostname, self._split.port, timeout=self.timeout)
        response: http.client.HTTPResponse | None = None
        sock = None
        try:  # the finally closes the connection however the stream ends, early close included
            try:
                conn.connect()
                sock = conn.sock  # kept: http.client lets go of it for a response that ends with the connection
                with self._in_flight_lock:
                    self._in_flight.add(sock)
            except OSError as err:
                raise self._fail(f"cannot reach the OpenAI-compatible server at {self.base_url}: {err}. "
                                 f"Is it running? {SERVE_HINT}") from None
            try:
                conn.request("POST", f"{self._split.path}/chat/completions", body=body, headers=headers)
                response = conn.getresponse()
            except TimeoutError:
                raise self._fail(self._timeout_message("an answer")) from None
            except (OSError, http.client.HTTPException) as err:
                raise self._fail(f"the connection to {self.base_url} failed before any reply: {err!r}") from None
            if response.status != 200:
                raise self._fail(self._status_message(response.status, _read_error(response)))
            kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if kind == "application/json":  # a server that ignores "stream": the whole reply at once
                yield from self._whole(response)
            elif kind in ("text/event-stream", ""):
                yield from self._events(sock, response)
            else:
                raise self._fail(f"{self.base_url} answered with {kind}, not an event stream: is --base-url the"
                                 " API root of an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)?")
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(sock)
            if response is not None:
                response.close()
            conn.close()

    def _events(self, sock: Any, response: http.client.HTTPResponse) -> Iterator[Chunk]:
        chars, finished, usage = 0, False, None
        try:
            for data in _sse_data(response):
                if data.strip() == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise self._fail(f"the server sent an event that is not valid JSON: {data[:200]!r}. Is "
                                     f"{self.base_url} an OpenAI-compatible chat-completions API?") from None
                if not isinstance(chunk, dict):
                    raise self._fail(f"the server sent an unexpected event: {data[:200]!r}")
                if chunk.get("error") or chunk.get("object") == "error":
                    raise self._fail(f"the server reported an error mid-reply: {_error_text(chunk)}")
                usage = _usage(chunk.get("usage")) or usage
                choice = (chunk.get("choices") or [{}])[0]
                text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
                if isinstance(text, str) and text:
                    chars += len(text)
                    yield text
                if isinstance(choice, dict) and choice.get("finish_reason") and not finished:
                    # The reply is complete; read on briefly only for the usage chunk that follows.
                    finished = True
                    sock.settimeout(min(self.timeout, TAIL_TIMEOUT_S))
            else:
                if not finished:
                    raise self._fail(self._dropped(chars))
        except TimeoutError:
            if not finished:
                raise self._fail(self._timeout_message(f"the next chunk (after {chars} characters)")) from None
        except (OSError, http.client.HTTPException):
            if not finished:
                raise self._fail(self._dropped(chars)) from None
        if usage:
            yield usage

    def _whole(self, response: http.client.HTTPResponse) -> Iterator[Chunk]:
        try:
            reply = json.loads(response.read())
            text = reply["choices"][0]["message"]["content"] or ""
        except (ValueError, LookupError, TypeError, OSError, http.client.HTTPException) as err:
            raise self._fail(f"the server's reply is not a chat completion ({type(err).__name__}: {err})") from None
        if text:
            yield text
        usage = _usage(reply.get("usage"))
        if usage:
            yield usage

    # --- messages -----------------------------------------------------------------------------

    def _dropped(self, chars: int) -> str:
        return (f"the server closed the connection mid-reply after {chars} characters (no [DONE] or finish_reason);"
                f" check the log of the server at {self.base_url}: it may have crashed or run out of memory")

    def _timeout_message(self, what: str) -> str:
        return (f"no reply from {self.base_url} within {self.timeout:g} s while waiting for {what}: the server may be"
                " overloaded or still loading the model. Check its log, or allow longer with TACO_OPENAI_TIMEOUT")

    def _status_message(self, status: int, detail: str) -> str:
        said = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            fix = ("set TACO_OPENAI_API_KEY (or OPENAI_API_KEY) to the key the server expects" if self.api_key is None
                   else "check TACO_OPENAI_API_KEY (or OPENAI_API_KEY): the server refused the key it was sent")
            return f"the server at {self.base_url} refused the request ({said}); {fix}"
        if status == 404:
            return (f"{self.base_url}/chat/completions was not found ({said}). Check --base-url (the API root,"
                    f" usually ending in /v1) and --api-model {self.model_id!r} (served names: {self.base_url}/models)")
        where = "the server failed; see its log" if status >= 500 else "the server rejected the request"
        return f"{where} ({self.base_url}, {said})"


# --- wire format ------------------------------------------------------------------------------


def _sse_data(response: http.client.HTTPResponse) -> Iterator[str]:
    """The ``data`` of each server-sent event, as soon as its blank line arrives."""
    data: list[str] = []
    while True:
        line = response.readline()
        if not line:  # end of the body; a last event without its blank line still counts
            if data:
                yield "\n".join(data)
            return
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
                data = []
        elif not text.startswith(":"):  # ":" lines are comments / keep-alives
            field, _, value = text.partition(":")
            if field == "data":
                data.append(value.removeprefix(" "))


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("prompt_tokens"), int):
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(prompt_tokens=raw["prompt_tokens"], output_tokens=int(raw.get("completion_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0))


def _error_text(payload: Any) -> str:
    """The message in an OpenAI (``{"error": {"message"}}``), vLLM or FastAPI error body."""
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if payload.get(key):
                return _error_text(payload[key])
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return " ".join(text.split())[:300]


def _read_error(response: http.client.HTTPResponse) -> str:
    try:
        raw = response.read(64 * 1024).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return ""
    try:
        return _error_text(json.loads(raw))
    except ValueError:
        return _error_text(raw)
