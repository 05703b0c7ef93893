"""Experiments: declarative sweeps, runner, result store, plots (grows with issue 3)."""
