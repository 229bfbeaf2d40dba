# Two entry points for a fresh machine: `make demo` and `make test` each set up .venv first.
# torch==2.13.0 is installed before anything else: here it is a local CPU wheel, while any looser
# torch request would pull several GB of CUDA packages. constraints.txt pins the tested set.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-all test-install lint format demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

# `test` is the fast default (within 15 minutes on 2 cores); `test-slow` is the rest: full-size clips,
# long sweeps (fuzzing, every input form) and per-variant repeats of one code path; .ci/run runs both.
# `test-all` runs everything in one session (the shared fixtures built once).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

# Every documented install profile (README, "Install"), each a fresh venv from the built wheel.
test-install: $(STAMP)
	$(BIN)/python tools/install_profiles.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/vrconvert demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
