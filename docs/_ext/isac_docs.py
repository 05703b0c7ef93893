"""Sphinx directives that render the docs from the code's own registries.

The family pages and the API pages are generated from what ``isac`` registers at import time, so
that a new solver, preset, spec or module shows up without editing the docs:

* ``.. isac-family-model:: FAMILY`` - the family's module docstring (system model, file format);
* ``.. isac-presets:: FAMILY`` - its presets with their keyword parameters;
* ``.. isac-solvers:: FAMILY`` - its solvers (the same list as ``isac problems FAMILY``) with options;
* ``.. isac-components:: MODULE.FUNCTION`` - a registry ``() -> {name: class}`` of option
  dataclasses (e.g. 000's association methods), rendered like the solvers;
* ``.. isac-reproduce:: PAPER`` - the bundled specs of ``isac reproduce PAPER``;
* ``.. isac-api:: PACKAGE`` - ``automodule`` of the package and of every module below it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import textwrap
from importlib import resources

from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _one_line(text: str) -> str:
    """Docstring text as one paragraph (for list items)."""
    out = " ".join(line.strip() for line in textwrap.dedent(text).strip().splitlines() if line.strip())
    return out[:-2] + ":" if out.endswith("::") else out


def _options_section(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Options:`` section of a class docstring."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    lines = doc.splitlines()
    if "Options:" not in (s.strip() for s in lines):
        return {}
    start = [s.strip() for s in lines].index("Options:") + 1
    out: dict[str, list[str]] = {}
    indent, name = None, None
    for line in lines[start:]:
        if not line.strip():
            if name is not None:
                out[name].append("")
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        m = re.match(r"(\w+): ?(.*)$", line.strip())
        if width == indent and m:
            name = m.group(1)
            out[name] = [m.group(2)]
        elif width == indent:
            break
        elif name is not None:
            out[name].append(line.strip())
    # A blank line ends the entry's first paragraph; later paragraphs are in the class docstring.
    return {k: _one_line("\n".join(v).split("\n\n")[0]) for k, v in out.items()}


def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (``x: int = 1`` then ``\"\"\"...\"\"\"``)."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base is object or not base.__module__.startswith("isac"):
            continue
        try:
            docs = ModuleAnalyzer.for_module(base.__module__).find_attr_docs()
        except Exception:  # noqa: BLE001 - no source: no attribute docs
            continue
        for (qualname, attr), lines in docs.items():
            if qualname == base.__qualname__:
                out[attr] = _one_line("\n".join(lines))
        out.update(_options_section(base))
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"``{f.default!r}``"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"``{f.default_factory()!r}``"  # type: ignore[misc]
    return "required"


def _class_rst(name: str, cls: type, default: bool, option_flag: str) -> list[str]:
    out = [f"``{name}``" + (" (default)" if default else ""), "   " + (_one_line(getattr(cls, "description", "")) or "")]
    out += ["", f"   Class :class:`{cls.__module__}.{cls.__qualname__}`."]
    fields = [f for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    if fields:
        docs = _attribute_docs(cls)
        out += ["", f"   Options ({option_flag}):", ""]
        for f in fields:
            typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            line = f"   - ``{f.name}`` (``{typ}``, default {_default(f)})"
            if docs.get(f.name):
                line += ": " + docs[f.name]
            out.append(line)
    else:
        out += ["", "   No options."]
    return out + [""]


class _Directive(SphinxDirective):
    required_arguments = 1
    has_content = False

    def _parse(self, lines: list[str], headings: bool = False):
        return self.parse_text_to_nodes("\n".join(lines) + "\n", allow_section_headings=headings)


class FamilyModel(_Directive):
    def run(self):
        from isac.scenario.problems import get_family

        return self._parse(inspect.cleandoc(get_family(self.arguments[0]).format_doc).splitlines())


class Presets(_Directive):
    def run(self):
        from isac.scenario.problems import get_family, preset_parameters

        fam = get_family(self.arguments[0])
        lines: list[str] = []
        for name, fn in fam.presets.items():
            lines += [f"``{name}``", f"   {fam.preset_docs.get(name, '') or 'Preset ' + name + '.'}"]
            qualname = getattr(fn, "__qualname__", "")
            if qualname and "<" not in qualname:
                lines += ["", f"   Function :func:`{fn.__module__}.{qualname}` (its docstring has the details)."]
            params = preset_parameters(fam.name, name)
            if params:
                shown = ", ".join(f"``{k}={v!r}``" for k, v in params.items())
                lines += ["", f"   Parameters (``-p NAME=VALUE``; ``None``: the preset's rule): {shown}."]
            lines.append("")
        return self._parse(lines)


class Solvers(_Directive):
    def run(self):
        from isac.solvers.registry import default_solver, solvers_for

        problem = self.arguments[0]
        default = default_solver(problem)
        lines: list[str] = []
        for name, cls in sorted(solvers_for(problem).items()):
            lines += _class_rst(name, cls, name == default, f"``isac solve {problem} --solver {name} -o NAME=VALUE``")
        return self._parse(lines)


class Components(_Directive):
    option_spec = {"flag": str}

    def run(self):
        module, func = self.arguments[0].rsplit(".", 1)
        registry = getattr(importlib.import_module(module), func)()
        flag = self.options.get("flag", "``-o NAME=VALUE``")
        lines: list[str] = []
        for name, cls in sorted(registry.items()):
            lines += _class_rst(name, cls, False, flag)
        return self._parse(lines)


class Reproduce(_Directive):
    def run(self):
        from isac.experiments.reproduce import papers

        paper = papers()[self.arguments[0]]
        lines = [f"``isac reproduce {paper.key}`` - {paper.title}.", "",
                 f"``isac reproduce {paper.key} --quick`` runs a reduced version (minutes on 2 cores); "
                 f"``--full`` (the default) the paper's Monte-Carlo counts; ``--out DIR`` chooses the output "
                 f"folder (default ``reproduce-{paper.key}``). Rerunning resumes.", ""]
        if paper.notes:
            lines += [paper.notes.replace("`", "``").replace("````", "``"), ""]
        lines += ["Bundled specs, in run order (``src/isac/experiments/specs/" + paper.key + "/``):", ""]
        for spec in paper.specs:
            if paper.spec_dir is not None:
                text = (paper.spec_dir / spec).read_text()
            else:
                text = resources.files("isac.experiments").joinpath("specs", paper.key, spec).read_text()
            data = tomllib.loads(text)
            desc = data.get("description", "")
            lines.append(f"- ``{spec}`` (``{data.get('name', spec)}``): {desc}")
        return self._parse(lines + [""])


class Api(_Directive):
    def run(self):
        pkg = importlib.import_module(self.arguments[0])
        names = [pkg.__name__]
        if hasattr(pkg, "__path__"):
            names += sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."))
        # A package documents what it defines, not what it re-exports (``isac.solvers`` lists
        # ``Result`` in ``__all__``): one target per object, so cross-references stay unambiguous.
        lines = [f".. automodule:: {names[0]}", "   :members:", "   :ignore-module-all:", ""]
        for name in names[1:]:
            title = f"``{name}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {name}", "   :members:", ""]
        return self._parse(lines, headings=True)


def setup(app):
    app.add_directive("isac-family-model", FamilyModel)
    app.add_directive("isac-presets", Presets)
    app.add_directive("isac-solvers", Solvers)
    app.add_directive("isac-components", Components)
    app.add_directive("isac-reproduce", Reproduce)
    app.add_directive("isac-api", Api)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
