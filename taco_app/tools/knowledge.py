"""QueryKnowledgeBase: look a topic up on Wikipedia, with the standard library only.

TACO answered this action with the ``wikipedia`` package; its observations read
``{'summary': ..., 'title': ..., 'url': ...}`` (see the Qwen2 traces 75 and 200), so this tool
returns those three keys, in that order. It runs two calls to Wikipedia's public API: a search
for the best-matching article, then that article's plain-text introduction.

Everything is bounded: one total deadline (``TACO_KB_TIMEOUT`` seconds, default 5, at most 60) covers DNS,
connecting and reading both replies, so a dead network never hangs a session. Failures raise
errors the loop shows the model as TACO's failed-execution turn:

* ``KnowledgeBaseUnreachable`` (a RuntimeError): "knowledge base unreachable: <what happened>"
  for no network, a refused connection, a timeout, an HTTP error or a reply that is not the API's.
* ``NoArticleFound`` (a ValueError): "no Wikipedia article found for '<query>'" with a hint.
* ``ValueError`` for an empty or over-long query; ``KnowledgeBaseError`` (a RuntimeError) when
  the API itself refuses the request.

``TACO_WIKIPEDIA_URL`` (default ``https://en.wikipedia.org``) points it elsewhere: another
language's Wikipedia, a mirror, or a local fake server in tests.
"""

from __future__ import annotations

import http.client
import json
import platform
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from taco_app import __version__
from taco_app.settings import current
from taco_app.tools.base import TEXT, Tool, ToolStatus

MAX_CHARS = 1500  # the observation is fed back into the prompt: an introduction, not the article
MAX_QUERY = 300  # Wikipedia's search refuses longer queries
MAX_REPLY_BYTES = 2_000_000
# Wikimedia asks API clients to say who they are.
USER_AGENT = (
    f"TACO Studio/{__version__} (TACO multimodal action models, https://github.com/SalesforceAIResearch/TACO) "
    f"Python-urllib/{platform.python_version()}"
)


class KnowledgeBaseUnreachable(RuntimeError):
    pass


class KnowledgeBaseError(RuntimeError):
    pass


class NoArticleFound(ValueError):
    pass


def base_url() -> str:
    """The wiki to ask (``TACO_WIKIPEDIA_URL``): an http(s) URL, checked with the other settings."""
    return current().wikipedia_url


def timeout() -> float:
    """Seconds allowed for a whole lookup (``TACO_KB_TIMEOUT``)."""
    return current().kb_timeout


def _opener(host: str) -> urllib.request.OpenerDirector:
    # A proxy from the environment must not capture requests to a local server.
    if host in ("localhost", "::1") or host.startswith("127."):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _fetch(url: str, deadline: float, budget: float) -> bytes:
    """GET ``url`` and return the body, or raise KnowledgeBaseUnreachable by ``deadline``.

    The request runs on a daemon thread because a socket timeout bounds each read, not the whole
    request, and DNS lookups ignore it; the caller waits no longer than the deadline.
    """
    host = urllib.parse.urlsplit(url).hostname or url
    remaining = deadline - time.monotonic()
    timed_out = f"knowledge base unreachable: no answer from {host} within {budget:g} s (TACO_KB_TIMEOUT)"
    if remaining <= 0:
        raise KnowledgeBaseUnreachable(timed_out)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
            with _opener(host).open(request, timeout=remaining) as reply:
                outcome["body"] = reply.read(MAX_REPLY_BYTES)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, mapped below
            outcome["error"] = err

    worker = threading.Thread(target=work, name="taco-knowledge-base", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        raise KnowledgeBaseUnreachable(timed_out)
    error = outcome.get("error")
    if error is None:
        return outcome["body"]
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(error, urllib.error.HTTPError):
        hint = " (rate limited: wait a minute)" if error.code == 429 else ""
        why = f"{host} answered HTTP {error.code} {error.reason}{hint}"
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        raise KnowledgeBaseUnreachable(timed_out) from None
    elif isinstance(reason, socket.gaierror):
        why = f"cannot resolve {host} (no network or DNS: {reason.strerror or reason})"
    elif isinstance(reason, (OSError, http.client.HTTPException)):
        why = f"cannot get {host} ({type(reason).__name__}: {reason})"
    else:
        why = f"request to {host} failed ({type(error).__name__}: {error})"
    raise KnowledgeBaseUnreachable(f"knowledge base unreachable: {why}") from None


def _api(params: dict[str, str], deadline: float, budget: float) -> dict[str, Any]:
    """One call to ``/w/api.php``, parsed; API-level errors become KnowledgeBaseError."""
    url = f"{base_url()}/w/api.php?" + urllib.parse.urlencode({**params, "format": "json", "formatversion": "2"})
    body = _fetch(url, deadline, budget)
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        start = body[:60].decode("utf-8", "replace")
        raise KnowledgeBaseUnreachable(
            f"knowledge base unreachable: {base_url()} did not answer with Wikipedia API JSON (reply starts {start!r})"
        ) from None
    if not isinstance(data, dict):
        raise KnowledgeBaseUnreachable(f"knowledge base unreachable: {base_url()} sent an unexpected reply")
    if isinstance(data.get("error"), dict):
        error = data["error"]
        why = f"{error.get('code', '?')}: {error.get('info', '')}".rstrip(": ")
        raise KnowledgeBaseError(f"Wikipedia's API refused the request: {why}")
    return data


def _pages(data: dict[str, Any]) -> list[dict[str, Any]]:
    pages = (data.get("query") or {}).get("pages") or []
    return list(pages.values()) if isinstance(pages, dict) else list(pages)  # formatversion 1 or 2


def trim(text: str, limit: int = MAX_CHARS) -> str:
    """At most ``limit`` characters, cut after a sentence (or a word) and marked with '...'."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(".\n"))
    if end >= limit // 2:
        return cut[: end + 1] + " ..."
    return cut.rsplit(None, 1)[0] + " ..."


def look_up(query: str) -> dict[str, str]:
    """The best Wikipedia article for ``query``: ``{'summary', 'title', 'url'}``."""
    query = " ".join(query.split())
    if not query:
        raise ValueError("QueryKnowledgeBase needs a non-empty query, such as a name or a topic ('Leica Camera').")
    if len(query) > MAX_QUERY:
        raise ValueError(
            f"the query is {len(query)} characters long; Wikipedia search takes at most {MAX_QUERY}. "
            "Ask for a short topic name, such as 'Statue of Confucius Houston'."
        )
    budget = timeout()
    deadline = time.monotonic() + budget
    search = {"action": "query", "list": "search", "srsearch": query, "srlimit": "1", "srprop": ""}
    found = _api(search, deadline, budget)
    results = (found.get("query") or {}).get("search") or []
    if not results or not results[0].get("title"):
        suggestion = ((found.get("query") or {}).get("searchinfo") or {}).get("suggestion")
        hint = f"Did you mean '{suggestion}'?" if suggestion else "Try fewer or more general words (a name or a topic)."
        raise NoArticleFound(f"no Wikipedia article found for '{query}'. {hint}")
    title = str(results[0]["title"])

    params = {"action": "query", "prop": "extracts|info|pageprops", "exintro": "1", "explaintext": "1",
              "inprop": "url", "ppprop": "disambiguation", "redirects": "1", "titles": title}
    pages = _pages(_api(params, deadline, budget))
    page = pages[0] if pages else {}
    if page.get("missing") is not None and not page.get("extract"):
        raise NoArticleFound(f"no Wikipedia article found for '{query}' (search named '{title}', which is missing).")
    summary = str(page.get("extract") or "").strip()
    if not summary or "disambiguation" in (page.get("pageprops") or {}):
        # A disambiguation page's introduction is one line; its list of meanings is the answer.
        params = {**params, "exchars": str(MAX_CHARS)}
        params.pop("exintro")
        pages = _pages(_api(params, deadline, budget)) or [page]
        summary = str(pages[0].get("extract") or summary).strip()
    title = str(page.get("title") or title)
    url = page.get("fullurl") or f"{base_url()}/wiki/{urllib.parse.quote(title.replace(' ', '_'))}"
    return {"summary": trim(summary) or "(the article has no text)", "title": title, "url": str(url)}


class QueryKnowledgeBase(Tool):
    name = "QueryKnowledgeBase"
    inputs = {"query": TEXT}
    model_id = "Wikipedia API (TACO_WIKIPEDIA_URL)"

    def status(self) -> ToolStatus:
        # Reachability is only known by trying; `doctor` must not touch the network.
        return ToolStatus(f"Wikipedia API at {base_url()}", "-", True)

    def forward(self, query: str) -> dict[str, str]:
        try:
            return look_up(query)
        except (AttributeError, TypeError, KeyError, IndexError) as err:
            # A reply in a shape the API never sends (a proxy, a different wiki engine).
            why = f"{base_url()} sent a reply in an unexpected shape ({type(err).__name__}: {err})"
            raise KnowledgeBaseUnreachable(f"knowledge base unreachable: {why}") from err
