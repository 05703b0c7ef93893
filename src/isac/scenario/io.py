r"""JSON instance and solution files.

Conventions (every problem family):

* complex arrays are ``{"re": [...], "im": [...]}``, real arrays plain nested
  lists, both row-major (``H[i][j]`` is row i, column j);
* unknown keys, missing keys, wrong types, wrong shapes, NaN/Inf and out-of-range values are
  refused with an :class:`InstanceError` whose one-line message names the key,
  e.g. ``params.p_max_dbm: must be finite, got nan``;
* finite numbers whose squares and products would overflow float64 in the metrics are
  refused the same way, by magnitude bounds every family shares: :data:`MAX_MAGNITUDE`
  for any real number or complex entry, :data:`MIN_POSITIVE` for strictly positive
  scales, :data:`MAX_DECIBELS` for levels in dB or dBm, :data:`MAX_INTEGER` for integers
  and :data:`MAX_SIZE` for declared sizes (antennas, streams) that no array in the file
  bounds.
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


MAX_MAGNITUDE = 1e100
"""Largest ``|x|`` accepted for a real number or for the real and imaginary parts of a complex entry.

Physical inputs stay far below it (frequencies ~1e11 Hz); at 1e100, squares (1e200) and their
products with powers, snapshot counts and inverse noise powers (bounded below) stay finite in
float64, where a channel entry of 1e155 would already make ``|h|^2 / noise`` infinite."""

MIN_POSITIVE = 1e-100
"""Smallest value accepted where a number must be > 0 (powers, noise powers, bandwidths, thresholds):
its reciprocal and the ratios it divides stay finite."""

MAX_DECIBELS = 300.0
"""Levels in dB or dBm must lie in ``[-MAX_DECIBELS, MAX_DECIBELS]``: ``10**(x/10)`` then stays in
``[1e-30, 1e30]`` (``1e-33`` to ``1e27`` W for dBm), while 1e5 dBm would overflow to inf W."""

MAX_INTEGER = 2**31 - 1
"""Largest integer accepted (snapshot counts and the like)."""

MAX_SIZE = 100_000
"""Largest size a file may declare where no array in it has that size (streams, receive-array
elements): larger ones would be allocated, not read."""


def encode_real(t) -> Any:
    """Tensor/array -> nested lists of floats."""
    return np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64).tolist()


def encode_complex(t) -> dict[str, Any]:
    """Complex tensor -> ``{"re": [...], "im": [...]}``."""
    a = np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.complex128)
    return {"re": a.real.tolist(), "im": a.imag.tolist()}


def read_json(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Load a JSON object; missing files and syntax errors become one-line InstanceErrors.

    ``NaN`` and ``Infinity`` (which Python's json writes) parse here and are refused by the
    typed getters of :class:`Fields`, naming the key."""
    p = Path(path)
    if not p.is_file():
        raise InstanceError(f"{what} {str(p)!r}: no such file")
    try:
        obj = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InstanceError(f"{what} {str(p)!r}: not a UTF-8 text file (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InstanceError(f"{what} {str(p)!r}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InstanceError(f"{what} {str(p)!r}: cannot be read ({e.strerror or type(e).__name__})") from None
    except (ValueError, RecursionError) as e:  # integers over Python's digit limit, absurd nesting
        raise InstanceError(f"{what} {str(p)!r}: invalid JSON ({str(e).splitlines()[0][:80]})") from None
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


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _describe(v: Any) -> str:
    """A short rendering of a JSON value for error messages."""
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _to_array(value: Any, key: str) -> np.ndarray:
    """Nested lists of numbers -> float64 array; strings, booleans and nulls are refused, not converted."""
    if not (isinstance(value, list) or _is_number(value)):
        raise InstanceError(f"{key}: expected a (nested) list of numbers, got {_describe(value)}")
    stack = [value]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif not _is_number(x):
            raise InstanceError(f"{key}: expected a (nested) list of numbers, found {_describe(x)}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InstanceError(f"{key}: expected a (nested) list of numbers with a regular shape") from None
    return arr


def _check_magnitude(arr: np.ndarray, key: str) -> None:
    """Finite entries of magnitude at most :data:`MAX_MAGNITUDE` (squares and products stay finite)."""
    if not np.isfinite(arr).all():
        raise InstanceError(f"{key}: contains NaN or Inf")
    if arr.size:
        big = float(np.abs(arr).max())
        if big > MAX_MAGNITUDE:
            raise InstanceError(f"{key}: entries must have magnitude <= {MAX_MAGNITUDE:g}, got {big:g}")


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
        decibels: bool = False,
    ) -> float:
        """A finite number of magnitude <= :data:`MAX_MAGNITUDE`.

        ``exclusive_minimum=0`` (a strictly positive scale) also requires >= :data:`MIN_POSITIVE`;
        ``decibels=True`` (a level in dB or dBm) requires ``|x| <=`` :data:`MAX_DECIBELS`.
        """
        v = self.obj[name]
        if not _is_number(v):
            raise InstanceError(f"{self.key(name)}: expected a number, got {_describe(v)}")
        try:
            v = float(v)
        except OverflowError:  # an integer with hundreds of digits
            raise InstanceError(f"{self.key(name)}: must have magnitude <= {MAX_MAGNITUDE:g}") from None
        if not math.isfinite(v):
            raise InstanceError(f"{self.key(name)}: must be finite, got {v}")
        if abs(v) > MAX_MAGNITUDE:
            raise InstanceError(f"{self.key(name)}: must have magnitude <= {MAX_MAGNITUDE:g}, got {v:g}")
        if decibels and abs(v) > MAX_DECIBELS:
            raise InstanceError(f"{self.key(name)}: a level in dB must lie in [{-MAX_DECIBELS:g}, {MAX_DECIBELS:g}], "
                                f"got {v:g}")
        if minimum is not None and v < minimum:
            raise InstanceError(f"{self.key(name)}: must be >= {minimum:g}, got {v:g}")
        if exclusive_minimum is not None and v <= exclusive_minimum:
            raise InstanceError(f"{self.key(name)}: must be > {exclusive_minimum:g}, got {v:g}")
        if exclusive_minimum == 0 and v < MIN_POSITIVE:
            raise InstanceError(f"{self.key(name)}: must be >= {MIN_POSITIVE:g} (its reciprocal must stay finite), "
                                f"got {v:g}")
        if maximum is not None and v > maximum:
            raise InstanceError(f"{self.key(name)}: must be <= {maximum:g}, got {v:g}")
        return v

    def integer(self, name: str, *, minimum: int | None = None, maximum: int | None = MAX_INTEGER) -> int:
        """An integer (``3`` or ``3.0``) in ``[minimum, maximum]`` (default maximum :data:`MAX_INTEGER`)."""
        v = self.obj[name]
        if not _is_number(v) or not (isinstance(v, int) or (math.isfinite(v) and v.is_integer())):
            raise InstanceError(f"{self.key(name)}: expected an integer, got {_describe(v)}")
        v = int(v)
        if minimum is not None and v < minimum:
            raise InstanceError(f"{self.key(name)}: must be >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise InstanceError(f"{self.key(name)}: must be <= {maximum}, got {v:.6g}")
        return v

    def int_list(self, name: str, length: int, *, minimum: int = 1, maximum: int = MAX_SIZE) -> tuple[int, ...]:
        """A list of ``length`` integers in ``[minimum, maximum]`` (default maximum :data:`MAX_SIZE`)."""
        v = self.obj[name]
        if not isinstance(v, list) or len(v) != length:
            raise InstanceError(f"{self.key(name)}: expected a list of {length} integers, got {_describe(v)}")
        out = []
        for i, x in enumerate(v):
            if not _is_number(x) or not (isinstance(x, int) or (math.isfinite(x) and x.is_integer())):
                raise InstanceError(f"{self.key(name)}[{i}]: expected an integer, got {_describe(x)}")
            if int(x) < minimum:
                raise InstanceError(f"{self.key(name)}[{i}]: must be >= {minimum}, got {int(x)}")
            if int(x) > maximum:
                raise InstanceError(f"{self.key(name)}[{i}]: must be <= {maximum}, got {int(x):.6g}")
            out.append(int(x))
        return tuple(out)

    def _check_shape(self, name: str, arr: np.ndarray, shape: Iterable[int | None] | None, sizes_from: str = "") -> None:
        if shape is None:
            return
        shape = tuple(shape)
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            where = f" (sizes from {sizes_from})" if sizes_from else ""
            raise InstanceError(
                f"{self.key(name)}: expected shape {_shape_str(shape)}{where}, got {_shape_str(arr.shape)}"
            )

    def real_array(
        self, name: str, shape: Iterable[int | None] | None = None, *, minimum: float | None = None,
        decibels: bool = False, sizes_from: str = "",
    ) -> torch.Tensor:
        """Nested lists of finite numbers of magnitude <= :data:`MAX_MAGNITUDE` (``decibels=True``:
        <= :data:`MAX_DECIBELS`) with the given shape (``None`` entries: any size).

        ``sizes_from`` names the keys the expected sizes come from, for the shape error."""
        arr = _to_array(self.obj[name], self.key(name))
        self._check_shape(name, arr, shape, sizes_from)
        _check_magnitude(arr, self.key(name))
        if decibels and arr.size and np.abs(arr).max() > MAX_DECIBELS:
            raise InstanceError(f"{self.key(name)}: levels in dB must lie in [{-MAX_DECIBELS:g}, {MAX_DECIBELS:g}], "
                                f"got {np.abs(arr).max():g}")
        if minimum is not None and arr.size and arr.min() < minimum:
            raise InstanceError(f"{self.key(name)}: values must be >= {minimum:g}, got {arr.min():g}")
        return torch.as_tensor(arr, dtype=torch.float64)

    def complex_array(self, name: str, shape: Iterable[int | None] | None = None, *, sizes_from: str = "") -> torch.Tensor:
        """``{"re": [...], "im": [...]}`` of equal shapes, each part as :meth:`real_array`."""
        v = self.obj[name]
        if not isinstance(v, Mapping):
            raise InstanceError(
                f'{self.key(name)}: expected a complex array {{"re": [...], "im": [...]}}, got {_describe(v)}'
            )
        Fields(v, prefix=f"{self.key(name)}.").check_keys(["re", "im"])
        re = _to_array(v["re"], self.key(name) + ".re")
        im = _to_array(v["im"], self.key(name) + ".im")
        if re.shape != im.shape:
            raise InstanceError(
                f"{self.key(name)}: re has shape {_shape_str(re.shape)} but im has {_shape_str(im.shape)}"
            )
        self._check_shape(name, re, shape, sizes_from)
        _check_magnitude(re, self.key(name))
        _check_magnitude(im, self.key(name))
        return torch.as_tensor(re + 1j * im, dtype=torch.complex128)


# Keys a result file written by ``isac solve`` carries besides the solution
# itself, so that a result file can be handed to ``isac evaluate`` directly.
RESULT_FILE_KEYS = (
    "problem", "solver", "status", "message", "metrics", "iterations", "time_s",
    "timings", "trace", "options", "seed", "info", "instance", "preset", "isac_version",
)
