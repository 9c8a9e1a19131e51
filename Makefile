# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv from nothing with Python 3.12+ and install the package into it.

VENV   ?= .venv
PY     := $(VENV)/bin/python
# First interpreter >= 3.12 that actually runs (a pyenv shim may exist but fail).
PYTHON ?= $(shell for p in python3.12 python3.13 python3 /root/.pyenv/versions/3.12*/bin/python3.12 \
             /usr/local/bin/python3.12 /usr/bin/python3.12; do \
             $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; \
           done)
OUT    ?= out
PYTEST_ARGS ?=
# Every model but joint NUTS and the Wishart model, whose R-hat of mu needs far longer chains
# than a quick run affords (`bpmf models` lists them all; add them with RUN_MODELS=...).
RUN_MODELS ?= bpmf,pmf,adagrad,mlp,ols,softmax,user-item-mean,item-mean,user-mean,global-mean,random

.PHONY: run test test-fast bench docs lint notebooks clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.12 not found; install it or pass PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,docs]"
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,bench]"
	@touch $@

run: $(VENV)/.installed
	$(VENV)/bin/bpmf compare --data food-world-cup --folds 5 --preset quick --out $(OUT) \
		--models $(RUN_MODELS)

# The docs extra too: tests/test_docs.py builds the documentation, so a broken docstring fails.
test: $(VENV)/.installed-docs
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-docs
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

# Benchmarks need MovieLens in the data home ($$BPMF_DATA) and the bench extra (myFM, Surprise).
bench: $(VENV)/.installed-bench
	$(PY) bench/baselines_simple.py --fold u1
	$(PY) bench/baselines_movielens.py
	$(PY) bench/peers.py

# The documentation site (API reference from the docstrings, README, notebooks as committed),
# warnings treated as errors; the test suite builds it too (tests/test_docs.py).
docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -b html -c docs -W --keep-going -q -d docs/_build/doctrees . docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

# Execute both notebooks top to bottom on small settings (outputs are not committed).
notebooks: $(VENV)/.installed
	$(PY) -m pytest -q tests/test_notebooks.py

lint: $(VENV)/.installed
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check bpmf tests bench

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache docs/_build
