"""Registry of problem families: names users recognise, instance types, presets.

A family module (in :mod:`isac.scenario.instances`) defines its instance type
and calls :func:`register_family` on import. Solvers register separately in
:mod:`isac.solvers.registry`; metrics in :mod:`isac.metrics.evaluate`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from isac.scenario.io import InstanceError, read_json, write_json


class Instance(Protocol):
    """What every instance type provides."""

    problem: str

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Instance: ...


@dataclass(frozen=True)
class ProblemFamily:
    """One problem family.

    Attributes:
        name: CLI name, e.g. ``"crlb-sumrate"``.
        paper: paper id and key, e.g. ``"003 (fang)"``.
        summary: one line.
        instance_type: class with ``from_dict``/``to_dict``.
        presets: name -> ``f(seed) -> instance``.
        decode_solution: ``(obj, instance) -> dict[str, Tensor]`` (validates shapes).
        encode_solution: ``dict[str, Tensor] -> JSON object``.
        format_doc: the file format, shown by ``isac problems``.
    """

    name: str
    paper: str
    summary: str
    instance_type: type
    presets: Mapping[str, Callable[[int], Any]]
    decode_solution: Callable[[Mapping[str, Any], Any], dict[str, torch.Tensor]]
    encode_solution: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]
    format_doc: str = ""
    preset_docs: Mapping[str, str] = field(default_factory=dict)


_FAMILIES: dict[str, ProblemFamily] = {}

# Modules that define families; imported on first use to keep start-up light.
_FAMILY_MODULES = (
    "isac.scenario.instances.crlb_sumrate",
    "isac.scenario.instances.beampattern_sinr",
    "isac.scenario.instances.multibs_association",
    "isac.scenario.instances.bs_selection",
    "isac.scenario.instances.coop_localization",
)


def register_family(family: ProblemFamily) -> ProblemFamily:
    _FAMILIES[family.name] = family
    return family


def _load_all() -> None:
    for m in _FAMILY_MODULES:
        importlib.import_module(m)


def families() -> dict[str, ProblemFamily]:
    """All registered families, by name."""
    _load_all()
    return dict(_FAMILIES)


def get_family(name: str) -> ProblemFamily:
    fams = families()
    if name not in fams:
        raise InstanceError(f"unknown problem {name!r} (known: {', '.join(sorted(fams))})")
    return fams[name]


def preset_parameters(problem: str, preset: str) -> dict[str, Any]:
    """Keyword parameters a preset accepts (name -> default), e.g. ``{"p_max_dbm": 10.0, ...}``."""
    fam = get_family(problem)
    if preset not in fam.presets:
        raise InstanceError(f"unknown preset {preset!r} for {problem} (known: {', '.join(sorted(fam.presets))})")
    fn = fam.presets[preset]
    # A thin wrapper (``def fixed(seed, **kw): return base(seed, targets=..., **kw)``) declares
    # ``fn.forwards_to = base``: it accepts the base preset's parameters too.
    out = _keyword_parameters(fn.forwards_to) if hasattr(fn, "forwards_to") else {}
    out.update(_keyword_parameters(fn))
    return out


def _keyword_parameters(fn) -> dict[str, Any]:
    return {
        n: (None if p.default is inspect.Parameter.empty else p.default)
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def make_preset(problem: str, preset: str, seed: int, **overrides: Any):
    """Draw an instance of ``problem`` from ``preset`` with ``seed``.

    ``overrides`` are the preset's keyword parameters (see :func:`preset_parameters`),
    e.g. ``make_preset("crlb-sumrate", "fang", 0, p_max_dbm=20.0)``.
    """
    fam = get_family(problem)
    accepted = preset_parameters(problem, preset)
    open_ended = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fam.presets[preset]).parameters.values()
    )
    for key in overrides:
        if key not in accepted and not open_ended:
            raise InstanceError(
                f"preset {preset!r} of {problem} has no parameter {key!r} "
                f"(parameters: {', '.join(sorted(accepted)) or 'none'})"
            )
    try:
        return fam.presets[preset](seed, **overrides)
    except (TypeError, ValueError) as e:
        if isinstance(e, InstanceError):
            raise
        raise InstanceError(f"preset {preset!r} of {problem}: {str(e).splitlines()[0]}") from None


def instance_from_dict(obj: Mapping[str, Any], problem: str | None = None):
    """Parse an instance object; its ``problem`` key must match ``problem`` when given."""
    p = obj.get("problem") if isinstance(obj, Mapping) else None
    if not isinstance(p, str):
        raise InstanceError('problem: missing or not a string (e.g. "problem": "crlb-sumrate")')
    if problem is not None and p != problem:
        raise InstanceError(f"problem: file is a {p!r} instance, expected {problem!r}")
    return get_family(p).instance_type.from_dict(obj)


def load_instance(path: str | Path, problem: str | None = None):
    return instance_from_dict(read_json(path, "instance file"), problem)


def save_instance(path: str | Path, instance) -> None:
    write_json(path, instance.to_dict())


def load_solution(path: str | Path, instance) -> dict[str, torch.Tensor]:
    obj = read_json(path, "solution file")
    return get_family(instance.problem).decode_solution(obj, instance)
