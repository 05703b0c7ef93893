r"""000's LLM optimiser of the user association (P2): Section V-A, Algorithm 1.

An OpenAI-compatible chat model is asked for the association of a K x N SINR matrix; its replies
are parsed, checked against (27d)-(27f), repaired by a fixed rule when that is possible, and
improved over rounds of self-reflection. Registered as association method ``llm``
(:func:`isac.solvers.li_association.associate`, ``isac associate --method llm``,
``isac solve multibs-association -o association=llm``).

**Prompt** (files in ``prompts/li_association/``, overridable with ``prompt_dir``; rendered with
:class:`string.Template`, so ``$name`` is a placeholder and ``$$`` a dollar sign). Following V-A:

* ``system.txt`` -- the role: an expert in wireless communications;
* ``background.txt`` -- numbers of BSs and CUs, the association rules, the expert knowledge
  (Shannon rate with each BS's band split equally among its CUs);
* ``problem.txt`` -- (P2) in words, objective and constraints inside ``<objective>`` and
  ``<constraints>`` tags, and the SINR matrix (``$sinr_table``; linear values to 4 significant
  digits by default, ``sinr_format = "db"`` for dB);
* ``task.txt`` -- formulate the model first, then solve step by step, with the paper's
  chain-of-thought hints (a BS's per-user rate shrinks as it serves more CUs; a BS whose sum rate
  is dominated by one CU with the largest SINR favours that CU);
* ``reflection.txt`` -- self-enhancement, from the second round on (and in the first when an
  ``initial`` association is given): the previous associations with their objectives (up to
  ``history`` of them, newest last; they double as few-shot examples) and a request for a better one;
* ``output.txt`` -- the strict output format: a final JSON object ``{"association": [...]}`` of N
  BS numbers 1..K (the prompt numbers BSs and CUs from 1, as the paper does; results are 0-based);
* ``retry.txt`` -- the follow-up sent after an unusable reply, naming what was wrong.

The user message is background, problem, task, [reflection,] output, separated by blank lines.
For a given input (SINR matrix, B, history, templates) the messages are a pure function: the same
text every time, printable with ``isac associate --method llm --show-prompt``.

**Reading a reply** (:func:`parse_reply`). The answer is the last JSON object in the reply with
an ``association`` key (searched near each occurrence of the word), else the last bracketed list
of integers. A reply is *valid* when that object holds exactly N integers in 1..K and every BS
appears. Otherwise the repair rule applies, in this order:

1. a bare list (no object) is accepted as the answer; integer-valued floats and numeric strings
   (``"2"``, ``"BS2"``) are read as integers;
2. a list that uses 0 and never K is read as 0-based and shifted by one;
3. entries past the N-th are dropped; a missing, non-integer or out-of-range entry of CU i is
   replaced by the BS with the largest SINR for CU i;
4. (27d): while a BS serves nobody (lowest number first) it takes, among the CUs of BSs serving
   two or more, the one with the largest SINR at it (ties: lowest CU).

A reply with no list at all, or in which more than half of the N entries had to be replaced in
step 3, is *invalid*: the round is retried (``retries_per_round`` times) with ``retry.txt``
appended to the conversation. Every repair is listed in ``info.repairs``.

**Rounds and stopping** (Algorithm 1). Each round sends a fresh prompt (the reflection part
grows; the conversation does not) and yields at most one usable association; its objective is
always re-computed by :func:`isac.metrics.network.association_objective_bps_hz`, never read from
the reply. The best usable association is kept. The loop stops at the first of:

* ``stop = "no-improvement"`` (default): ``patience`` usable rounds in a row that do not beat the
  best objective so far (or the ``initial`` association's);
* ``stop = "first-improvement"`` (the paper's rule in V-A-2-d): a round beats the previous one;
* ``stop = "rounds"``: only the limits below;
* ``max_rounds`` rounds, ``token_budget`` tokens (prompt + completion, as the server reports
  them, else characters / 4; 0 = no limit), or ``time_budget_s`` seconds for the whole call
  (default 60 s; it bounds the call even when a server accepts the connection and never answers);
* two rounds in a row in which the server gave no reply at all (errors after the client's retries).

A reply longer than :data:`isac.solvers.llm_client.MAX_REPLY_CHARS` keeps only its end (where the
answer is asked for) and is never counted as valid as sent.

**Provenance** (``info.provenance``): ``llm`` when the returned association is a valid reply,
``repaired`` when it needed the repair rule, ``fallback`` when no round gave a usable association
and the result is the ``fallback`` method's (default ``gale-shapley``). ``info`` also holds
``rounds``, ``replies``, ``valid_replies``, ``repaired_replies``, ``invalid_replies``,
``tokens``, ``time_s``, ``requests`` (HTTP requests; 0 on a fully cached rerun), ``cache_hits``,
``stop_reason``, ``round_objectives`` and ``errors`` (one line each, the API key removed).

**Endpoint**: ``base_url`` and ``model`` (or the environment variables ``ISAC_LLM_BASE_URL`` and
``ISAC_LLM_MODEL``); the API key is read from the variable named by ``api_key_env`` (default
``OPENAI_API_KEY``; unset is fine for local servers) and never leaves the HTTP header
(:mod:`isac.solvers.llm_client`). Replies are cached in SQLite (``cache_path``, default
:func:`isac.solvers.llm_client.default_cache_path`) keyed by endpoint, model, messages and
sampling settings; ``no_cache`` bypasses the cache.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from isac.solvers.base import OptionError
from isac.solvers.li_association import (
    AssociationError,
    AssociationMethod,
    AssociationResult,
    _fill_empty_bs,
    _objective,
    _plain,
    _validate_bandwidth,
    get_association_method,
    register_association,
    validate_association,
    validate_sinr_matrix,
)

PROMPT_PARTS = ("system", "background", "problem", "task", "reflection", "output", "retry")
"""Template files (``<part>.txt``) of the prompt, in the package and in a ``prompt_dir``."""
PLACEHOLDERS = ("num_bs", "num_users", "bs_names", "cu_names", "bandwidth", "sinr_table", "example",
                "history", "best_objective", "problems")
"""Names a template may use as ``$name``."""
ENV_BASE_URL = "ISAC_LLM_BASE_URL"
ENV_MODEL = "ISAC_LLM_MODEL"


class NoAssociationError(AssociationError):
    """``fallback = "none"`` and no round gave a usable association; ``info`` holds the run's counts."""

    def __init__(self, message: str, info: dict[str, Any]) -> None:
        super().__init__(message)
        self.info = info


# --- templates and rendering ------------------------------------------------------------


def load_templates(prompt_dir: str | Path | None = None) -> dict[str, string.Template]:
    """The prompt templates: the package's, with any ``<part>.txt`` found in ``prompt_dir`` instead.

    Refuses (one line) a ``prompt_dir`` that is not a folder, an unreadable or non-UTF-8 file, and a
    template with an unknown ``$placeholder`` or a stray ``$``.
    """
    folder = None
    if prompt_dir:
        folder = Path(prompt_dir)
        if not folder.is_dir():
            raise AssociationError(f"prompt_dir {str(folder)!r}: not a folder")
    out: dict[str, string.Template] = {}
    for part in PROMPT_PARTS:
        path = folder / f"{part}.txt" if folder is not None else None
        try:
            if path is not None and path.is_file():
                text = path.read_text(encoding="utf-8")
                where = str(path)
            else:
                text = resources.files("isac.solvers").joinpath("prompts", "li_association", f"{part}.txt").read_text(
                    encoding="utf-8")
                where = f"built-in {part}.txt"
        except (OSError, UnicodeDecodeError) as e:
            raise AssociationError(f"prompt template {part}.txt: cannot read it ({type(e).__name__})") from None
        tpl = string.Template(text)
        _check_template(tpl, where)
        out[part] = tpl
    return out


def _check_template(tpl: string.Template, where: str) -> None:
    for m in tpl.pattern.finditer(tpl.template):
        if m.group("invalid") is not None:
            line = tpl.template[: m.start()].count("\n") + 1
            raise AssociationError(f"prompt template {where}, line {line}: a '$' that is not a placeholder "
                                   "(write $$ for a dollar sign)")
        name = m.group("named") or m.group("braced")
        if name is not None and name not in PLACEHOLDERS:
            raise AssociationError(f"prompt template {where}: unknown placeholder ${name} "
                                   f"(known: {', '.join(PLACEHOLDERS)})")


def format_sinr_table(sinr: np.ndarray, fmt: str = "linear") -> str:
    """The SINR matrix as a text table: a header of CU names, one row per BS (4 significant digits)."""
    K, N = sinr.shape
    if fmt == "db":
        with np.errstate(divide="ignore"):
            vals = 10.0 * np.log10(sinr)
        cells = [["-inf" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in vals]
    else:
        cells = [[f"{v:.4g}" for v in row] for row in sinr]
    head = ["", *[f"CU{i + 1}" for i in range(N)]]
    rows = [[f"BS{k + 1}", *cells[k]] for k in range(K)]
    width = max(len(c) for r in [head, *rows] for c in r)
    return "\n".join(" ".join(c.rjust(width) for c in r) for r in [head, *rows])


def _history_text(history: list[tuple[np.ndarray, float]]) -> str:
    lines = []
    for j, (a, f) in enumerate(history, 1):
        lines.append(f"{j}. {json.dumps({'association': [int(x) + 1 for x in a]})}  ->  F = {f:.6g}")
    return "\n".join(lines)


def render_messages(templates: dict[str, string.Template], sinr: np.ndarray, bandwidth: float,
                    history: list[tuple[np.ndarray, float]], sinr_format: str = "linear") -> list[dict[str, str]]:
    """The chat messages of one round: ``[system, user]`` (``history``: earlier (association [N], F), oldest first)."""
    K, N = sinr.shape
    example = json.dumps({"association": [i % K + 1 for i in range(N)]})
    values = {
        "num_bs": str(K), "num_users": str(N),
        "bs_names": ", ".join(f"BS{k + 1}" for k in range(K)),
        "cu_names": ", ".join(f"CU{i + 1}" for i in range(N)),
        "bandwidth": f"{bandwidth:g}" if bandwidth != 1.0 else "1 (rates in bit/s/Hz)",
        "sinr_table": format_sinr_table(sinr, sinr_format),
        "example": example,
        "history": _history_text(history),
        "best_objective": f"{max(f for _, f in history):.6g}" if history else "",
        "problems": "",
    }
    parts = ["background", "problem", "task"] + (["reflection"] if history else []) + ["output"]
    user = "\n\n".join(templates[p].substitute(values).strip() for p in parts)
    return [{"role": "system", "content": templates["system"].substitute(values).strip()},
            {"role": "user", "content": user}]


def render_retry(templates: dict[str, string.Template], sinr: np.ndarray, problems: str) -> str:
    K, N = sinr.shape
    return templates["retry"].safe_substitute(num_bs=str(K), num_users=str(N), problems=problems).strip()


def response_schema(num_bs: int, num_users: int) -> dict[str, Any]:
    """JSON schema of a reply: ``{"association": [N integers in 1..K]}``.

    The range is an ``enum``: llama.cpp's grammar ignores ``minimum``/``maximum`` on integers."""
    return {"type": "object",
            "properties": {"association": {"type": "array",
                                           "items": {"type": "integer", "enum": list(range(1, num_bs + 1))},
                                           "minItems": num_users, "maxItems": num_users}},
            "required": ["association"], "additionalProperties": False}


def response_format(num_bs: int, num_users: int, style: str) -> dict[str, Any]:
    """``response_format`` for constrained decoding: OpenAI's ``json_schema`` form, or ``json_object``
    with a ``schema`` (the form older llama.cpp servers read)."""
    schema = response_schema(num_bs, num_users)
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "user_association", "schema": schema, "strict": True}}


# --- reading a reply --------------------------------------------------------------------


@dataclass
class ParsedReply:
    """What a reply gave: ``association`` ([N] 0-based) or None when unusable, whether it was valid
    as sent, and the repairs made (or why it is unusable)."""

    association: np.ndarray | None
    valid: bool
    repairs: list[str] = field(default_factory=list)
    reason: str = ""


_INT_LIST = re.compile(r"\[\s*[-+]?\d+(?:\.0+)?(?:\s*,\s*[-+]?\d+(?:\.0+)?)*\s*\]")
_DIGITS = re.compile(r"[-+]?\d+")


def _find_answer(text: str) -> tuple[Any, bool]:
    """(answer, came_as_object): the last ``{"association": ...}`` object's value, else the last int list."""
    decoder = json.JSONDecoder()
    stripped = text.strip()
    candidates: list[Any] = []
    try:
        whole = json.loads(stripped)
        candidates.append(whole)
    except (ValueError, RecursionError):
        low = text.lower()
        start = 0
        while True:
            j = low.find("association", start)
            if j < 0:
                break
            start = j + 1
            brace = text.rfind("{", max(0, j - 200), j)
            if brace < 0:
                continue
            try:
                obj, _ = decoder.raw_decode(text, brace)
            except (ValueError, RecursionError):
                continue
            candidates.append(obj)
    for obj in reversed(candidates):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str) and k.strip().lower() == "association":
                    return v, True
        elif isinstance(obj, list):
            return obj, False
    lists = _INT_LIST.findall(text)
    if lists:
        try:
            return json.loads(lists[-1]), False
        except (ValueError, RecursionError):
            pass
    return None, False


def _as_int(v: Any) -> tuple[int | None, bool]:
    """(integer, exact): exact when ``v`` is a JSON integer or an integer-valued float."""
    if isinstance(v, bool):
        return None, False
    if isinstance(v, int):
        return v, True
    if isinstance(v, float) and math.isfinite(v) and v == round(v) and abs(v) < 1e9:
        return int(v), True
    if isinstance(v, str):
        m = _DIGITS.findall(v)
        if len(m) == 1 and abs(int(m[0])) < 1e9:
            return int(m[0]), False
    return None, False


def parse_reply(text: str, sinr: np.ndarray) -> ParsedReply:
    """Read, check and if need be repair one reply (module docstring, "Reading a reply"). Never raises."""
    try:
        return _parse_reply(text if isinstance(text, str) else str(text), sinr)
    except Exception as e:  # noqa: BLE001  (whatever a server sends is a result, not a crash)
        return ParsedReply(None, False, reason=f"unparsable reply ({type(e).__name__})")


def _parse_reply(text: str, sinr: np.ndarray) -> ParsedReply:
    K, N = sinr.shape
    if not text.strip():
        return ParsedReply(None, False, reason="the reply was empty")
    answer, as_object = _find_answer(text)
    if answer is None:
        return ParsedReply(None, False, reason='no JSON object {"association": [...]} and no list of integers found')
    if not isinstance(answer, list):
        return ParsedReply(None, False, reason=f'"association" is a {type(answer).__name__}, not a list')
    repairs: list[str] = [] if as_object else ["the answer was a bare list, not the requested JSON object"]
    ints: list[int | None] = []
    inexact = 0
    for v in answer:
        x, exact = _as_int(v)
        ints.append(x)
        inexact += (x is not None and not exact)
    if inexact:
        repairs.append(f"{inexact} entries were text, read as integers")
    present = [x for x in ints if x is not None]
    if present and min(present) == 0 and max(present) <= K - 1:
        ints = [None if x is None else x + 1 for x in ints]
        repairs.append("BS numbers were 0-based; shifted by one")
    if len(ints) != N:
        repairs.append(f"the list had {len(ints)} entries, expected {N}")
    ints = ints[:N] + [None] * max(0, N - len(ints))
    best_bs = sinr.argmax(axis=0)
    a = np.empty(N, dtype=np.int64)
    replaced = []
    for i, x in enumerate(ints):
        if x is None or not 1 <= x <= K:
            a[i] = best_bs[i]
            replaced.append(i)
        else:
            a[i] = x - 1
    if len(replaced) * 2 > N:
        return ParsedReply(None, False, repairs,
                           reason=f"{len(replaced)} of {N} entries are missing or not BS numbers 1..{K}")
    if replaced:
        shown = ", ".join(f"CU{i + 1}" for i in replaced[:5]) + (", ..." if len(replaced) > 5 else "")
        repairs.append(f"{len(replaced)} missing or out-of-range entries ({shown}) set to the CU's best-SINR BS")
    empty = [k + 1 for k in range(K) if not (a == k).any()]
    if empty:
        a, moves = _fill_empty_bs(sinr, a)
        repairs.append(f"BS {', '.join(map(str, empty))} served no CU; {moves} CU(s) moved there (27d)")
    return ParsedReply(a, not repairs, repairs)


# --- the method ---------------------------------------------------------------------------


@register_association
@dataclass
class LlmAssociation(AssociationMethod):
    """000's LLM optimiser of (P2) (Algorithm 1); see the module docstring for prompt, repair and stopping."""

    name: ClassVar[str] = "llm"
    description: ClassVar[str] = ("000's LLM optimiser (Algorithm 1): chain-of-thought prompt, self-reflection rounds, "
                                  "validated/repaired replies, gale-shapley fallback")

    base_url: str = ""
    """OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1 ("": $ISAC_LLM_BASE_URL)."""
    model: str = ""
    """Model name sent to the server ("": $ISAC_LLM_MODEL)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: a placeholder key, fine for local servers)."""
    max_rounds: int = 5
    stop: Literal["no-improvement", "first-improvement", "rounds"] = "no-improvement"
    patience: int = 1
    """Usable rounds without improvement before ``stop = "no-improvement"`` stops."""
    retries_per_round: int = 1
    """Follow-up requests after an unusable reply, per round."""
    time_budget_s: float = 60.0
    """Whole call, retries and waiting included."""
    token_budget: int = 0
    """Prompt + completion tokens for the whole call (0: no limit)."""
    max_tokens: int = 2048
    """Output-token cap per reply."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Request field of the cap (OpenAI's reasoning models want max_completion_tokens)."""
    request_timeout_s: float = 30.0
    """One HTTP request (never beyond the time budget)."""
    max_retries: int = 2
    """Retries of one request after HTTP 429/5xx, a request timeout or a connection error."""
    temperature: float = 0.0
    seed: int = 0
    """Sampling seed sent to the server (-1: none sent)."""
    json_schema: bool = False
    """Constrained decoding: send ``response_format`` with the reply's JSON schema."""
    schema_style: Literal["auto", "json_schema", "json_object"] = "auto"
    """Form of ``response_format``: OpenAI's ``json_schema``, or ``json_object`` with a ``schema`` (what
    llama-cpp-python's server reads; it answers HTTP 500 to ``json_schema``); ``auto``: ``json_schema``,
    switching to ``json_object`` for the rest of the call when the server refuses the first."""
    history: int = 3
    """Earlier associations shown in the self-reflection part."""
    sinr_format: Literal["linear", "db"] = "linear"
    prompt_dir: str = ""
    """Folder of template files overriding the built-in ones (module docstring)."""
    repair: bool = True
    """Use repaired replies; False: a reply must be valid as sent."""
    cache_path: str = ""
    """SQLite reply cache ("": the default path)."""
    no_cache: bool = False
    fallback: str = "gale-shapley"
    """Association method used when no round gives a usable association; ``"none"``: raise
    :class:`NoAssociationError` instead (what reproductions use, to report N/A as the paper does)."""

    def __post_init__(self) -> None:
        for name, lo in (("max_rounds", 1), ("patience", 1), ("retries_per_round", 0), ("max_tokens", 1),
                         ("max_retries", 0), ("history", 0), ("token_budget", 0)):
            if getattr(self, name) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        for name in ("time_budget_s", "request_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v}")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 2):
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.fallback == self.name:
            raise ValueError("fallback cannot be 'llm' itself")
        if self.fallback != "none":
            get_association_method(self.fallback)  # an unknown name is an option error now

    # --- configuration ---

    def endpoint(self) -> tuple[str, str]:
        """(base URL, model) from the options or the environment; OptionError when either is missing."""
        from isac.solvers.llm_client import check_base_url

        base = self.base_url or os.environ.get(ENV_BASE_URL, "")
        model = self.model or os.environ.get(ENV_MODEL, "")
        if not base:
            raise OptionError(f"association method 'llm': no endpoint configured: set ${ENV_BASE_URL} (e.g. "
                              "http://127.0.0.1:8080/v1), or --llm-base-url in isac associate, -o llm_base_url=... "
                              "in isac solve")
        if not model:
            raise OptionError(f"association method 'llm': no model configured: set ${ENV_MODEL}, or --llm-model in "
                              "isac associate, -o llm_model=... in isac solve")
        try:
            return check_base_url(base), model
        except ValueError as e:
            raise OptionError(f"association method 'llm': {e}") from None

    def templates(self) -> dict[str, string.Template]:
        return load_templates(self.prompt_dir or None)

    def prompt(self, sinr: Any, *, bandwidth: float = 1.0, initial: Any = None) -> list[dict[str, str]]:
        """The first round's messages for this input (what ``--show-prompt`` prints); no server is contacted."""
        g = validate_sinr_matrix(sinr)
        b = _validate_bandwidth(bandwidth)
        hist = []
        if initial is not None:
            init = validate_association(initial, *g.shape)
            hist = [(init, _objective(g, init, b))]
        return render_messages(self.templates(), g, b, hist, self.sinr_format)

    # --- the loop ---

    def associate(self, sinr: Any, *, bandwidth: float = 1.0, initial: Any = None) -> AssociationResult:
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.time_budget_s
        g = validate_sinr_matrix(sinr)
        b = _validate_bandwidth(bandwidth)
        init = None if initial is None else validate_association(initial, *g.shape)
        base, model = self.endpoint()
        templates = self.templates()
        fallback = None if self.fallback == "none" else get_association_method(self.fallback)
        assoc, info = self._loop(g, b, init, base, model, templates, deadline)
        if assoc is None and fallback is None:
            info["time_s"] = time.perf_counter() - t0
            raise NoAssociationError(
                f"llm: no usable association in {info['replies']} replies over {info['rounds']} rounds "
                f"({info['stop_reason']}; fallback = none)", _plain(info))
        if assoc is None:
            fb = fallback.associate(g, bandwidth=b, initial=init)
            assoc = fb.association
            info["provenance"] = "fallback"
            info["fallback_method"] = fallback.name
        objective = _objective(g, assoc, b)
        info["time_s"] = time.perf_counter() - t0
        info = {"num_bs": g.shape[0], "num_users": g.shape[1], **info}
        return AssociationResult(assoc, objective, self.name, info["time_s"], _plain(info))

    def _loop(self, g, b, init, base, model, templates, deadline):
        from isac.solvers.llm_client import (
            CacheError,
            ChatClient,
            ChatSettings,
            LlmCallError,
            ResponseCache,
            default_cache_path,
            public_url,
        )

        K, N = g.shape
        info: dict[str, Any] = {"model": model, "base_url": public_url(base)}
        cache = None
        if not self.no_cache:
            try:
                cache = ResponseCache(self.cache_path or default_cache_path())
            except CacheError as e:
                info["cache_error"] = str(e)
        settings = ChatSettings(base_url=base, model=model, api_key_env=self.api_key_env,
                                temperature=self.temperature, seed=None if self.seed < 0 else self.seed,
                                max_tokens=self.max_tokens, max_tokens_field=self.max_tokens_field,
                                request_timeout_s=self.request_timeout_s, max_retries=self.max_retries)
        client = ChatClient(settings, cache)
        style = "json_schema" if self.schema_style == "auto" else self.schema_style
        rf = response_format(K, N, style) if self.json_schema else None
        history: list[tuple[np.ndarray, float]] = [] if init is None else [(init, _objective(g, init, b))]
        reference = history[0][1] if history else -math.inf

        def ask(msgs):
            nonlocal rf, style
            try:
                return client.chat(msgs, deadline=deadline, response_format=rf)
            except LlmCallError as e:
                refused = e.kind in ("http", "server") and counts["replies"] == 0
                if not (refused and rf is not None and self.schema_style == "auto" and style == "json_schema"):
                    raise
                errors.append(f"round {rounds}: {e}; switching response_format to json_object with a schema")
                style = "json_object"
                rf = response_format(K, N, style)
                return client.chat(msgs, deadline=deadline, response_format=rf)

        best: tuple[np.ndarray, float, str, list[str]] | None = None
        counts = {"replies": 0, "valid_replies": 0, "repaired_replies": 0, "invalid_replies": 0}
        tokens = 0
        errors: list[str] = []
        round_objectives: list[float | None] = []
        stale = 0
        failing = 0
        prev: float | None = None
        stop_reason = f"max_rounds={self.max_rounds} reached"
        out_of_time = False
        rounds = 0
        for _ in range(self.max_rounds):
            if time.monotonic() >= deadline - 0.05:
                stop_reason, out_of_time = f"time budget of {self.time_budget_s:g} s spent", True
                break
            if self.token_budget and tokens >= self.token_budget:
                stop_reason = f"token budget of {self.token_budget} spent"
                break
            rounds += 1
            messages = render_messages(templates, g, b, history[-self.history:] if self.history else [],
                                       self.sinr_format)
            got: ParsedReply | None = None
            answered = False
            for attempt in range(self.retries_per_round + 1):
                try:
                    reply = ask(messages)
                except LlmCallError as e:
                    errors.append(f"round {rounds}: {e}")
                    if e.kind == "timeout":
                        out_of_time = True
                        break
                    if e.kind in ("http", "client"):
                        break  # not retryable: a follow-up would fail the same way
                    continue
                counts["replies"] += 1
                answered = True
                tokens += reply.tokens or (sum(len(m["content"]) for m in messages) + len(reply.text)) // 4
                parsed = parse_reply(reply.text, g)
                if reply.truncated:
                    parsed.repairs.append("the reply was cut at the length limit")
                    parsed.valid = False
                if parsed.association is not None and parsed.valid:
                    counts["valid_replies"] += 1
                    got = parsed
                    break
                if parsed.association is not None and self.repair:
                    counts["repaired_replies"] += 1
                    got = parsed
                    break
                counts["invalid_replies"] += 1
                why = parsed.reason or "; ".join(parsed.repairs)
                errors.append(f"round {rounds}: unusable reply: {why}")
                if attempt < self.retries_per_round:
                    messages = [*messages, {"role": "assistant", "content": reply.text[:4000]},
                                {"role": "user", "content": render_retry(templates, g, why)}]
                if self.token_budget and tokens >= self.token_budget:
                    break
            if got is None:
                round_objectives.append(None)
                if out_of_time:
                    stop_reason = f"time budget of {self.time_budget_s:g} s spent"
                    break
                failing = 0 if answered else failing + 1
                if failing >= 2:
                    stop_reason = "the server gave no reply in 2 rounds in a row"
                    break
                continue
            failing = 0
            f = _objective(g, got.association, b)
            round_objectives.append(f)
            tol = 1e-12 * max(1.0, abs(f))
            improved = f > max(reference, best[1] if best else -math.inf) + tol
            if best is None or f > best[1] + tol:
                best = (got.association.copy(), f, "llm" if got.valid else "repaired", got.repairs)
            if not any(np.array_equal(got.association, a) for a, _ in history):
                history.append((got.association.copy(), f))
            if self.stop == "first-improvement" and prev is not None and f > prev + tol:
                stop_reason = "a round beat the previous one (the paper's rule)"
                break
            stale = 0 if improved else stale + 1
            if self.stop == "no-improvement" and stale >= self.patience:
                stop_reason = f"{stale} round(s) without improvement"
                break
            prev = f
        info.update(counts)
        if rf is not None:
            info["schema_style"] = style
        info.update({"rounds": rounds, "tokens": int(tokens), "requests": client.requests,
                     "cache_hits": client.cache_hits, "stop_reason": stop_reason,
                     "round_objectives": round_objectives, "errors": errors[:20],
                     "valid_reply_rate": counts["valid_replies"] / counts["replies"] if counts["replies"] else 0.0})
        if client.cache_error:
            info["cache_error"] = client.cache_error
        if cache is not None:
            cache.close()
        if best is None:
            return None, info
        info["provenance"] = best[2]
        info["repairs"] = best[3]
        return best[0], info
