"""Performance metrics: one implementation of every figure of merit.

* :mod:`isac.metrics.fim` - the Fisher-information engine behind every CRB/SPEB.
* :mod:`isac.metrics.comm` - SINR and rates.
* :mod:`isac.metrics.bounds` - each paper's sensing bound as an instance of the engine.
* :mod:`isac.metrics.evaluate` - per-problem evaluation and feasibility checks.
"""
