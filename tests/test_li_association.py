"""000's user association (P2): ``exact`` against enumeration and an independent MILP; heuristics; bad input; CLI.

The references are written here, independently of the library: an itertools enumeration with
the objective computed by hand, and a MILP with a different formulation from the library's
``milp`` (binaries x[k, n, i] "CU i on BS k whose load is n").
"""

import itertools
import json
import math

import numpy as np
import pytest

from helpers import run_cli
from isac.metrics.network import association_objective_bps_hz
from isac.solvers.base import OptionError
from isac.solvers.li_association import AssociationError, associate


def by_hand(S, assoc, B=1.0):
    K = S.shape[0]
    total = 0.0
    for k in range(K):
        members = [i for i, a in enumerate(assoc) if a == k]
        if members:
            total += sum(math.log2(1 + S[k, i]) for i in members) / len(members)
    return B * total


def enumerate_best(S):
    K, N = S.shape
    best = -1.0
    for assoc in itertools.product(range(K), repeat=N):
        if len(set(assoc)) == K:
            best = max(best, by_hand(S, assoc))
    return best


def load_indexed_milp(S):
    from scipy.optimize import Bounds, LinearConstraint, milp

    K, N = S.shape
    r = np.log2(1 + S)
    loads = range(1, N - K + 2)
    nx = K * len(loads) * N
    ny = K * len(loads)

    def xi(k, li, i):
        return (k * len(loads) + li) * N + i

    def yi(k, li):
        return nx + k * len(loads) + li

    c = np.zeros(nx + ny)
    rows, lo, hi = [], [], []
    for k in range(K):
        for li, n in enumerate(loads):
            for i in range(N):
                c[xi(k, li, i)] = -r[k, i] / n
            row = np.zeros(nx + ny)
            row[[xi(k, li, i) for i in range(N)]] = 1
            row[yi(k, li)] = -n
            rows.append(row), lo.append(0), hi.append(0)
        row = np.zeros(nx + ny)
        row[[yi(k, li) for li in range(len(loads))]] = 1
        rows.append(row), lo.append(1), hi.append(1)
    for i in range(N):
        row = np.zeros(nx + ny)
        row[[xi(k, li, i) for k in range(K) for li in range(len(loads))]] = 1
        rows.append(row), lo.append(1), hi.append(1)
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(nx + ny),
               bounds=Bounds(0, 1), options={"mip_rel_gap": 1e-12})
    assert res.success
    return -res.fun


def held_back(gen):
    out = []
    for K, N in [(1, 1), (1, 5), (2, 2), (3, 3), (2, 6), (3, 7), (4, 8)]:
        out.append(gen.exponential(10.0, size=(K, N)))
    S = np.full((3, 6), 0.01)
    for i in range(6):
        S[i % 3, i] = 1000.0  # block structure: each CU strongly tied to one BS
    out.append(S)
    out.append(np.ones((3, 6)))  # all ties
    Z = gen.exponential(5.0, size=(3, 7))
    Z[:, ::2] = 0.0  # CUs with zero SINR everywhere
    out.append(Z)
    out.append(np.round(gen.exponential(3.0, size=(3, 6))))  # ties and zeros
    return out


def test_exact_equals_enumeration_and_beats_heuristics():
    gen = np.random.default_rng(11)
    for S in held_back(gen):
        best = enumerate_best(S)
        ex = associate(S, "exact")
        assert ex.objective == pytest.approx(best, rel=1e-12, abs=1e-12), S.shape
        assert ex.objective == pytest.approx(by_hand(S, ex.association), rel=1e-12, abs=1e-12)
        assert ex.objective == pytest.approx(float(association_objective_bps_hz(S, ex.association)), rel=1e-12)
        assert len(set(ex.association.tolist())) == S.shape[0]  # (27d)
        for m in ("gale-shapley", "fixed", "brute-force"):
            res = associate(S, m)
            assert len(set(res.association.tolist())) == S.shape[0] and res.association.shape == (S.shape[1],)
            assert res.objective <= ex.objective + 1e-12
            assert res.objective == pytest.approx(by_hand(S, res.association), rel=1e-12, abs=1e-12)
        assert associate(S, "brute-force").objective == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_exact_equals_independent_milp_on_preset_matrices():
    from isac.experiments.bench_li import association_matrix

    for k, n, seed in [(4, 12, 0), (5, 15, 1)]:
        S = association_matrix(k, n, seed)
        assert associate(S, "exact").objective == pytest.approx(load_indexed_milp(S), rel=1e-9)


def test_coalition_switches_never_lower_the_objective_and_determinism():
    gen = np.random.default_rng(3)
    S = gen.exponential(10.0, size=(4, 12))
    fixed = associate(S, "fixed")
    gs = associate(S, "gale-shapley")
    assert gs.objective >= fixed.objective - 1e-12
    assert np.array_equal(gs.association, associate(S, "gale-shapley").association)
    assert np.array_equal(associate(S, "exact").association, associate(S, "exact").association)
    kept = associate(S, "fixed", initial=gs.association)
    assert np.array_equal(kept.association, gs.association)


@pytest.mark.parametrize("sinr,words", [
    ([[1.0, 2.0], [3.0]], "rectangular"), ([], "2-D"), ([[]], "empty"), ([[1.0, -1.0]], "sinr[0][1]: linear SINRs must be >= 0"),
    ([[1.0, float("nan")]], "NaN"), ([[1.0, float("inf")]], "Inf"), ([[1.0], [2.0]], "K=2 > N=1"),
])
def test_bad_sinr_matrices(sinr, words):
    with pytest.raises(AssociationError) as e:
        associate(sinr, "exact")
    assert words.lower() in str(e.value).lower()


def test_bad_initial_brute_force_limit_and_llm_without_endpoint(monkeypatch):
    monkeypatch.delenv("ISAC_LLM_BASE_URL", raising=False)
    S = np.ones((2, 4))
    with pytest.raises(AssociationError):
        associate(S, "fixed", initial=[0, 1, 2, 0])
    with pytest.raises(AssociationError, match="K\\^N|assignments|too"):
        associate(np.ones((4, 20)), "brute-force")
    with pytest.raises(OptionError, match="llm.*no endpoint configured"):
        associate(S, "llm")
    with pytest.raises(OptionError, match="unknown association method"):
        associate(S, "nope")


def test_cli_associate(capsys, monkeypatch, tmp_path):
    f = tmp_path / "s.json"
    S = [[1.0, 3.0, 0.5, 2.0], [2.0, 0.1, 4.0, 1.0]]
    f.write_text(json.dumps({"sinr": S}))
    code, out, err = run_cli(["associate", "--sinr", f, "--method", "exact", "--bandwidth", "2"], capsys, monkeypatch)
    assert code == 0, err
    d = json.loads(out)
    assert d["method"] == "exact" and len(d["association"]) == 4
    assert d["objective"] == pytest.approx(2 * enumerate_best(np.array(S)), rel=1e-12)
    for bad in ({"sinr": [[1, 2], [3]]}, {"sinr": [[1, -2]]}, {"sinr": [[1.0]], "extra": 1}, {"sinr": [[1], [2]]}):
        f.write_text(json.dumps(bad))
        code, _, err = run_cli(["associate", "--sinr", f], capsys, monkeypatch)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    f.write_bytes(b"\xff\xfe{")
    code, _, err = run_cli(["associate", "--sinr", f], capsys, monkeypatch)
    assert code == 2 and "UTF-8" in err
