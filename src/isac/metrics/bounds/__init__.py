"""Each paper's sensing bound, built on :mod:`isac.metrics.fim`.

* :mod:`.fang` - 003, angle + RCS CRLB of M targets, tr(F^-1) over 4M parameters.
"""
