"""The command line: every command end to end, and one-line errors for bad input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from helpers import run_cli


run = run_cli


def test_problems_lists_every_family(capsys, monkeypatch):
    code, out, _ = run(["problems"], capsys, monkeypatch)
    assert code == 0
    assert "crlb-sumrate" in out and "mrt" in out
    code, out, _ = run(["problems", "crlb-sumrate"], capsys, monkeypatch)
    assert code == 0 and "File format" in out and "fang" in out


def test_instance_solve_evaluate_round_trip(tmp_path, capsys, monkeypatch):
    inst = tmp_path / "inst.json"
    res = tmp_path / "res.json"
    assert run(["instance", "crlb-sumrate", "--preset", "small", "--seed", "3", "--out", inst], capsys, monkeypatch)[0] == 0
    code, out, _ = run(["solve", "crlb-sumrate", "--instance", inst, "--solver", "zf",
                        "--option", "comm_power_fraction=0.7", "--out", res], capsys, monkeypatch)
    assert code == 0
    result = json.loads(res.read_text())
    assert result["status"] == "CONVERGED" and "W" in result and result["options"]["comm_power_fraction"] == 0.7
    code, out, _ = run(["evaluate", "crlb-sumrate", "--instance", inst, "--solution", res], capsys, monkeypatch)
    assert code == 0
    metrics = json.loads(out)
    for key in ("sum_rate_nats", "crlb_trace", "objective", "power_w", "feasible"):
        assert key in metrics
    assert metrics == result["metrics"]
    # A solution file with only W gives the same numbers.
    only_w = tmp_path / "w.json"
    only_w.write_text(json.dumps({"W": result["W"]}))
    code, out2, _ = run(["evaluate", "crlb-sumrate", "--instance", inst, "--solution", only_w], capsys, monkeypatch)
    assert code == 0 and json.loads(out2) == metrics


def test_solve_from_preset_is_deterministic(tmp_path, capsys, monkeypatch):
    outs = []
    for name in ("a.json", "b.json"):
        run(["solve", "crlb-sumrate", "--preset", "fang", "--seed", "5", "--solver", "mrt", "--out", tmp_path / name],
            capsys, monkeypatch)
        outs.append(json.loads((tmp_path / name).read_text()))
    assert outs[0]["W"] == outs[1]["W"] and outs[0]["metrics"] == outs[1]["metrics"]


def test_preset_parameters_on_the_command_line(tmp_path, capsys, monkeypatch):
    """-p NAME=VALUE reaches the preset: the file equals make_preset with the same keywords."""
    from isac.scenario.problems import load_instance, make_preset

    path = tmp_path / "d.json"
    code, _, err = run(["instance", "beampattern-sinr", "--preset", "zhao-dynamic", "--seed", "9", "-p", "slot=3",
                        "-p", "sinr_db=6.5", "--out", path], capsys, monkeypatch)
    assert code == 0, err
    inst = load_instance(path, "beampattern-sinr")
    ref = make_preset("beampattern-sinr", "zhao-dynamic", 9, slot=3, sinr_db=6.5)
    assert inst.sinr_db == 6.5 and np.array_equal(inst.H.numpy(), ref.H.numpy())
    code, out, _ = run(["solve", "beampattern-sinr", "--preset", "zhao-dynamic", "--seed", "9", "-p", "slot=3",
                        "-p", "sinr_db=6.5", "--solver", "zf", "--out", tmp_path / "r.json"], capsys, monkeypatch)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and saved["preset_params"] == {"slot": 3, "sinr_db": 6.5}
    code, _, err = run(["solve", "beampattern-sinr", "--instance", path, "-p", "slot=1"], capsys, monkeypatch)
    assert code == 2 and "needs --preset" in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["solve", "nope", "--preset", "x"], "nope"),
        (["solve", "crlb-sumrate", "--preset", "nope"], "nope"),
        (["solve", "crlb-sumrate", "--preset", "small", "--solver", "nope"], "nope"),
        (["solve", "crlb-sumrate", "--preset", "small", "--solver", "mrt", "--option", "bogus=1"], "bogus"),
        (["solve", "crlb-sumrate", "--preset", "small", "--solver", "mrt", "--option", "comm_power_fraction=abc"],
         "comm_power_fraction"),
        (["solve", "crlb-sumrate", "--preset", "small", "--solver", "mrt", "--option", "comm_power_fraction=2"],
         "comm_power_fraction"),
        (["solve", "crlb-sumrate", "--instance", "/does/not/exist.json"], "exist"),
        (["solve", "crlb-sumrate", "--preset", "small", "--seed", "-1"], "seed"),
        (["solve", "crlb-sumrate", "--preset", "small", "-p", "bogus=1"], "bogus"),
        (["solve", "crlb-sumrate", "--preset", "small", "-p", "noequals"], "name=value"),
        (["solve", "beampattern-sinr", "--preset", "zhao-dynamic", "-p", "slot=x"], "slot"),
        (["instance", "beampattern-sinr", "--preset", "zhao-dynamic", "-p", "slot=-2", "--out", "/tmp/never.json"],
         "slot"),
    ],
)
def test_user_errors_are_one_line(args, needle, capsys, monkeypatch):
    code, _, err = run(args, capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_malformed_files_are_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(["evaluate", "crlb-sumrate", "--instance", bad, "--solution", bad], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    inst = tmp_path / "i.json"
    run(["instance", "crlb-sumrate", "--preset", "small", "--out", inst], capsys, monkeypatch)
    sol = tmp_path / "s.json"
    sol.write_text(json.dumps({"W": {"re": [[1.0, 0.0]], "im": [[0.0, 0.0]]}}))
    code, _, err = run(["evaluate", "crlb-sumrate", "--instance", inst, "--solution", sol], capsys, monkeypatch)
    assert code == 2 and "W" in err and len(err.strip().splitlines()) == 1
    sol.write_text(json.dumps({"W": {"re": np.full((4, 4), np.nan).tolist(), "im": np.zeros((4, 4)).tolist()}}))
    code, _, err = run(["evaluate", "crlb-sumrate", "--instance", inst, "--solution", sol], capsys, monkeypatch)
    assert code == 2 and "W" in err


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "isac.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("problems", "instance", "solve", "evaluate", "demo"):
        assert cmd in out


def test_demo_quick_runs_every_family(tmp_path, capsys, monkeypatch):
    """`isac demo --quick`: one proposed method and one baseline per family, one table, five pictures."""
    import matplotlib.image

    d = tmp_path / "d"
    code, out, _ = run(["demo", "--out", d, "--quick"], capsys, monkeypatch)
    assert code == 0
    # strict JSON: a NaN or Infinity anywhere would fail to parse
    results = json.loads((d / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    rows = results["rows"]
    got = {(r["paper"], r["family"], r["solver"], r["role"], tuple(sorted(r["options"].items()))) for r in rows}
    assert got == {
        ("003", "crlb-sumrate", "sca", "proposed", ()), ("003", "crlb-sumrate", "zf", "baseline", ()),
        ("004", "beampattern-sinr", "gnn-ip", "proposed", (("model", "gnn"),)),
        ("004", "beampattern-sinr", "sdr", "baseline", ()),
        ("000", "multibs-association", "ao", "optimal UA", (("association", "exact"),)),
        ("000", "multibs-association", "ao", "baseline", (("association", "gale-shapley"),)),
        ("001", "bs-selection", "penalty-sdr", "proposed", ()), ("001", "bs-selection", "scheme1", "baseline", ()),
        ("002", "coop-localization", "lhgnn", "proposed", ()), ("002", "coop-localization", "pdpg", "baseline", ()),
    }
    for r in rows:
        assert r["status"] in ("CONVERGED", "MAX_ITERATIONS") and r["feasible"], r
        assert math.isfinite(r["value"]) and math.isfinite(r["time_s"]) and r["time_s"] >= 0, r
        assert "[" in r["metric_label"] and r["goal"] in ("max", "min")  # a metric names its unit
    table = [line for line in out.splitlines() if line.startswith(("003 ", "004 ", "000 ", "001 ", "002 "))
             and ("yes" in line.split() or "no" in line.split())]
    assert len(table) == len(rows) == 10
    index = (d / "index.md").read_text()
    assert len(results["figures"]) == 5
    for fig in results["figures"].values():
        png = d / fig
        assert png.stat().st_size > 20_000, fig
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500 and pixels[..., :3].std() > 0.05, fig  # not blank
        assert f"]({fig})" in index
    for r in rows:
        assert f"| {r['method']} |" in index
