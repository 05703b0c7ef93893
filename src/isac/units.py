"""Unit conversions. Power is watts inside the library; dB/dBm only at the edges.

All functions accept Python floats, NumPy arrays or torch tensors and return
the same kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LN2 = math.log(2.0)


def _log10(x):
    if isinstance(x, torch.Tensor):
        return torch.log10(x)
    if isinstance(x, np.ndarray):
        return np.log10(x)
    return math.log10(x)


def db_to_lin(x_db):
    """Power ratio in dB -> linear: ``10**(x/10)``."""
    return 10.0 ** (x_db / 10.0)


def lin_to_db(x):
    """Linear power ratio -> dB: ``10 log10(x)``."""
    return 10.0 * _log10(x)


def dbm_to_watt(p_dbm):
    """Power in dBm -> watts: ``10**((p-30)/10)``."""
    return 10.0 ** ((p_dbm - 30.0) / 10.0)


def watt_to_dbm(p_w):
    """Power in watts -> dBm."""
    return 10.0 * _log10(p_w) + 30.0


def dbw_to_watt(p_dbw):
    """Power in dBW -> watts."""
    return 10.0 ** (p_dbw / 10.0)


def watt_to_dbw(p_w):
    """Power in watts -> dBW."""
    return 10.0 * _log10(p_w)


def nats_to_bits(x_nats):
    """Information in nats -> bits (divide by ln 2)."""
    return x_nats / LN2


def bits_to_nats(x_bits):
    """Information in bits -> nats (multiply by ln 2)."""
    return x_bits * LN2
