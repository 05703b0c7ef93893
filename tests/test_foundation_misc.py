"""Units, randomness, channels, geometry and the solver contract's status rules."""

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from helpers import assert_close
from isac import units
from isac.scenario import channels, geometry
from isac.scenario.instances.crlb_sumrate import small_preset
from isac.scenario.random import complex_normal, make_rng
from isac.solvers.base import OptionError, Solver, Status


def test_unit_conversions_closed_forms():
    assert math.isclose(float(units.dbm_to_watt(30.0)), 1.0)
    assert math.isclose(float(units.dbm_to_watt(0.0)), 1e-3)
    assert math.isclose(float(units.watt_to_dbm(units.dbm_to_watt(-17.3))), -17.3)
    assert math.isclose(float(units.db_to_lin(10.0)), 10.0)
    assert math.isclose(float(units.lin_to_db(units.db_to_lin(8.0))), 8.0)
    assert math.isclose(float(units.dbw_to_watt(-30.0)), 1e-3)
    assert math.isclose(float(units.nats_to_bits(math.log(2.0))), 1.0)
    assert math.isclose(float(units.bits_to_nats(1.0)), math.log(2.0))


def test_rng_is_local_and_deterministic():
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = complex_normal(make_rng(3), (4, 2))
    b = complex_normal(make_rng(3), (4, 2))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])
    with pytest.raises(ValueError):
        make_rng(-1)
    with pytest.raises(ValueError):
        make_rng(1.5)


def test_complex_normal_variance():
    z = complex_normal(make_rng(0), (200_000,), variance=2.0)
    assert abs(float((z.abs() ** 2).mean()) - 2.0) < 0.03
    assert abs(float(z.real.var()) - 1.0) < 0.02


def test_path_loss_and_rician_limits():
    d = torch.tensor([1.0, 10.0], dtype=torch.float64)
    assert_close(channels.path_loss(d, 1e-3, 2.0), torch.tensor([1e-3, 1e-5], dtype=torch.float64), what="path loss")
    los = torch.ones(3, dtype=torch.complex128)
    pure_los = channels.rician(make_rng(0), los, torch.tensor(1e12, dtype=torch.float64), gain=4.0)
    assert_close(pure_los, 2 * los, rtol=1e-5, what="Rician K->inf is LoS")
    with pytest.raises(ValueError):
        channels.path_loss(torch.tensor([0.0], dtype=torch.float64), 1.0, 2.0)


def test_csi_error_relative_variance():
    h = torch.full((1000, 64), 3.0 + 0j, dtype=torch.complex128)
    e = channels.add_csi_error(make_rng(1), h, 0.1) - h
    assert abs(float((e.abs() ** 2).mean()) - 0.9) < 0.02


def test_geometry_angles():
    o = torch.zeros(3, dtype=torch.float64)
    p = torch.tensor([1.0, 1.0, math.sqrt(2.0)], dtype=torch.float64)
    assert math.isclose(float(geometry.distance(o, p)), 2.0)
    assert math.isclose(float(geometry.azimuth(o, p)), math.pi / 4)
    assert math.isclose(float(geometry.elevation(o, p)), math.pi / 4)


@dataclass
class _Liar(Solver):
    """Returns an over-power point and claims convergence."""

    name: ClassVar[str] = "liar"
    problems: ClassVar[tuple[str, ...]] = ("crlb-sumrate",)
    scale: float = 2.0

    def _solve(self, inst):
        W = torch.ones(inst.num_tx, inst.num_streams, dtype=torch.complex128)
        W = W / torch.linalg.matrix_norm(W) * math.sqrt(inst.p_max_w) * self.scale
        return Status.CONVERGED, "done", {"W": W}, [], 1


def test_infeasible_point_is_never_converged():
    r = _Liar().solve(small_preset(0))
    assert r.status is Status.INFEASIBLE and not r.feasible and "infeasible" in r.message
    ok = _Liar(scale=1.0).solve(small_preset(0))
    assert ok.status is Status.CONVERGED and ok.feasible


def test_options_are_typed_and_checked():
    assert _Liar.from_options({"scale": "0.5"}).scale == 0.5
    with pytest.raises(OptionError, match="scale"):
        _Liar.from_options({"scale": "x"})
    with pytest.raises(OptionError, match="nope"):
        _Liar.from_options({"nope": "1"})
