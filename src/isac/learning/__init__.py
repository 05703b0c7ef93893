"""Learned beamformers (depends only on :mod:`isac.scenario` and :mod:`isac.metrics`).

:mod:`isac.learning.zhao`: the GNN module and DNN benchmark of 004 (Zhao et al.), their
features and the loss of eq. (25). :mod:`isac.learning.train`: data, training loop and
checkpoints. Shipped checkpoints live in ``isac/learning/weights/``.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped checkpoints."""
