# The two commands of the README. Both set up .venv first (from pyproject.toml), so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
PYTEST_ARGS ?=

.PHONY: install test demo bench lint clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# pytest's exit code 5 ("no tests collected") must fail loudly, never pass.
test: $(STAMP)
	@set -o pipefail; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/default

bench: $(STAMP)
	$(BIN)/python -m pip install -e '.[test,bench]'
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/snakemake --lint
