"""004 plumbing: `isac train`, the models a reproduction needs, and the bundled zhao specs."""

import os

import pytest

from helpers import run_cli
from isac.experiments import models, reproduce
from isac.learning.train import read_checkpoint


def test_zhao_specs_are_valid_and_name_the_models_they_need():
    for mode in ("quick", "full"):
        assert len(reproduce.paper_specs("zhao", mode)) == 5
    specs = [s for s, _ in reproduce.paper_specs("zhao", "quick")]
    needs = models.required_models(specs)
    got = {(n.kind, n.num_users, n.sinr_db) for n in needs}
    # sinr sweep (L = 2 at 4, 8, 10 dB), users sweep (8 dB at L = 2, 3, 4), for the GNN, the GNN-FL (what
    # gnn-ip runs by default) and the DNN; the scaled GNN-IP asks for the L = 2 model only, already in the set.
    kinds = ("gnn", "gnn-fl", "dnn")
    want = {(k, 2, g) for k in kinds for g in (4.0, 8.0, 10.0)} | {(k, L, 8.0) for k in kinds for L in (3, 4)}
    assert got == want
    assert all(n.num_antennas == 10 and n.num_targets == 3 for n in needs)
    # every zhao spec runs on a fixed target set: Fig. 6's, or Fig. 7's for the other figures and tables
    sets = {n.target_angles_deg for n in needs}
    assert sets == {(-40.0, 0.0, 40.0), (-40.0, 15.0, 30.0)}
    assert {(n.kind, n.num_users, n.sinr_db) for n in needs if n.target_angles_deg[1] == 0.0} == {
        ("gnn-fl", 2, 8.0), ("dnn", 2, 8.0)}  # fig. 6 runs gnn-ip (-> GNN-FL) and the DNN


def test_ensure_models_trains_once_and_publishes_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "QUICK_TRAINING", {"epochs": 1, "n_train": 40, "n_val": 20, "n_test": 0})
    monkeypatch.setenv(models.MODEL_DIR_ENV, "")
    need = models.ModelNeed("gnn", 4, 2, 1, 5.0)
    (path,) = models.ensure_models([need], tmp_path / "m", "quick", echo=lambda _m: None)
    cfg = read_checkpoint(path)["config_obj"]
    assert (cfg.kind, cfg.num_antennas, cfg.num_users, cfg.sinr_db, cfg.epochs) == ("gnn", 4, 2, 5.0, 1)
    stamp = path.stat().st_mtime_ns
    lines = []
    models.ensure_models([need], tmp_path / "m", "quick", echo=lines.append)
    assert path.stat().st_mtime_ns == stamp and lines == []  # same config: reused, not retrained
    models.use_model_dir(tmp_path / "m")
    assert os.environ[models.MODEL_DIR_ENV].split(os.pathsep)[0] == str((tmp_path / "m").resolve())


def test_parallel_training_gives_the_same_weights_as_sequential(tmp_path, monkeypatch):
    """ensure_models(workers=2) trains in spawned processes; one thread per model makes it bit-identical."""
    import torch

    tiny = {"epochs": 1, "n_train": 30, "n_val": 10, "n_test": 0}
    monkeypatch.setattr(models, "QUICK_TRAINING", tiny)
    needs = [models.ModelNeed("gnn", 4, 2, 1, 5.0), models.ModelNeed("dnn", 4, 2, 1, 6.0)]
    seq = models.ensure_models(needs, tmp_path / "a", "quick", echo=lambda _m: None)
    lines = []
    par = models.ensure_models(needs, tmp_path / "b", "quick", workers=2, echo=lines.append)
    assert lines[0] == "training 2 models in 2 processes" and len(lines) == 3
    for a, b in zip(seq, par):
        ca, cb = read_checkpoint(a), read_checkpoint(b)
        assert ca["config_obj"] == cb["config_obj"] and ca["config_obj"].threads == 1
        for k, v in ca["state_dict"].items():
            assert torch.equal(v, cb["state_dict"][k]), k


def test_cli_train_writes_a_checkpoint_with_its_config(tmp_path, capsys, monkeypatch):
    out = tmp_path / "g.pt"
    code, _, err = run_cli(["train", "zhao-gnn", "--quick", "--epochs", "1", "--samples", "40", "--users", "3",
                            "--sinr-db", "6", "--antennas", "4", "--targets", "1", "--out", out], capsys, monkeypatch)
    assert code == 0, err
    cfg = read_checkpoint(out)["config_obj"]
    assert (cfg.num_users, cfg.sinr_db, cfg.num_antennas, cfg.n_train, cfg.epochs) == (3, 6.0, 4, 40, 1)
    code, _, err = run_cli(["train", "zhao-cnn", "--quick"], capsys, monkeypatch)
    assert code == 2 and "unknown training target" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", "zhao-gnn", "--quick", "--users", "0"], capsys, monkeypatch)
    assert code == 2 and "num_users" in err
    # the solvers find it by its stored config (M, L, Gamma0), whatever the file name
    from isac.scenario.instances.beampattern_sinr import make_small
    from isac.solvers.registry import get_solver
    res = get_solver("beampattern-sinr", "gnn", {"models": str(tmp_path)}).solve(make_small(0, num_users=3, sinr_db=6))
    assert res.solution["C"].shape == (4, 3) and res.metrics["power_w"] == pytest.approx(1.0)

@pytest.mark.parametrize("solver", ["gnn", "gnn-ip"])
def test_model_lookup_error_names_the_training_command(solver, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(models.MODEL_DIR_ENV, "")
    code, _, err = run_cli(["solve", "beampattern-sinr", "--preset", "zhao", "--solver", solver, "--option",
                            f"models={tmp_path}"], capsys, monkeypatch)
    assert code == 2 and "isac train zhao-gnn" in err and len(err.strip().splitlines()) == 1


def test_fixed_target_presets_need_fixed_target_models(tmp_path, capsys, monkeypatch):
    from isac.experiments.spec import parse_spec as load_spec_text

    spec = load_spec_text("""
name = "fixed"
problem = "beampattern-sinr"
preset = "zhao-fixed-b"
trials = 1
seed = 0
metrics = ["beampattern_mse"]
[[solvers]]
name = "gnn-ip"
[[solvers]]
name = "sdr"
""")
    (need,) = models.required_models([spec])
    assert need.target_angles_deg == (-40.0, 15.0, 30.0) and need.kind == "gnn-fl"
    assert need.file_name() == "zhao-gnn-fl-M10-L2-K3-8dB-T-40_15_30.pt"
    random = load_spec_text(spec_text_for("zhao"))
    assert models.required_models([random])[0].target_angles_deg == ()
    out = tmp_path / "f.pt"
    code, _, err = run_cli(["train", "zhao-gnn", "--quick", "--epochs", "1", "--samples", "40", "--antennas", "4",
                            "--target-angles", "-40, 15,30", "--out", out], capsys, monkeypatch)
    assert code == 0, err
    cfg = read_checkpoint(out)["config_obj"]
    assert cfg.target_angles_deg == [-40.0, 15.0, 30.0] and cfg.num_targets == 3
    for bad, why in (("-40,x", "--target-angles"), ("-40,95", "target_angles_deg")):
        code, _, err = run_cli(["train", "zhao-gnn", "--quick", "--target-angles", bad], capsys, monkeypatch)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1


def spec_text_for(preset):
    return f"""
name = "random"
problem = "beampattern-sinr"
preset = "{preset}"
trials = 1
seed = 0
metrics = ["beampattern_mse"]
[[solvers]]
name = "gnn"
"""
