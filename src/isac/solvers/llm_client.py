"""A bounded chat client for OpenAI-compatible servers, and a SQLite cache of its replies.

Used by the LLM association method (:mod:`isac.solvers.li_llm`); nothing here knows about
wireless. The client is the official ``openai`` package (imported on first use) pointed at any
``/v1/chat/completions`` endpoint: OpenAI, vLLM, Ollama, llama.cpp's server.

What a server can do and what the caller sees:

* Every call has a hard deadline (a monotonic time). The request runs in a daemon thread; when
  the deadline passes the caller gets :class:`LlmCallError` ``kind="timeout"`` at once, whatever
  the server does (accepts and never answers, trickles bytes, drops the connection).
* HTTP 429 and 5xx, timeouts of one request and connection errors are retried at most
  ``max_retries`` times with exponential backoff (``Retry-After`` is honoured, capped by the
  deadline). Other HTTP errors (400, 401, 404, ...) are not retried.
* Whatever the server sends (no ``choices``, ``null`` content, a non-JSON body) ends as either a
  :class:`ChatReply` (text possibly empty, cut at :data:`MAX_REPLY_CHARS`) or an
  :class:`LlmCallError` with a one-line message; never another exception.
* The API key is read from the environment variable the caller names and is removed from every
  text this module returns or stores (replies, error messages): a server that echoes it back
  does not get it into outputs, logs, result files or the cache. It is not part of the cache key.

Cache: :class:`ResponseCache` maps a SHA-256 of (base URL without user info, model, messages,
sampling settings) to the reply text and its token counts; a hit costs no request.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_REPLY_CHARS = 100_000
"""Longer replies keep only their last this many characters (the answer comes last) before parsing."""
NO_KEY = "sk-no-key-set"
"""Sent when the key variable is unset (local servers ignore the key; the client needs one)."""
REDACTED = "[redacted]"


class LlmCallError(Exception):
    """A chat call that produced no reply; ``kind`` is one of timeout, rate-limit, server, http,
    connection, protocol, client. The message is one line with the key removed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ChatReply:
    """One reply: ``text`` (key removed, its last :data:`MAX_REPLY_CHARS` at most), token counts as the
    server reported them (0 when it did not), whether it came from the cache, and seconds spent."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    seconds: float
    truncated: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatSettings:
    """Endpoint and sampling settings of a :class:`ChatClient`."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 2048
    max_tokens_field: str = "max_tokens"
    request_timeout_s: float = 30.0
    max_retries: int = 2
    backoff_s: float = 0.5


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment and without a trailing slash (safe to print and to key on)."""
    try:
        p = urllib.parse.urlsplit(url.strip())
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{p.port}" if p.port else "")
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path.rstrip("/"), "", ""))
    except ValueError:
        return "<unparsable url>"


def check_base_url(url: str) -> str:
    """The URL if it is http(s) with a host, else ValueError naming the problem."""
    try:
        p = urllib.parse.urlsplit(url.strip())
        ok = p.scheme in ("http", "https") and bool(p.hostname)
        p.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"LLM base URL {public_url(url)!r} is not an http(s) URL with a host "
                         "(e.g. http://127.0.0.1:8080/v1)")
    return url.strip()


class _Scrubber:
    def __init__(self, secret: str | None) -> None:
        self.secret = secret if secret and len(secret) >= 4 else None

    def __call__(self, text: str) -> str:
        if self.secret and self.secret in text:
            text = text.replace(self.secret, REDACTED)
        return text


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ChatClient:
    """Chat completions with a deadline, bounded retries, key hygiene and an optional cache."""

    def __init__(self, settings: ChatSettings, cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self._key = os.environ.get(settings.api_key_env) or None
        self.scrub = _Scrubber(self._key)
        self.requests = 0
        """HTTP requests made (retries included)."""
        self.cache_hits = 0
        self.cache_error: str | None = None
        """Set (one line) when the cache failed; the client then goes on without it."""

    def cache_key(self, messages: Sequence[Mapping[str, str]], response_format: Mapping[str, Any] | None) -> str:
        s = self.settings
        payload = {"base_url": public_url(s.base_url), "model": s.model, "messages": [dict(m) for m in messages],
                   "temperature": s.temperature, "seed": s.seed, "max_tokens": s.max_tokens,
                   "max_tokens_field": s.max_tokens_field, "response_format": response_format}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    def chat(self, messages: Sequence[Mapping[str, str]], *, deadline: float,
             response_format: Mapping[str, Any] | None = None) -> ChatReply:
        """One reply to ``messages`` before ``deadline`` (``time.monotonic()`` seconds), or LlmCallError."""
        t0 = time.monotonic()
        key = self.cache_key(messages, response_format) if self.cache is not None else None
        if key is not None:
            hit = self._cache_call(self.cache.get, key)
            if hit is not None:
                self.cache_hits += 1
                text, pt, ct = hit
                return ChatReply(self.scrub(text), pt, ct, True, time.monotonic() - t0)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                raise LlmCallError("timeout", "time budget spent before the server answered")
            try:
                text, pt, ct, truncated = self._request(messages, response_format, deadline)
                break
            except LlmCallError as e:
                retryable = e.kind in ("rate-limit", "server", "connection", "request-timeout")
                if not retryable or attempt >= self.settings.max_retries:
                    if e.kind == "request-timeout":
                        raise LlmCallError("timeout", str(e)) from None
                    raise
                wait = self.settings.backoff_s * (2.0 ** attempt)
                wait = max(wait, getattr(e, "retry_after", 0.0) or 0.0)
                if time.monotonic() + wait >= deadline - 0.05:
                    raise LlmCallError("timeout", f"{e} (no time left to retry)") from None
                time.sleep(wait)
                attempt += 1
        text = self.scrub(text)
        if key is not None and self.cache is not None:
            self._cache_call(self.cache.put, key, text, pt, ct)
        return ChatReply(text, pt, ct, False, time.monotonic() - t0, truncated)

    def _cache_call(self, fn, *args):
        try:
            return fn(*args)
        except CacheError as e:
            self.cache_error, self.cache = str(e), None
            return None

    # --- one HTTP request, bounded by the deadline ---------------------------------------

    def _request(self, messages, response_format, deadline: float) -> tuple[str, int, int, bool]:
        try:
            import openai
        except ImportError:
            raise LlmCallError("client", "the LLM client needs the 'openai' package: pip install openai") from None
        s = self.settings
        timeout = max(0.1, min(s.request_timeout_s, deadline - time.monotonic()))
        try:
            client = openai.OpenAI(base_url=s.base_url, api_key=self._key or NO_KEY, timeout=timeout, max_retries=0)
        except Exception as e:  # noqa: BLE001  (a client that cannot be built is a one-line error)
            raise LlmCallError("client", f"cannot create the OpenAI client: {self.scrub(_one_line(e))}") from None
        kwargs: dict[str, Any] = {"model": s.model, "messages": [dict(m) for m in messages],
                                  "temperature": s.temperature, s.max_tokens_field: s.max_tokens}
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if response_format is not None:
            kwargs["response_format"] = dict(response_format)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["response"] = client.chat.completions.create(**kwargs)
            except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
                box["error"] = e
            finally:
                done.set()

        self.requests += 1
        threading.Thread(target=work, name="isac-llm-request", daemon=True).start()
        finished = done.wait(max(0.0, deadline - time.monotonic()))
        if not finished:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
            raise LlmCallError("timeout", f"no reply from {public_url(s.base_url)} within the time budget")
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
        if "error" in box:
            raise self._classify(box["error"]) from None
        return self._extract(box.get("response"))

    def _classify(self, e: BaseException) -> LlmCallError:
        import openai

        msg = self.scrub(_one_line(e))
        where = public_url(self.settings.base_url)
        if isinstance(e, openai.APITimeoutError):
            return LlmCallError("request-timeout", f"request to {where} timed out")
        if isinstance(e, openai.APIConnectionError):
            return LlmCallError("connection", f"connection to {where} failed: {msg}")
        if isinstance(e, openai.APIStatusError):
            code = int(getattr(e, "status_code", 0) or 0)
            kind = "rate-limit" if code == 429 else "server" if code >= 500 else "http"
            err = LlmCallError(kind, f"HTTP {code} from {where}: {msg}")
            try:
                ra = float(e.response.headers.get("retry-after", "0"))
                err.retry_after = min(ra, 30.0) if math.isfinite(ra) and ra > 0 else 0.0  # type: ignore[attr-defined]
            except (AttributeError, TypeError, ValueError):
                pass
            return err
        return LlmCallError("protocol", f"unusable reply from {where}: {type(e).__name__}: {msg}")

    def _extract(self, response: Any) -> tuple[str, int, int, bool]:
        where = public_url(self.settings.base_url)
        if isinstance(response, (str, bytes)) or response is None:
            raise LlmCallError("protocol", f"reply from {where} is not a chat completion (body is not JSON)")
        try:
            choices = getattr(response, "choices", None)
            if not choices:
                raise LlmCallError("protocol", f"reply from {where} has no choices")
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None)
            if not isinstance(text, str):
                text = "" if text is None else str(text)
            usage = getattr(response, "usage", None)
            pt = _count(getattr(usage, "prompt_tokens", None))
            ct = _count(getattr(usage, "completion_tokens", None))
        except LlmCallError:
            raise
        except Exception as e:  # noqa: BLE001  (a malformed object from a misbehaving server)
            raise LlmCallError("protocol", f"unusable reply from {where}: {self.scrub(_one_line(e))}") from None
        truncated = len(text) > MAX_REPLY_CHARS
        return (text[-MAX_REPLY_CHARS:] if truncated else text), pt, ct, truncated


def _count(x: Any) -> int:
    try:
        v = int(x)
    except (TypeError, ValueError, OverflowError):
        return 0
    return v if 0 <= v < 10**9 else 0


# --- cache ----------------------------------------------------------------------------


def default_cache_path() -> Path:
    """``$ISAC_CACHE_DIR/llm-replies.sqlite``, else ``$XDG_CACHE_HOME/isac/...``, else ``~/.cache/isac/...``."""
    base = os.environ.get("ISAC_CACHE_DIR")
    if base:
        return Path(base) / "llm-replies.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "isac" / "llm-replies.sqlite"


class CacheError(Exception):
    """The cache file cannot be opened or read (one line)."""


class ResponseCache:
    """Replies by key in one SQLite file; safe for several processes (SQLite locking, short transactions)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                             "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, created REAL NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"LLM reply cache {self.path}: {_one_line(e)}") from None

    def get(self, key: str) -> tuple[str, int, int] | None:
        try:
            row = self._db.execute("SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?",
                                   (key,)).fetchone()
        except sqlite3.Error as e:
            raise CacheError(f"LLM reply cache {self.path}: {_one_line(e)}") from None
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        try:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)",
                             (key, text, int(prompt_tokens), int(completion_tokens), time.time()))
        except sqlite3.Error as e:
            raise CacheError(f"LLM reply cache {self.path}: {_one_line(e)}") from None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self._db.close()
