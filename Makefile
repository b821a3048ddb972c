# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create .venv from pyproject.toml when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

# The main job: the quick sweep against the embedded simulated service, then the report
# (results/report/report.md and its figures).
GRID ?= notebooks/grids/quick.yaml
run: $(STAMP)
	$(PY) -m scoring_lib sweep $(GRID)
	$(PY) -m scoring_lib report

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m scoring_lib bench

clean:
	rm -rf $(VENV) results/cache results/scores
