"""``isac --version`` and ``isac doctor`` (what a bug report needs)."""

from __future__ import annotations

import importlib.metadata as md

import torch

from isac import __version__
from helpers import run_cli


def test_version_flag_and_command_agree_with_the_installed_metadata(capsys, monkeypatch):
    code, out, err = run_cli(["--version"], capsys, monkeypatch)
    assert (code, out.strip(), err) == (0, __version__, "")
    assert run_cli(["version"], capsys, monkeypatch)[1].strip() == __version__ == md.version("isac")


def test_doctor_reports_versions_threads_cuda_and_model_folders(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ISAC_MODEL_DIR", str(tmp_path))
    (tmp_path / "x.pt").write_bytes(b"")
    code, out, err = run_cli(["doctor"], capsys, monkeypatch)
    assert code == 0 and err == ""
    rows = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip() for line in out.splitlines()}
    assert rows["torch"].startswith(torch.__version__) and f"CUDA available: {torch.cuda.is_available()}" in rows["torch"]
    for dist in ("numpy", "cvxpy", "scs", "clarabel", "numba"):
        assert rows[dist] == md.version(dist)
    assert "SCS" in rows["cvxpy solvers"] and "CLARABEL" in rows["cvxpy solvers"]
    assert f"intra-op {torch.get_num_threads()}" in rows["threads"]
    assert f"{tmp_path} (1 checkpoints)" in rows["models looked up in"] and "weights" in rows["models looked up in"]
