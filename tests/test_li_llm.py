"""000's LLM association (method ``llm``) against scripted OpenAI-compatible servers on loopback.

Every behaviour of the server must end in a valid association (checked by
``validate_association``, (27d)-(27f)), with an objective re-computed by the metrics package, the
right provenance, bounded time, and the API key nowhere in outputs or files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import ScriptedServer  # noqa: E402

from isac.metrics.network import association_objective_bps_hz  # noqa: E402
from isac.solvers.base import OptionError  # noqa: E402
from isac.solvers.li_association import AssociationError, associate, validate_association  # noqa: E402
from isac.solvers.li_llm import (  # noqa: E402
    NoAssociationError,
    load_templates,
    parse_reply,
    render_messages,
    response_schema,
)

SECRET = "sk-test-7f3a9c2e5b1d4f6a8e0c"
S = np.array([[10.0, 1.0, 300.0, 2.0, 7.0],
              [5.0, 40.0, 1.0, 3.0, 0.5],
              [0.2, 30.0, 2.0, 90.0, 6.0]])
K, N = S.shape


def _json(assoc0) -> str:
    return json.dumps({"association": [int(x) + 1 for x in assoc0]})


def _metric(sinr, a, b=1.0) -> float:
    import torch

    return float(association_objective_bps_hz(torch.as_tensor(sinr), torch.as_tensor(a), b))


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ISAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ISAC_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("ISAC_LLM_MODEL", raising=False)


EXACT = associate(S, "exact")
GS = associate(S, "gale-shapley")
WORSE = np.array([0, 1, 2, 2, 0])  # valid, below the optimum
BETTER = np.array([0, 1, 0, 2, 0])


def _check(res, provenance, budget_s):
    a = validate_association(res.association, K, N, "result")  # raises unless (27d)-(27f) hold
    assert res.objective == pytest.approx(_metric(S, a), rel=1e-12)
    assert res.info["provenance"] == provenance, res.info
    assert res.time_s <= budget_s + 1.5
    assert SECRET not in json.dumps(res.to_dict())


# --- prompt ------------------------------------------------------------------------------


def test_prompt_follows_section_v_a_and_is_deterministic():
    t = load_templates()
    m1 = render_messages(t, S, 1.0, [])
    m2 = render_messages(load_templates(), S.copy(), 1.0, [])
    assert m1 == m2
    assert [m["role"] for m in m1] == ["system", "user"]
    assert "expert in wireless communications" in m1[0]["content"]
    u = m1[1]["content"]
    for words in ("3 base stations", "5 ground communication users", "exactly one BS", "at least one CU",
                  "log2(1 + SINR", "split", "<objective>", "</objective>", "<constraints>", "</constraints>",
                  "First formulate the mathematical model", "step by step", "serves more CUs",
                  "largest SINR", '{"association": [', "300", "CU5"):
        assert words in u, words
    assert "Self-reflection" not in u  # no history in the first round
    with_hist = render_messages(t, S, 1.0, [(WORSE, _metric(S, WORSE))])[1]["content"]
    assert "Self-reflection" in with_hist and _json(WORSE) in with_hist
    assert f"{_metric(S, WORSE):.6g}" in with_hist


def test_prompt_dir_overrides_one_part_and_bad_templates_are_one_line_errors(tmp_path):
    (tmp_path / "task.txt").write_text("Solve it for $num_users users, please.")
    u = render_messages(load_templates(tmp_path), S, 1.0, [])[1]["content"]
    assert "Solve it for 5 users, please." in u and "<objective>" in u  # other parts stay built-in
    (tmp_path / "task.txt").write_text("cost: $price")
    with pytest.raises(AssociationError, match=r"unknown placeholder \$price"):
        load_templates(tmp_path)
    (tmp_path / "task.txt").write_text("costs 5 $ total")
    with pytest.raises(AssociationError, match="write \\$\\$"):
        load_templates(tmp_path)
    with pytest.raises(AssociationError, match="not a folder"):
        load_templates(tmp_path / "nope")


# --- reading replies ---------------------------------------------------------------------


@pytest.mark.parametrize("text, valid, expect", [
    ('{"association": [1, 2, 1, 3, 1]}', True, [0, 1, 0, 2, 0]),
    ('Reasoning {"x": 1} ... so {"association": [1, 2, 1, 3, 1]} is best.', True, [0, 1, 0, 2, 0]),
    ('first {"association": [3, 3, 3, 3, 3]} then finally {"association": [1, 2, 1, 3, 1]}', True, [0, 1, 0, 2, 0]),
    ('```json\n{"association": [1.0, 2, 1, 3, 1]}\n```', True, [0, 1, 0, 2, 0]),
    ("[1, 2, 1, 3, 1]", False, [0, 1, 0, 2, 0]),                       # bare list
    ('{"association": [0, 1, 0, 2, 0]}', False, [0, 1, 0, 2, 0]),       # 0-based
    ('{"association": ["BS1", "2", 1, 3, 1]}', False, [0, 1, 0, 2, 0]),  # text entries
    ('{"association": [1, 2, 1, 3, 1, 2, 2]}', False, [0, 1, 0, 2, 0]),  # too long
])
def test_parse_reply_valid_and_repaired(text, valid, expect):
    p = parse_reply(text, S)
    assert p.valid is valid and p.association.tolist() == expect
    assert (not valid) == bool(p.repairs)


def test_repair_rules_out_of_range_and_empty_bs():
    # CU4 (index 3) gets 9 -> replaced by its best-SINR BS (BS3, index 2); short list padded the same way.
    p = parse_reply('{"association": [1, 2, 1, 9]}', S)
    assert not p.valid and p.association.tolist() == [0, 1, 0, 2, int(S[:, 4].argmax())]
    # Everybody at BS1: (27d) moves to BS2 and BS3 the CUs with the largest SINR there.
    p = parse_reply('{"association": [1, 1, 1, 1, 1]}', S)
    a = validate_association(p.association, K, N)
    assert a[1] in (1, 2) and a[3] == 2 and not p.valid


@pytest.mark.parametrize("text", ["", "   ", "no numbers here", "{not json", '{"association": "1,2,3"}',
                                  '{"association": [7, 8, 9, 1, 1]}', "[" * 5000, '{"association": [[[[[[' * 300])
def test_unusable_replies(text):
    p = parse_reply(text, S)
    assert p.association is None and p.reason


def test_schema_is_n_integers_in_range():
    sch = response_schema(K, N)
    items = sch["properties"]["association"]
    assert items["minItems"] == items["maxItems"] == N
    assert items["items"] == {"type": "integer", "enum": [1, 2, 3]}  # llama.cpp ignores minimum/maximum


# --- against scripted servers --------------------------------------------------------------


def _run(server, model, **kw):
    opts = dict(base_url=server.base_url, model=model, time_budget_s=4.0, request_timeout_s=2.0, no_cache=True)
    opts.update(kw)
    return associate(S, "llm", **opts)


def test_correct_answer_is_llm_and_optimal():
    with ScriptedServer({"m": [("reply", "Let me think.\n" + _json(EXACT.association))]}) as s:
        res = _run(s, "m")
    _check(res, "llm", 4.0)
    assert res.objective == pytest.approx(EXACT.objective, rel=1e-12)
    assert res.info["valid_replies"] == res.info["replies"] == res.info["rounds"] == 2  # 2nd round: no improvement
    # The request carried the key (so it was really used) and the sampling settings.
    req = s.requests[0]
    assert req["headers"].get("authorization") == f"Bearer {SECRET}"
    assert req["body"]["temperature"] == 0.0 and req["body"]["seed"] == 0 and req["body"]["max_tokens"] == 2048
    assert "response_format" not in req["body"]


def test_improving_rounds_keep_the_best_and_stop_rules():
    script = [("reply", _json(WORSE)), ("reply", _json(BETTER)), ("reply", _json(EXACT.association)),
              ("reply", _json(WORSE))]
    f = [_metric(S, WORSE), _metric(S, BETTER), EXACT.objective]
    assert f[0] < f[1] < f[2]
    with ScriptedServer({"m": script}) as s:
        res = _run(s, "m")
    _check(res, "llm", 4.0)
    assert res.info["round_objectives"] == pytest.approx([*f, f[0]])
    assert res.association.tolist() == EXACT.association.tolist()
    assert "without improvement" in res.info["stop_reason"]
    # The reflection part shows the earlier associations.
    last_prompt = s.requests[-1]["body"]["messages"][1]["content"]
    assert _json(WORSE) in last_prompt and _json(BETTER) in last_prompt
    with ScriptedServer({"m": script}) as s:  # the paper's rule: stop once a round beats the previous
        res = _run(s, "m", stop="first-improvement")
    assert res.info["rounds"] == 2 and res.association.tolist() == BETTER.tolist()
    with ScriptedServer({"m": script}) as s:
        res = _run(s, "m", stop="rounds", max_rounds=3)
    assert res.info["rounds"] == 3 and "max_rounds" in res.info["stop_reason"]


@pytest.mark.parametrize("behaviour, provenance", [
    (("reply", "I think it is " + _json(BETTER) + " because BS1 is strong."), "llm"),  # prose around JSON
    (("reply", '{"association": [1, 2, 9, 3, 1]}'), "repaired"),                         # wrong index
    (("reply", '{"association": [1, 1, 1, 1, 1]}'), "repaired"),                         # BS with no users
    (("reply", "{this is not json"), "fallback"),
    (("reply", ""), "fallback"),                                                         # empty reply
    (("reply", "blah " * 30000), "fallback"),                                            # over-long, no answer
    (("garbage",), "fallback"),
    (("no-choices",), "fallback"),
])
def test_bad_and_odd_replies(behaviour, provenance):
    with ScriptedServer({"m": [behaviour]}) as s:
        res = _run(s, "m")
    _check(res, provenance, 4.0)
    if provenance == "fallback":
        assert res.association.tolist() == GS.association.tolist() and res.info["fallback_method"] == "gale-shapley"
        assert res.info["errors"] and all("\n" not in e for e in res.info["errors"])
    if provenance == "repaired":
        assert res.info["repairs"] and res.info["valid_replies"] == 0


def test_invalid_reply_is_retried_with_a_note():
    with ScriptedServer({"m": [("reply", "{oops"), ("reply", _json(EXACT.association))]}) as s:
        res = _run(s, "m")
    _check(res, "llm", 4.0)
    retry = s.requests[1]["body"]["messages"]
    assert retry[-2]["role"] == "assistant" and "could not be used" in retry[-1]["content"]
    assert res.info["invalid_replies"] == 1 and res.info["valid_replies"] >= 1


def test_overlong_reply_is_cut_and_never_valid_as_sent():
    with ScriptedServer({"m": [("reply", "x" * 300_000 + "\n" + _json(EXACT.association))]}) as s:
        res = _run(s, "m")
    _check(res, "repaired", 4.0)  # the answer at the end survives the cut, but the reply was cut


def test_429_then_success():
    with ScriptedServer({"m": [("status", 429), ("reply", _json(EXACT.association))]}) as s:
        res = _run(s, "m")
    _check(res, "llm", 4.0)
    assert res.info["requests"] >= 2


@pytest.mark.parametrize("behaviour", [("status", 500), ("status", 401), ("drop",), ("hang", 60)])
def test_failing_servers_fall_back_in_bounded_time(behaviour):
    t0 = time.monotonic()
    with ScriptedServer({"m": [behaviour]}) as s:
        res = _run(s, "m", time_budget_s=3.0, request_timeout_s=5.0)
    assert time.monotonic() - t0 < 3.0 + 2.0
    _check(res, "fallback", 3.0)
    assert res.info["replies"] == 0 and res.info["errors"]


def test_nothing_listening_and_no_endpoint():
    res = associate(S, "llm", base_url="http://127.0.0.1:9/v1", model="m", time_budget_s=2.0, no_cache=True)
    _check(res, "fallback", 2.0)
    with pytest.raises(OptionError, match="no endpoint configured"):
        associate(S, "llm")
    with pytest.raises(OptionError, match="not an http"):
        associate(S, "llm", base_url="ftp://x", model="m")
    with pytest.raises(OptionError, match="time_budget_s"):
        associate(S, "llm", base_url="http://127.0.0.1:9/v1", model="m", time_budget_s=-1)


def test_fallback_none_raises_with_counts():
    with ScriptedServer({"m": [("reply", "nothing useful")]}) as s:
        with pytest.raises(NoAssociationError, match="no usable association") as e:
            _run(s, "m", fallback="none", max_rounds=2, retries_per_round=0)
    assert e.value.info["replies"] == 2 and e.value.info["valid_replies"] == 0


def test_token_budget_and_json_schema_request():
    with ScriptedServer({"m": [("reply", _json(WORSE)), ("reply", _json(EXACT.association))]}) as s:
        res = _run(s, "m", token_budget=100, json_schema=True, temperature=0.7, seed=-1, max_tokens=99)
    assert res.info["rounds"] == 1 and "token budget" in res.info["stop_reason"]  # the server reports 120/reply
    body = s.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == response_schema(K, N)
    assert body["temperature"] == 0.7 and "seed" not in body and body["max_tokens"] == 99


def test_auto_schema_style_switches_to_json_object_when_refused():
    with ScriptedServer({"m": [("picky",)]}) as s:
        res = _run(s, "m", json_schema=True, max_retries=0)
    _check(res, "llm", 4.0)
    assert res.info["schema_style"] == "json_object" and res.objective == pytest.approx(EXACT.objective)
    kinds = [r["body"]["response_format"]["type"] for r in s.requests]
    assert kinds[0] == "json_schema" and set(kinds[1:]) == {"json_object"}
    assert s.requests[1]["body"]["response_format"]["schema"] == response_schema(K, N)
    with ScriptedServer({"m": [("picky",)]}) as s:  # an explicit style is kept
        res = _run(s, "m", json_schema=True, schema_style="json_schema", max_retries=0)
    assert res.info["provenance"] == "fallback"


def test_cache_reruns_call_the_model_zero_times(tmp_path):
    cache = tmp_path / "replies.sqlite"
    script = [("reply", _json(WORSE)), ("reply", _json(EXACT.association)), ("reply", _json(BETTER))]
    with ScriptedServer({"m": script}) as s:
        first = _run(s, "m", no_cache=False, cache_path=str(cache))
        n = len(s.requests)
        again = _run(s, "m", no_cache=False, cache_path=str(cache))
        assert len(s.requests) == n  # no new request
        bypass = _run(s, "m", no_cache=True)
        assert len(s.requests) > n
    assert again.info["requests"] == 0 and again.info["cache_hits"] == first.info["replies"]
    for k in ("round_objectives", "replies", "valid_replies", "tokens", "provenance"):
        assert again.info[k] == first.info[k]
    assert again.association.tolist() == first.association.tolist()
    assert bypass.info["cache_hits"] == 0
    assert SECRET.encode() not in cache.read_bytes()


def test_key_echoed_by_a_server_never_reaches_outputs_or_cache(tmp_path):
    cache = tmp_path / "c.sqlite"
    with ScriptedServer({"m": [("echo-key",)]}) as s:
        res = _run(s, "m", no_cache=False, cache_path=str(cache))
    assert s.requests[0]["headers"]["authorization"].endswith(SECRET)
    assert SECRET not in json.dumps(res.to_dict())
    assert SECRET.encode() not in cache.read_bytes()


def test_prompt_never_reads_a_reply_objective():
    # A reply that claims a huge objective: the reported one is the metric's.
    with ScriptedServer({"m": [("reply", '{"association": [1, 2, 1, 3, 1], "objective": 1e9}')]}) as s:
        res = _run(s, "m")
    assert res.objective == pytest.approx(_metric(S, [0, 1, 0, 2, 0]))


# --- CLI ---------------------------------------------------------------------------------------


def _cli(args, env_extra=None, timeout=60):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "isac.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("script, provenance", [
    ([("solve",)], "llm"),
    ([("reply", _json(WORSE)), ("reply", _json(BETTER)), ("reply", _json(EXACT.association))], "llm"),  # improving
    ([("reply", "So the answer: " + _json(EXACT.association) + " (done)")], "llm"),                     # prose
    ([("reply", "{invalid json")], "fallback"),
    ([("reply", '{"association": [4, 0, 2, 2, 1]}')], "repaired"),                                     # wrong indices
    ([("reply", '{"association": [1, 1, 1, 1, 1]}')], "repaired"),                                     # empty BS
    ([("reply", "")], "fallback"),
    ([("reply", "z" * 200_000)], "fallback"),                                                          # over-long
    ([("status", 429), ("solve",)], "llm"),
    ([("status", 500)], "fallback"),
    ([("hang", 60)], "fallback"),
    ([("drop",)], "fallback"),
    ([("echo-key",)], "repaired"),
])
def test_cli_associate_llm(tmp_path, script, provenance):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"sinr": S.tolist()}))
    with ScriptedServer({"m": script}) as s:
        t0 = time.monotonic()
        p = _cli(["associate", "--sinr", str(f), "--method", "llm", "--llm-base-url", s.base_url, "--llm-model", "m",
                  "-o", "time_budget_s=3"])
        took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and SECRET not in p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert set(out) >= {"association", "objective", "method", "provenance", "rounds", "valid_replies", "tokens",
                        "time_s"}
    assert out["method"] == "llm" and out["provenance"] == provenance
    a = validate_association(out["association"], K, N)
    assert out["objective"] == pytest.approx(_metric(S, a))
    if provenance == "llm":
        assert out["objective"] == pytest.approx(EXACT.objective)
    assert took < 3.0 + 10.0  # budget plus interpreter start
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_cli_show_prompt_and_errors(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"sinr": S.tolist(), "initial": WORSE.tolist()}))
    p = _cli(["associate", "--sinr", str(f), "--method", "llm", "--show-prompt"])
    assert p.returncode == 0, p.stderr
    from isac.solvers.li_association import get_association_method

    expected = get_association_method("llm").prompt(S, initial=WORSE)
    assert p.stdout == "".join(f"--- {m['role']} ---\n{m['content']}\n" for m in expected)
    assert "Self-reflection" in p.stdout  # the initial association is the first round's "previous" one
    p = _cli(["associate", "--sinr", str(f), "--method", "llm"])
    assert p.returncode == 2 and p.stderr.startswith("error:") and "ISAC_LLM_BASE_URL" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = _cli(["associate", "--sinr", str(f), "--method", "exact", "--show-prompt"])
    assert p.returncode == 2 and "--method llm only" in p.stderr


# --- in the alternating optimisation and in sweeps ------------------------------------------------


def test_ao_with_llm_matches_exact_when_the_model_answers_exactly():
    from isac.scenario.problems import make_preset
    from isac.solvers.registry import get_solver

    inst = make_preset("multibs-association", "li", 3)
    ref = get_solver("multibs-association", "ao", {"association": "exact"}).solve(inst)
    with ScriptedServer({"oracle": [("solve",)], "dead": [("status", 500)]}) as s:
        llm = get_solver("multibs-association", "ao", {"association": "llm", "llm_base_url": s.base_url,
                                                       "llm_model": "oracle", "llm_options": "no_cache=true"}).solve(inst)
        dead = get_solver("multibs-association", "ao", {"association": "llm", "llm_base_url": s.base_url,
                                                        "llm_model": "dead",
                                                        "llm_options": "no_cache=true;time_budget_s=1;fallback=none"}
                          ).solve(inst)
    assert llm.status.value == "CONVERGED"
    assert llm.metrics["sum_rate_bps_hz"] == pytest.approx(ref.metrics["sum_rate_bps_hz"], rel=1e-9)
    assert llm.info["llm_provenance"] == "llm" and llm.info["llm_valid_reply_rate"] == 1.0
    assert llm.info["llm_sum_rate_bps_hz"] == pytest.approx(llm.metrics["sum_rate_bps_hz"])
    assert dead.status.value == "NUMERICAL_ERROR" and "N/A" in dead.message and not dead.solution
    assert dead.info["llm_sum_rate_bps_hz"] is None and dead.info["llm_replies"] == 0
    with pytest.raises(OptionError, match="llm_options"):
        get_solver("multibs-association", "ao", {"association": "exact", "llm_options": "x=1"})
    with pytest.raises(OptionError, match="no option"):
        get_solver("multibs-association", "ao", {"association": "llm", "llm_options": "bogus=1"})


SWEEP = """
name = "llm_sweep"
problem = "multibs-association"
preset = "li"
seed = 11
trials = 2
metrics = ["sum_rate_bps_hz", "info.llm_valid_reply_rate", "info.llm_requests"]

[[axes]]
name = "num_users"
values = [6]

[[solvers]]
name = "ao"
label = "llm"
options = {{ association = "llm", llm_base_url = "{url}", llm_model = "greedy" }}
requires = "llm-endpoint"
"""


def test_sweep_rerun_from_cache_calls_the_model_zero_times(tmp_path, monkeypatch):
    from isac.experiments.reproduce import drop_unavailable
    from isac.experiments.runner import run_sweep
    from isac.experiments.spec import parse_spec
    from isac.experiments.store import ResultStore

    with ScriptedServer({"greedy": [("greedy",)]}) as s:
        text = SWEEP.format(url=s.base_url)
        spec = parse_spec(text)
        kept, skipped = drop_unavailable(spec)  # no endpoint in the environment: the LLM line is left out
        assert skipped == ["llm"] and not kept.solvers
        monkeypatch.setenv("ISAC_LLM_BASE_URL", s.base_url)
        monkeypatch.setenv("ISAC_LLM_MODEL", "greedy")
        assert drop_unavailable(spec) == (spec, [])

        def rows(db):
            run_sweep(spec, text, db, workers=1)
            with ResultStore.open(db, spec, text) as st:
                return [(r["seed"], r["status"], r["metrics"]["sum_rate_bps_hz"], r["metrics"]["info.llm_valid_reply_rate"])
                        for r in st.rows()]

        first = rows(tmp_path / "a.db")
        n = len(s.requests)
        assert n > 0
        second = rows(tmp_path / "b.db")
        assert len(s.requests) == n  # every reply came from the cache
    assert first == second and all(r[1] == "CONVERGED" and math.isfinite(r[2]) for r in first)
