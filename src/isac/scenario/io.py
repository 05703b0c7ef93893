r"""JSON instance and solution files.

Conventions (every problem family):

* complex arrays are ``{"re": [...], "im": [...]}``, real arrays plain nested
  lists, both row-major (``H[i][j]`` is row i, column j);
* unknown keys, missing keys, wrong shapes, NaN/Inf and out-of-range values are
  refused with an :class:`InstanceError` whose one-line message names the key,
  e.g. ``params.p_max_dbm: must be finite, got nan``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


class InstanceError(ValueError):
    """A malformed instance or solution; the message is one line and names the key."""


def encode_real(t) -> Any:
    """Tensor/array -> nested lists of floats."""
    return np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64).tolist()


def encode_complex(t) -> dict[str, Any]:
    """Complex tensor -> ``{"re": [...], "im": [...]}``."""
    a = np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.complex128)
    return {"re": a.real.tolist(), "im": a.imag.tolist()}


def read_json(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Load a JSON object; missing files and syntax errors become one-line InstanceErrors."""
    p = Path(path)
    if not p.is_file():
        raise InstanceError(f"{what} {str(p)!r}: no such file")
    try:
        obj = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise InstanceError(f"{what} {str(p)!r}: not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise InstanceError(f"{what} {str(p)!r}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise InstanceError(f"{what} {str(p)!r}: top level must be a JSON object")
    return obj


def write_json(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, allow_nan=False, indent=None, separators=(",", ":")) + "\n")
    tmp.replace(p)


def _shape_str(shape: Iterable[int | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def _to_array(value: Any, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InstanceError(f"{key}: expected a (nested) list of numbers with a regular shape") from None
    return arr


class Fields:
    """Reads one JSON object, naming each key in its errors.

    Use :meth:`check_keys` once, then the typed getters.
    """

    def __init__(self, obj: Any, prefix: str = "") -> None:
        if not isinstance(obj, Mapping):
            raise InstanceError(f"{prefix.rstrip('.') or 'file'}: expected a JSON object")
        self.obj = obj
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def check_keys(self, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        required, optional = list(required), list(optional)
        allowed = set(required) | set(optional)
        for k in self.obj:
            if k not in allowed:
                raise InstanceError(f"{self.key(k)}: unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in self.obj:
                raise InstanceError(f"{self.key(k)}: missing required key")

    def has(self, name: str) -> bool:
        return name in self.obj and self.obj[name] is not None

    def sub(self, name: str) -> Fields:
        return Fields(self.obj[name], prefix=f"{self.key(name)}.")

    def string(self, name: str, choices: Iterable[str] | None = None) -> str:
        v = self.obj[name]
        if not isinstance(v, str):
            raise InstanceError(f"{self.key(name)}: expected a string, got {type(v).__name__}")
        if choices is not None and v not in set(choices):
            raise InstanceError(f"{self.key(name)}: must be one of {', '.join(sorted(choices))}, got {v!r}")
        return v

    def number(
        self,
        name: str,
        *,
        minimum: float | None = None,
        exclusive_minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        v = self.obj[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InstanceError(f"{self.key(name)}: expected a number, got {json.dumps(v)[:40]}")
        v = float(v)
        if not math.isfinite(v):
            raise InstanceError(f"{self.key(name)}: must be finite, got {v}")
        if minimum is not None and v < minimum:
            raise InstanceError(f"{self.key(name)}: must be >= {minimum:g}, got {v:g}")
        if exclusive_minimum is not None and v <= exclusive_minimum:
            raise InstanceError(f"{self.key(name)}: must be > {exclusive_minimum:g}, got {v:g}")
        if maximum is not None and v > maximum:
            raise InstanceError(f"{self.key(name)}: must be <= {maximum:g}, got {v:g}")
        return v

    def integer(self, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        v = self.obj[name]
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            raise InstanceError(f"{self.key(name)}: expected an integer, got {json.dumps(v)[:40]}")
        v = int(v)
        if minimum is not None and v < minimum:
            raise InstanceError(f"{self.key(name)}: must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise InstanceError(f"{self.key(name)}: must be <= {maximum}, got {v}")
        return v

    def int_list(self, name: str, length: int, *, minimum: int = 1) -> tuple[int, ...]:
        v = self.obj[name]
        if not isinstance(v, list) or len(v) != length:
            raise InstanceError(f"{self.key(name)}: expected a list of {length} integers")
        out = []
        for i, x in enumerate(v):
            if isinstance(x, bool) or not (isinstance(x, int) or (isinstance(x, float) and x.is_integer())):
                raise InstanceError(f"{self.key(name)}[{i}]: expected an integer, got {json.dumps(x)[:40]}")
            if int(x) < minimum:
                raise InstanceError(f"{self.key(name)}[{i}]: must be >= {minimum}, got {int(x)}")
            out.append(int(x))
        return tuple(out)

    def _check_shape(self, name: str, arr: np.ndarray, shape: Iterable[int | None] | None) -> None:
        if shape is None:
            return
        shape = tuple(shape)
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise InstanceError(
                f"{self.key(name)}: expected shape {_shape_str(shape)}, got {_shape_str(arr.shape)}"
            )

    def real_array(
        self, name: str, shape: Iterable[int | None] | None = None, *, minimum: float | None = None
    ) -> torch.Tensor:
        arr = _to_array(self.obj[name], self.key(name))
        self._check_shape(name, arr, shape)
        if not np.isfinite(arr).all():
            raise InstanceError(f"{self.key(name)}: contains NaN or Inf")
        if minimum is not None and arr.size and arr.min() < minimum:
            raise InstanceError(f"{self.key(name)}: values must be >= {minimum:g}, got {arr.min():g}")
        return torch.as_tensor(arr, dtype=torch.float64)

    def complex_array(self, name: str, shape: Iterable[int | None] | None = None) -> torch.Tensor:
        v = self.obj[name]
        if not isinstance(v, Mapping) or set(v) != {"re", "im"}:
            raise InstanceError(f'{self.key(name)}: expected a complex array {{"re": [...], "im": [...]}}')
        re = _to_array(v["re"], self.key(name) + ".re")
        im = _to_array(v["im"], self.key(name) + ".im")
        if re.shape != im.shape:
            raise InstanceError(
                f"{self.key(name)}: re has shape {_shape_str(re.shape)} but im has {_shape_str(im.shape)}"
            )
        self._check_shape(name, re, shape)
        if not (np.isfinite(re).all() and np.isfinite(im).all()):
            raise InstanceError(f"{self.key(name)}: contains NaN or Inf")
        return torch.as_tensor(re + 1j * im, dtype=torch.complex128)


# Keys a result file written by ``isac solve`` carries besides the solution
# itself, so that a result file can be handed to ``isac evaluate`` directly.
RESULT_FILE_KEYS = (
    "problem", "solver", "status", "message", "metrics", "iterations", "time_s",
    "timings", "trace", "options", "seed", "info", "instance", "preset", "isac_version",
)
