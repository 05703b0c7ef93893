"""The docs cover every registered family and paper (`make test` builds them with -W after pytest)."""

import re
from pathlib import Path

from isac.experiments.reproduce import papers
from isac.scenario.problems import families

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _directive_args(text: str, name: str) -> set[str]:
    return set(re.findall(rf"^\.\. {name}:: (\S+)$", text, flags=re.M))


def test_every_family_has_a_page_with_model_presets_and_solvers():
    index = (DOCS / "index.rst").read_text()
    for name in families():
        page = DOCS / "families" / f"{name}.rst"
        assert page.is_file(), f"docs/families/{name}.rst is missing"
        assert f"families/{name}" in index, f"docs/index.rst does not list families/{name}"
        text = page.read_text()
        for directive in ("isac-family-model", "isac-presets", "isac-solvers"):
            assert _directive_args(text, directive) == {name}, f"{page.name}: .. {directive}:: {name}"


def test_every_paper_is_reproduced_on_a_family_page():
    shown = set()
    for page in (DOCS / "families").glob("*.rst"):
        shown |= _directive_args(page.read_text(), "isac-reproduce")
    assert shown == set(papers())
