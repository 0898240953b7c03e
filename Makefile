# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# Both are idempotent: the virtual environment is rebuilt only when pyproject.toml or
# constraints.txt change.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
ORCH_HOME ?= .orch
ORCH   := $(BIN)/orch --home $(ORCH_HOME)
# The Slurm tests mostly wait for the mini-cluster's scheduler: `make test` runs them (and the
# modules marked beside_slurm, so that both take about as long) in a pytest process of their own
# beside the others, and prints their report after the others'.
SLURM_LOG := .test-artifacts/slurm-tests.log
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(ORCH) plan configs/sweeps/demo.yaml
	$(ORCH) submit configs/sweeps/demo.yaml --wait
	$(ORCH) status
	$(ORCH) curves demo
	$(ORCH) analyze demo --figure lines
	$(ORCH) analyze demo --figure polyfit
	$(ORCH) analyze demo --figure strategies
	$(ORCH) analyze demo --figure walk
	$(ORCH) analyze demo --figure table
	@echo "see the results in a browser: $(ORCH) serve  (then open http://127.0.0.1:8765; from your laptop: ssh -L 8765:127.0.0.1:8765 login-node)"

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@mkdir -p .test-artifacts
	$(BIN)/python -m pytest -m "slurm or beside_slurm" > $(SLURM_LOG) 2>&1 & slurm=$$!; \
	trap 'kill $$slurm 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest -m "not slurm and not beside_slurm"; others=$$?; \
	wait $$slurm; slurm_status=$$?; \
	echo "== the Slurm tests, run beside the others (pytest -m 'slurm or beside_slurm'; $(SLURM_LOG)) =="; \
	cat $(SLURM_LOG); \
	test $$others -eq 0 && test $$slurm_status -eq 0

clean:
	rm -rf $(VENV) $(ORCH_HOME)
