"""``isac reproduce PAPER``: run a paper's bundled sweep specs and write CSV, plots and a report.

A paper registers the spec files that regenerate its tables and figures
(``src/isac/experiments/specs/<paper>/*.toml``) once its system has landed. Each
spec's optional ``[quick]`` table shrinks it for ``--quick`` (minutes on 2
cores); ``--full`` runs it as written (the paper's Monte-Carlo counts).

Output folder layout: ``<out>/<stem>.db`` (the store; rerunning resumes),
``<out>/<stem>/`` (report.md, PNG/PDF plots, results.csv) and ``<out>/README.md``
linking the reports, where ``<stem>`` is the spec name (``--full``) or
``<name>-quick`` (``--quick``), so both modes can share one folder.

Solver entries with ``requires = "llm-endpoint"`` (000's LLM association) run only when an
OpenAI-compatible endpoint is configured (:func:`llm_endpoint_configured`); otherwise they are
left out of the run with a message, and the report index says so. Their rows are cached replies
on a rerun (:mod:`isac.solvers.llm_client`), so re-running calls the model 0 times.

Specs that run learned solvers first get their models: trained into ``<out>/models``
(``models-quick`` in quick mode) unless already there (see :mod:`isac.experiments.models`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from isac.experiments.analysis import export, report
from isac.experiments.models import ensure_models, required_models, use_model_dir
from isac.experiments.runner import SweepSummary, run_sweep
from isac.experiments.spec import SpecError, SweepSpec, parse_spec
from isac.experiments.store import QUICK_MARKER, ResultStore


@dataclass(frozen=True)
class Paper:
    """A paper whose figures ``isac reproduce`` regenerates."""

    key: str
    title: str
    specs: tuple[str, ...]
    """Spec file names under ``specs/<key>/`` (package data), in run order."""
    notes: str = ""
    spec_dir: Path | None = field(default=None)
    """Folder holding the specs; default: the package's ``specs/<key>``."""


_PAPERS: dict[str, Paper] = {}


def register_paper(paper: Paper) -> Paper:
    _PAPERS[paper.key] = paper
    return paper


def _load() -> None:
    import isac.experiments.papers  # noqa: F401  (registers the bundled papers)


def papers() -> dict[str, Paper]:
    _load()
    return dict(_PAPERS)


def _spec_text(paper: Paper, name: str) -> str:
    if paper.spec_dir is not None:
        path = paper.spec_dir / name
        if not path.is_file():
            raise SpecError(f"paper {paper.key}: bundled spec {name!r} is missing")
        return path.read_text()
    res = resources.files("isac.experiments").joinpath("specs", paper.key, name)
    if not res.is_file():
        raise SpecError(f"paper {paper.key}: bundled spec {name!r} is missing")
    return res.read_text()


def paper_specs(key: str, mode: str) -> list[tuple[SweepSpec, str]]:
    _load()
    if key not in _PAPERS:
        known = ", ".join(sorted(_PAPERS)) or "none yet (papers are registered as their systems land)"
        raise SpecError(f"no reproduction registered for paper {key!r} (registered: {known})")
    paper = _PAPERS[key]
    out = []
    for name in paper.specs:
        text = _spec_text(paper, name)
        spec = parse_spec(text, f"{key}/{name}").with_mode(mode)
        out.append((spec, text + (f"\n{QUICK_MARKER}\n" if mode == "quick" else "")))
    return out


LLM_SKIP = ("no LLM endpoint configured: set ISAC_LLM_BASE_URL and ISAC_LLM_MODEL "
            "(or isac reproduce --llm-base-url URL --llm-model NAME)")


def llm_endpoint_configured() -> bool:
    """Whether ``$ISAC_LLM_BASE_URL`` and ``$ISAC_LLM_MODEL`` are both set (what LLM lines need)."""
    import os

    from isac.solvers.li_llm import ENV_BASE_URL, ENV_MODEL

    return bool(os.environ.get(ENV_BASE_URL)) and bool(os.environ.get(ENV_MODEL))


def drop_unavailable(spec: SweepSpec) -> tuple[SweepSpec, list[str]]:
    """``spec`` without the solver entries whose requirement is unmet, and their labels."""
    if llm_endpoint_configured():
        return spec, []
    keep = [s for s in spec.solvers if s.requires != "llm-endpoint"]
    skipped = [s.key for s in spec.solvers if s.requires == "llm-endpoint"]
    return (spec.model_copy(update={"solvers": keep}) if skipped else spec), skipped


def reproduce(
    key: str,
    mode: str,
    out_dir: str | Path,
    *,
    workers: int = 1,
    progress_factory: Callable[[str], Callable[[int, int], None] | None] | None = None,
    echo: Callable[[str], None] = print,
) -> list[SweepSummary]:
    """Run every spec of paper ``key`` in ``mode`` ("quick" or "full") into ``out_dir``."""
    if mode not in ("quick", "full"):
        raise SpecError(f"mode must be quick or full, got {mode!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    index = [f"# Reproduction of {_PAPERS[key].title if key in _PAPERS else key} ({mode})", ""]
    specs = paper_specs(key, mode)
    needs = required_models(spec for spec, _ in specs)
    if needs:  # learned solvers: train the models the specs ask for (once; reruns reuse them)
        models = out / ("models" if mode == "full" else f"models-{mode}")
        ensure_models(needs, models, mode, workers=workers, echo=echo)
        use_model_dir(models)
        index += [f"Models: {len(needs)} checkpoints in `{models.name}/` "
                  f"({'paper training settings' if mode == 'full' else 'quick training: small models'}).", ""]
    for spec, text in specs:
        spec, skipped = drop_unavailable(spec)
        if skipped:
            echo(f"{spec.name}: skipped {', '.join(skipped)}: {LLM_SKIP}")
        stem = spec.name if mode == "full" else f"{spec.name}-{mode}"
        store_path = out / f"{stem}.db"
        prog = progress_factory(spec.name) if progress_factory else None
        summary = run_sweep(spec, text, store_path, workers=workers, progress=prog)
        echo(summary.line())
        summaries.append(summary)
        folder = out / stem
        with ResultStore.open(store_path, spec, text) as store:
            rows = store.rows()
            manifest = store.manifest()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.csv").write_text(export(rows, spec, "csv"))
        report(rows, spec, manifest, folder)
        index.append(f"- [{stem}]({stem}/report.md): {spec.description}"
                     + (f" (skipped: {', '.join(skipped)}; {LLM_SKIP})" if skipped else ""))
    if _PAPERS[key].notes:
        index += ["", _PAPERS[key].notes]
    (out / "README.md").write_text("\n".join(index) + "\n")
    return summaries
