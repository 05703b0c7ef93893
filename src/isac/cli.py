"""Command-line interface: ``isac --help``.

Every user error (bad file, bad option, unknown name) ends with one line on
stderr, ``error: ...``, and exit code 2; never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from isac import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """Raised for anything the user can fix; printed as one line, exit code 2."""


def _user_errors():
    from isac.experiments.spec import SpecError
    from isac.experiments.store import StoreError
    from isac.scenario.io import InstanceError
    from isac.solvers.base import OptionError
    from isac.tensors import DTypeError

    return (UserError, InstanceError, OptionError, DTypeError, SpecError, StoreError)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _parse_options(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--option {item!r}: expected key=value")
        k, v = item.split("=", 1)
        if not k.strip():
            raise UserError(f"--option {item!r}: empty key")
        out[k.strip()] = v.strip()
    return out


def _parse_params(items: list[str]) -> dict[str, Any]:
    """Preset parameters from ``name=value``: a JSON value (number, list, null) or else the text."""
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise UserError(f"--param {item!r}: expected name=value, e.g. -p sinr_db=10")
        try:
            val = json.loads(v)
        except ValueError:
            val = v.strip()
        if isinstance(val, float) and not math.isfinite(val):
            raise UserError(f"--param {item!r}: value must be finite")
        out[k.strip()] = tuple(val) if isinstance(val, list) else val
    return out


def _load_or_make(problem: str, instance: Optional[Path], preset: Optional[str], seed: Optional[int],
                  params: Optional[dict[str, Any]] = None):
    from isac.scenario.problems import get_family, load_instance, make_preset

    get_family(problem)
    if instance is not None and preset is not None:
        raise UserError("give either --instance or --preset, not both")
    if instance is not None:
        if params:
            raise UserError("--param sets preset parameters; it needs --preset, not --instance")
        return load_instance(instance, problem)
    if preset is None:
        raise UserError("give --instance FILE or --preset NAME (see `isac problems`)")
    inst = make_preset(problem, preset, 0 if seed is None else seed, **(params or {}))
    if params:  # --param values meet the checks (and bounds) an instance file meets
        from isac.scenario.io import InstanceError
        from isac.scenario.problems import instance_from_dict

        try:
            instance_from_dict(inst.to_dict(), problem)
        except InstanceError as e:
            raise UserError(f"preset {preset!r} with these --param values: {e}") from None
    return inst


@app.command("problems")
def problems_cmd(
    problem: Optional[str] = typer.Argument(None, help="Show one family in detail, with its file format."),
):
    """List problem families with their solvers and presets."""
    from isac.scenario.problems import families, get_family
    from isac.solvers.registry import default_solver, solvers_for

    if problem is not None:
        fam = get_family(problem)
        typer.echo(f"{fam.name}  [paper {fam.paper}]\n  {fam.summary}\n")
        typer.echo("presets:")
        for p in fam.presets:
            typer.echo(f"  {p:<16} {fam.preset_docs.get(p, '')}")
        typer.echo("solvers:")
        for n, c in sorted(solvers_for(fam.name).items()):
            typer.echo(f"  {n:<16} {c.description}")
        typer.echo("\n" + fam.format_doc.strip())
        return
    for fam in families().values():
        solvers = solvers_for(fam.name)
        typer.echo(f"{fam.name:<22} paper {fam.paper:<11} {fam.summary}")
        if solvers:
            d = default_solver(fam.name)
            typer.echo(f"{'':<22} solvers: " + ", ".join(n + (" (default)" if n == d else "") for n in sorted(solvers)))
        typer.echo(f"{'':<22} presets: " + ", ".join(fam.presets))


@app.command("instance")
def instance_cmd(
    problem: str = typer.Argument(..., help="Problem family, e.g. crlb-sumrate."),
    preset: str = typer.Option(..., "--preset", help="Preset name (see `isac problems PROBLEM`)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draw."),
    param: list[str] = typer.Option([], "--param", "-p",
                                     help="Preset parameter name=value (repeatable), e.g. -p sinr_db=10 -p slot=3."),
    out: Path = typer.Option(..., "--out", help="Where to write the instance JSON."),
):
    """Write an instance file drawn from a preset."""
    from isac.scenario.problems import make_preset, save_instance

    if seed < 0:
        raise UserError("--seed must be >= 0")
    inst = make_preset(problem, preset, seed, **_parse_params(param))
    save_instance(out, inst)
    typer.echo(f"wrote {out}")


@app.command("solve")
def solve_cmd(
    problem: str = typer.Argument(..., help="Problem family, e.g. crlb-sumrate."),
    instance: Optional[Path] = typer.Option(None, "--instance", help="Instance JSON file."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Draw the instance from a preset instead."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --preset (default 0)."),
    param: list[str] = typer.Option([], "--param", "-p",
                                     help="Preset parameter name=value (repeatable), e.g. -p sinr_db=10 -p slot=3."),
    solver: Optional[str] = typer.Option(None, "--solver", help="Solver name (default: the family's default)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Solver option key=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the result JSON here."),
):
    """Solve one instance; print status and metrics, optionally write the result JSON."""
    from isac.scenario.io import write_json
    from isac.solvers.registry import default_solver, get_solver

    if seed is not None and seed < 0:
        raise UserError("--seed must be >= 0")
    params = _parse_params(param)
    inst = _load_or_make(problem, instance, preset, seed, params)
    name = solver or default_solver(problem)
    s = get_solver(problem, name, _parse_options(option))
    result = s.solve(inst)
    d = result.to_dict()
    if preset is not None:
        d["preset"] = preset
        d["seed"] = 0 if seed is None else seed
        if params:
            d["preset_params"] = params
    if out is not None:
        write_json(out, d)
    summary = {k: d[k] for k in ("problem", "solver", "status", "message", "metrics", "iterations", "time_s")}
    if d.get("info"):
        summary["info"] = d["info"]
    typer.echo(json.dumps(summary, indent=2, allow_nan=False))  # to_dict wrote null for any NaN/Inf


@app.command("evaluate")
def evaluate_cmd(
    problem: str = typer.Argument(..., help="Problem family, e.g. crlb-sumrate."),
    instance: Path = typer.Option(..., "--instance", help="Instance JSON file."),
    solution: Path = typer.Option(..., "--solution", help="Solution JSON (or a result file from `isac solve`)."),
):
    """Print the metrics of a solution on an instance as JSON."""
    from isac.metrics.evaluate import evaluate, nonfinite_metrics, to_python
    from isac.scenario.problems import load_instance, load_solution

    inst = load_instance(instance, problem)
    sol = load_solution(solution, inst)
    metrics = to_python(evaluate(inst, sol))
    bad = nonfinite_metrics(metrics)
    if bad:  # the files passed their checks, yet a metric overflowed: never print NaN/Inf with exit 0
        raise UserError(f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}: not finite for this solution on this "
                        "instance (e.g. a sensing bound of beams that see no target, or values beyond float64's range)")
    typer.echo(json.dumps(metrics, indent=2, allow_nan=False))


@app.command("associate")
def associate_cmd(
    sinr: Path = typer.Option(..., "--sinr", help='JSON file {"sinr": K x N linear SINRs} (000\'s (P2) input); '
                              'optional "initial": [N] 0-based BS per CU.'),
    method: str = typer.Option("exact", "--method", help="exact, gale-shapley, fixed, brute-force, milp or llm."),
    bandwidth: float = typer.Option(1.0, "--bandwidth", help="Bandwidth B per BS (1: bit/s/Hz)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Method option key=value (repeatable)."),
    llm_base_url: Optional[str] = typer.Option(None, "--llm-base-url", help="llm: OpenAI-compatible endpoint, e.g. "
                                               "http://127.0.0.1:8080/v1 (default $ISAC_LLM_BASE_URL)."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="llm: model name (default $ISAC_LLM_MODEL)."),
    llm_api_key_env: Optional[str] = typer.Option(None, "--llm-api-key-env",
                                                  help="llm: environment variable holding the API key (default OPENAI_API_KEY)."),
    prompt_dir: Optional[Path] = typer.Option(None, "--prompt-dir", help="llm: folder of prompt templates "
                                              "(<part>.txt) overriding the built-in ones."),
    show_prompt: bool = typer.Option(False, "--show-prompt", help="llm: print the first round's prompt and exit "
                                     "(no server is contacted)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="llm: bypass the reply cache."),
):
    """Solve 000's user association (P2) alone, exactly, by heuristics or by an LLM on any OpenAI-compatible server.

    Prints the association (BS per CU), its objective and the time.

    With --method llm the association comes from a chat model (000's Algorithm 1); the output then
    also says where it came from: provenance llm (a valid reply), repaired, or fallback (gale-shapley).
    """
    from isac.scenario.io import Fields, read_json
    from isac.solvers.li_association import get_association_method

    obj = read_json(sinr, "SINR file")
    Fields(obj).check_keys(["sinr"], ["initial"])
    opts: dict[str, Any] = _parse_options(option)
    llm_flags = {"base_url": llm_base_url, "model": llm_model, "api_key_env": llm_api_key_env,
                 "prompt_dir": None if prompt_dir is None else str(prompt_dir)}
    if method == "llm":
        opts.update({k: v for k, v in llm_flags.items() if v is not None})
        if no_cache:
            opts["no_cache"] = True
    elif show_prompt or no_cache or any(v is not None for v in llm_flags.values()):
        raise UserError("--llm-*, --prompt-dir, --show-prompt and --no-cache apply to --method llm only")
    m = get_association_method(method, opts)
    if show_prompt:
        for msg in m.prompt(obj["sinr"], bandwidth=bandwidth, initial=obj.get("initial")):
            typer.echo(f"--- {msg['role']} ---")
            typer.echo(msg["content"])
        return
    res = m.associate(obj["sinr"], bandwidth=bandwidth, initial=obj.get("initial"))
    out = res.to_dict()
    if method == "llm":
        info = out["info"]
        out = {"association": out["association"], "objective": out["objective"], "method": out["method"],
               **{k: info.get(k) for k in ("provenance", "rounds", "valid_replies", "tokens")},
               "time_s": out["time_s"], "info": info}
    typer.echo(json.dumps(out, indent=2))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for index.md, results.json and the pictures."),
    quick: bool = typer.Option(False, "--quick", help="Fewer points on 003's trade-off curves (tests)."),
):
    """Short end-to-end job: each family's proposed method beside a baseline, one table, five pictures."""
    from isac.experiments.demo import run_demo

    run_demo(out, quick=quick, echo=typer.echo)


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """While active, a rich progress bar; yields a factory ``name -> progress(done, total)``, or None."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("-- rows/s" if speed is None else f"{speed:.2f} rows/s")

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)

    def factory(name: str):
        task = bar.add_task(name, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
        return update

    with bar:
        yield factory


def _worker_count(workers: int) -> int:
    """``--workers``: 0 means the number of CPUs, at most 8."""
    if workers < 0:
        raise UserError("--workers must be >= 0")
    return workers or min(8, os.cpu_count() or 1)


@app.command("sweep")
def sweep_cmd(
    spec_file: Path = typer.Argument(..., help="Sweep spec (TOML); see examples/sweeps/smoke.toml."),
    store: Optional[Path] = typer.Option(None, "--store", help="SQLite result store (default: SPEC with .db)."),
    workers: int = typer.Option(0, "--workers", help="Local worker processes (default: number of CPUs, at most 8)."),
    dask: Optional[str] = typer.Option(None, "--dask", help="Run on an existing Dask scheduler at ADDRESS."),
    dask_local: Optional[int] = typer.Option(None, "--dask-local", help="Start a Dask LocalCluster of N workers."),
    new: bool = typer.Option(False, "--new", help="Start over if the store was made by a different spec."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Run a sweep; resumes where a previous run of the same spec stopped."""
    from isac.experiments.runner import run_sweep
    from isac.experiments.spec import load_spec

    spec, text = load_spec(spec_file)
    if dask is not None and dask_local is not None:
        raise UserError("give either --dask or --dask-local, not both")
    if dask_local is not None and dask_local < 1:
        raise UserError("--dask-local must be >= 1")
    n = _worker_count(workers)
    path = store or spec_file.with_suffix(".db")
    try:
        with _progress_bar(progress) as factory:
            summary = run_sweep(spec, text, path, workers=n, dask_address=dask, dask_local=dask_local, new=new,
                                progress=factory(spec.name) if factory else None)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; finished rows are saved in {path}; run the same command to continue", err=True)
        raise typer.Exit(130)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    typer.echo(summary.line())


def _open_store(store: Path):
    from isac.experiments.store import ResultStore

    return ResultStore.open_existing(store)


@app.command("results")
def results_cmd(
    store: Path = typer.Argument(..., help="Result store written by `isac sweep`."),
    fmt: str = typer.Option("csv", "--format", help="csv or json."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of standard output."),
):
    """Export a store's rows as tidy CSV or JSON (one row per point, trial and solver)."""
    from isac.experiments.analysis import export

    if fmt not in ("csv", "json"):
        raise UserError(f"--format must be csv or json, got {fmt!r}")
    st, spec = _open_store(store)
    with st:
        text = export(st.rows(), spec, fmt)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}")


@app.command("plot")
def plot_cmd(
    store: Path = typer.Argument(..., help="Result store written by `isac sweep`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the PNG/PDF files (default: STORE without .db)."),
):
    """Draw the spec's plots (mean and 95 % interval over trials) as PNG and PDF."""
    from isac.experiments.analysis import plot_store

    st, spec = _open_store(store)
    with st:
        rows = st.rows()
    if not spec.plots:
        raise UserError(f"the spec in {store} declares no [[plots]]")
    files = plot_store(rows, spec, out or store.with_suffix(""))
    typer.echo("wrote " + ", ".join(str(f) for f in files))


@app.command("report")
def report_cmd(
    store: Path = typer.Argument(..., help="Result store written by `isac sweep`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.md and plots (default: STORE without .db)."),
):
    """Write a markdown report with tables, plots, failures and the manifest."""
    from isac.experiments.analysis import report

    st, spec = _open_store(store)
    with st:
        path = report(st.rows(), spec, st.manifest(), out or store.with_suffix(""))
    typer.echo(f"wrote {path}")


@app.command("reproduce")
def reproduce_cmd(
    paper: str = typer.Argument(..., help="Paper key: fang, zhao, li, xu or lian (as their systems land)."),
    quick: bool = typer.Option(False, "--quick", help="Reduced trials/points: minutes on 2 cores."),
    full: bool = typer.Option(False, "--full", help="The paper's Monte-Carlo counts (default)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: reproduce-PAPER)."),
    workers: int = typer.Option(0, "--workers", help="Local worker processes (default: number of CPUs, at most 8)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    llm_base_url: Optional[str] = typer.Option(None, "--llm-base-url", help="li: OpenAI-compatible endpoint for the "
                                               "LLM association lines (default $ISAC_LLM_BASE_URL; none: skipped)."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="li: model of the LLM lines (default $ISAC_LLM_MODEL)."),
):
    """Regenerate a paper's tables and figures from its bundled sweep specs."""
    from isac.experiments.reproduce import reproduce
    from isac.solvers.li_llm import ENV_BASE_URL, ENV_MODEL

    if quick and full:
        raise UserError("give --quick or --full, not both")
    # Worker processes inherit the environment, so the endpoint travels through it.
    if llm_base_url:
        os.environ[ENV_BASE_URL] = llm_base_url
    if llm_model:
        os.environ[ENV_MODEL] = llm_model
    n = _worker_count(workers)
    with _progress_bar(progress) as factory:
        reproduce(paper, "quick" if quick else "full", out or Path(f"reproduce-{paper}"), workers=n,
                  progress_factory=factory, echo=typer.echo)


@app.command("bench")
def bench_cmd(
    target: str = typer.Argument(..., help="What to benchmark: fang (003 solvers against N_t, ratios to -o rule=authors, batched throughput), zhao (004 "
                                           "solvers against the grid size N, GNN batched and single), li (000: "
                                           "admm vs fast per BS and per AO; exact vs brute-force vs MILP association), "
                                           "xu (001: every method against the certified optimum, time and SDPs) "
                                           "or lian (002: every coop-localization solver, single and batched, on "
                                           "the same lian instances at 10/20/30 dBm)."),
    quick: bool = typer.Option(False, "--quick", help="Two sizes, two instances each (zhao: batch of 50; lian: "
                                                      "20 dBm, two instances, no sca-sdr)."),
    out: Path = typer.Option(Path("bench-output"), "--out", help="Folder for bench.md, bench.json and bench.csv."),
    instances: int = typer.Option(5, "--instances", help="Instances per size (full mode)."),
    batch: int = typer.Option(1000, "--batch", help="zhao: instances of the batched GNN forward pass; fang: instances "
                                                    "of the batched-throughput rows (full mode)."),
    preset: str = typer.Option("zhao-fixed-b", "--preset", help="zhao: beampattern-sinr preset of the instances."),
    device: str = typer.Option("cpu", "--device", help="Also time batched sca (fang) / run the GNN (zhao) on this "
                                                       "torch device (e.g. cuda)."),
):
    """Time solvers side by side on the same instances and report ratios."""
    from isac.experiments.bench import LI_COLUMNS, ZHAO_COLUMNS, bench_fang, bench_li, bench_zhao, write_report

    if target not in ("fang", "zhao", "li", "xu", "lian"):
        raise UserError(f"unknown benchmark {target!r} (available: fang, zhao, li, xu, lian)")
    if instances < 1 or batch < 1:
        raise UserError("--instances and --batch must be >= 1")
    if target == "xu":
        from isac.experiments.bench_xu import XU_COLUMNS, bench_xu

        rows = bench_xu(num_users=(2, 5) if quick else (2, 3, 5, 7), instances=1 if quick else instances,
                        echo=typer.echo)
        title = "001 solvers: time, SDPs and power against the certified optimum (exhaustive), same instances"
        typer.echo(f"wrote {write_report(rows, out, title, XU_COLUMNS)}")
        return
    if target == "lian":
        from isac.experiments.bench_lian import LIAN_COLUMNS, bench_lian

        rows = bench_lian(powers_dbm=(20.0,) if quick else (10.0, 20.0, 30.0), instances=2 if quick else instances,
                          slow_instances=0 if quick else None, large_batch=256 if quick else 1000, echo=typer.echo)
        title = ("002 solvers on `lian` (gamma = 2x SPEB floor): time per instance, sum rate and share meeting "
                 "gamma, same instances, single and batched")
        typer.echo(f"wrote {write_report(rows, out, title, LIAN_COLUMNS)}")
        return
    if target == "li":
        rows = bench_li(instances=1 if quick else instances, admm_max_iterations=10 if quick else 100,
                        association_sizes=((3, 10), (4, 10)) if quick else ((3, 10), (4, 10), (5, 20), (10, 40)),
                        echo=typer.echo)
        title = "000 solvers: per-BS beamforming, full AO and association, side by side"
        typer.echo(f"wrote {write_report(rows, out, title, LI_COLUMNS)}")
        return
    if target == "fang":
        rows = bench_fang(num_tx=(8, 16) if quick else (8, 16, 32, 64, 128), instances=2 if quick else instances,
                          echo=typer.echo, device=device, batch=64 if quick else batch)
        title = ("003 solvers against N_t, one instance at a time, and batched throughput at N_t = 16; "
                 "ratios against sca -o rule=authors (the authors' iteration) in the same run")
        typer.echo(f"wrote {write_report(rows, out, title)}")
        return
    rows = bench_zhao(grid_points=(180, 30) if quick else (180, 60, 30, 10), instances=2 if quick else instances,
                      batch=50 if quick else max(batch, instances), preset=preset, echo=typer.echo, device=device)
    title = f"004 solvers on `{preset}`: time per instance against the grid size N (Table II)"
    typer.echo(f"wrote {write_report(rows, out, title, ZHAO_COLUMNS)}")


@app.command("train")
def train_cmd(
    target: str = typer.Argument(..., help="What to train: zhao-gnn (004's GNN), zhao-gnn-fl (the GNN with our "
                                           "feasibility layer), zhao-dnn (its DNN benchmark), "
                                           "lian-lhgnn (002's LHGNN), lian-lhgnn-noatt, lian-homognn, lian-cnn "
                                           "or lian-lhgnn-rzf (LHGNN + zero-forcing output layer, ours)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint file [default: zhao-KIND-L<users>-<sinr>dB.pt "
                                                          "or lian-KIND-<P>dBm-g<gamma/floor>[-robust].pt]."),
    users: int = typer.Option(2, "--users", help="zhao: number of users L of the training samples."),
    sinr_db: float = typer.Option(8.0, "--sinr-db", help="zhao: SINR target Gamma0 (dB) of the loss."),
    targets: int = typer.Option(3, "--targets", help="zhao: number of target directions K of the samples (drawn per sample)."),
    target_angles: Optional[str] = typer.Option(
        None, "--target-angles",
        help="zhao: fixed target directions (deg) of every sample, comma-separated, e.g. -40,0,40 (004 trains one "
             "model per target set); sets K. [default: K directions drawn per sample]"),
    antennas: int = typer.Option(10, "--antennas", help="zhao: number of antennas M."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs [zhao default: 500, the paper's; random targets: "
                                                                "40; --quick: 3. lian: 30 (reduced), 800 (--full)]."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Training samples [zhao default: 10000, the paper's; random "
                                                 "targets: 100000 (10000 overfit); --quick: 500. lian: 2000 (reduced), "
                                                 "4000 (--full)]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the samples, the initial weights and the shuffling."),
    lr: float = typer.Option(0.0, "--lr", help="Adam learning rate [default 0: zhao 1e-3; lian 1e-3 (reduced), 2e-4 (--full)]."),
    threads: int = typer.Option(0, "--threads", help="Torch threads while training (0: leave as is; 1 for bit-reproducible weights)."),
    validate_every: Optional[int] = typer.Option(
        None, "--validate-every", help="zhao: epochs between validations (the best-on-validation weights are kept). "
                                       "[default: 10, or epochs / 10 when that is smaller]"),
    mu: Optional[float] = typer.Option(None, "--mu", help="zhao: weight mu of the SINR barrier in the loss (004 eq. (25); "
                                                        "not given there). [default: 0.1; zhao-gnn-fl 1]"),
    margin_db: float = typer.Option(1.0, "--margin-db", help="zhao: training margin (dB) on Gamma0 inside the barrier."),
    lr_schedule: str = typer.Option("cosine", "--lr-schedule", help="zhao: learning-rate schedule: cosine (decay to 1 %) or constant."),
    power_dbm: float = typer.Option(20.0, "--power-dbm", help="lian: per-BS budget P_n (dBm) of the samples."),
    gamma_over_floor: float = typer.Option(2.0, "--gamma-over-floor", help="lian: SPEB threshold gamma / SPEB floor."),
    csi_snr_db: Optional[str] = typer.Option(
        None, "--csi-snr-db", help="lian: noisy CSI inputs: one SNR (dB) or LO,HI (an integer SNR per sample, uniform). "
                                   "[default: exact CSI]"),
    position_error: Optional[str] = typer.Option(
        None, "--position-error", help="lian: target position error A,B (m): |error| ~ U[A, B) per axis. [default: exact]"),
    speb_margin: float = typer.Option(0.1, "--speb-margin", help="lian: the SPEB hinge of the loss uses gamma (1 - margin)."),
    device: str = typer.Option("cpu", "--device", help="lian: torch device for training (cpu or cuda)."),
    full: bool = typer.Option(False, "--full", help="lian: 002's protocol (U = 9 layers up to width 512, 4000 samples, "
                                                    "800 epochs; meant for a GPU) instead of the reduced one."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (for tests and smoke checks)."),
):
    """Train a learned beamformer; the checkpoint stores its training config, seed and scores."""
    if target.startswith("lian-"):
        from isac.learning.lian_train import checkpoint_name, cli_config
        from isac.learning.lian_train import train as train_lian

        try:
            cfg = cli_config(target, full=full, quick=quick, epochs=epochs, samples=samples, seed=seed, lr=lr,
                             threads=threads, power_dbm=power_dbm, gamma_over_floor=gamma_over_floor,
                             csi_snr_db=csi_snr_db, position_error=position_error, device=device,
                             speb_margin=speb_margin)
        except ValueError as e:
            raise UserError(str(e)) from None
        path = out or Path(checkpoint_name(cfg))
        with _progress_bar(True) as factory:
            train_lian(cfg, path, echo=typer.echo, progress=factory(f"{target} epochs"))
        return
    from isac.learning.train import TrainConfig, default_sizes, target_set_tag, train

    kinds = {"zhao-gnn": "gnn", "zhao-dnn": "dnn", "zhao-gnn-fl": "gnn-fl"}
    if target not in kinds:
        raise UserError(f"unknown training target {target!r} (available: {', '.join(kinds)}, lian-lhgnn, "
                        "lian-lhgnn-noatt, lian-homognn, lian-cnn, lian-lhgnn-rzf)")
    angles = None
    if target_angles is not None:
        try:
            angles = [float(a) for a in target_angles.split(",") if a.strip()]
        except ValueError:
            raise UserError(f"--target-angles: expected comma-separated degrees like -40,0,40, got {target_angles!r}") from None
    sizes = {"epochs": 3, "n_train": 500, "n_val": 100, "n_test": 100} if quick else default_sizes(angles, kinds[target])
    if epochs is not None:
        sizes["epochs"] = epochs
    if samples is not None:
        sizes["n_train"] = samples
    every = validate_every or sizes.pop("validate_every", None) or min(10, max(1, sizes.get("epochs", 500) // 10))
    sizes.pop("validate_every", None)
    try:
        cfg = TrainConfig(kind=kinds[target], num_antennas=antennas, num_users=users, num_targets=targets,
                          sinr_db=sinr_db, seed=seed, lr=lr, threads=threads, lr_schedule=lr_schedule,
                          mu=mu, margin_db=margin_db, target_angles_deg=angles,
                          validate_every=every, **sizes)
    except ValueError as e:
        raise UserError(str(e)) from None
    path = out or Path(f"zhao-{cfg.kind}-L{users}-{sinr_db:g}dB{target_set_tag(cfg.target_angles_deg)}.pt")
    with _progress_bar(True) as factory:
        train(cfg, path, echo=typer.echo, progress=factory(f"{target} epochs"))


@app.command("version")
def version_cmd():
    """Print the package version."""
    typer.echo(__version__)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the package version and exit.")) -> None:
    """isac: transmit beamforming for integrated sensing and communication (ISAC)."""


def _doctor_lines() -> list[tuple[str, str]]:
    """``(what, value)`` pairs for ``isac doctor``; a part that cannot be read says why instead."""
    import importlib.metadata as md
    import platform

    rows: list[tuple[str, str]] = []

    def add(what: str, get) -> None:
        try:
            rows.append((what, str(get())))
        except Exception as e:  # noqa: BLE001 - a broken install is what doctor is for
            rows.append((what, f"unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"))

    def version_of(dist: str):
        return lambda: md.version(dist)

    import isac

    add("isac", lambda: f"{__version__} ({Path(isac.__file__).parent})")
    add("python", lambda: f"{platform.python_version()} ({sys.executable})")
    add("platform", lambda: f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs")
    for dist in ("numpy", "scipy", "numba", "cvxpy", "scs", "clarabel", "matplotlib", "dask", "distributed",
                 "openai"):
        add(dist, version_of(dist))

    def torch_info():
        import torch

        cuda = torch.cuda.is_available()
        devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "none"
        return f"{torch.__version__}; CUDA available: {cuda} (build CUDA {torch.version.cuda}; devices: {devices})"

    add("torch", torch_info)

    def threads():
        import torch

        env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                        if k in os.environ) or "no thread variables set"
        return (f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()} "
                f"(solvers run small problems on 1); {env}")

    add("threads", threads)

    def cvxpy_solvers():
        import cvxpy

        return ", ".join(sorted(cvxpy.installed_solvers()))

    add("cvxpy solvers", cvxpy_solvers)

    def models():
        from isac.solvers.zhao_learned import MODEL_DIR_ENV, model_folders

        parts = []
        for folder in model_folders():
            n = len(list(folder.glob("*.pt"))) if folder.is_dir() else 0
            parts.append(f"{folder} ({n} checkpoints)" if folder.is_dir() else f"{folder} (missing)")
        env = os.environ.get(MODEL_DIR_ENV)
        return "; ".join(parts) + (f"  [${MODEL_DIR_ENV}={env}]" if env else f"  [${MODEL_DIR_ENV} not set]")

    add("models looked up in", models)

    def numba_cache():
        import numba.core.config as cfg

        return cfg.CACHE_DIR or "next to the compiled modules (__pycache__), else the user cache"

    add("numba cache", numba_cache)
    return rows


@app.command("doctor")
def doctor_cmd():
    """Print versions (torch, cvxpy and its solvers, ...), CUDA, threads and model folders for bug reports."""
    rows = _doctor_lines()
    width = max(len(w) for w, _ in rows)
    for what, value in rows:
        typer.echo(f"{what:<{width}}  {value}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the one place a traceback is turned into one line
        if isinstance(e, typer.Abort):
            sys.exit(130)
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # usage errors of the CLI framework
            e.show()
            sys.exit(2)
        if isinstance(e, _user_errors()):
            typer.echo(f"error: {e}", err=True)
            sys.exit(2)
        typer.echo(f"error: internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                   "please report it with the command you ran", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
