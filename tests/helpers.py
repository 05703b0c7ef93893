"""Shared test utilities (not a test module)."""

from __future__ import annotations

import torch


def crandn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard complex Gaussian complex128 tensor from a local generator."""
    re = torch.randn(*shape, generator=gen, dtype=torch.float64)
    im = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return torch.complex(re, im) / 2**0.5


def central_difference_grad(f, W: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Wirtinger-style gradient d f / d Re W + j d f / d Im W by central differences.

    ``f`` maps a complex tensor to a real scalar; the result has W's shape.
    """
    g = torch.zeros_like(W)
    flat = W.reshape(-1)
    out = g.reshape(-1)
    for i in range(flat.numel()):
        for unit, part in ((1.0, "re"), (1j, "im")):
            e = torch.zeros_like(flat)
            e[i] = unit * h
            d = (float(f((flat + e).reshape(W.shape))) - float(f((flat - e).reshape(W.shape)))) / (2 * h)
            out[i] += d if part == "re" else 1j * d
    return g


def autograd_grad(f, W: torch.Tensor) -> torch.Tensor:
    """Same convention as :func:`central_difference_grad` via torch autograd (= 2 df/dW*)."""
    Wv = W.detach().clone().requires_grad_(True)
    val = f(Wv)
    (g,) = torch.autograd.grad(val, Wv)
    # torch returns the conjugate Wirtinger gradient scaled so that g = df/dRe + j df/dIm.
    return g


def assert_close(a, b, rtol=1e-8, atol=0.0, what=""):
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def mutate(obj, path, value):
    """Deep copy of a JSON-like ``obj`` with ``path`` set to ``value`` (``KeyError`` deletes it)."""
    import copy

    out = copy.deepcopy(obj)
    cur = out
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return out


def run_cli(args, capsys, monkeypatch):
    """Run ``isac ARGS`` in-process; returns (exit code, stdout, stderr)."""
    import sys

    from isac import cli

    monkeypatch.setattr(sys, "argv", ["isac", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err
