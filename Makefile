# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create .venv from pyproject.toml when it is missing or older than pyproject.toml; that step
# also installs nbstripout as this clone's git filter, so notebook outputs never reach git.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra arguments for pytest (test, test-fast) or bench: `make test-fast ARGS='-k cache'`.
ARGS ?=

.PHONY: run test test-fast bench venv git-filter lab reference clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[all]'
	@# Byte-compiled once, as a non-editable install would be: where PYTHONDONTWRITEBYTECODE is set,
	@# every process (each Ray worker too) would otherwise compile the package again at start-up.
	$(PY) -m compileall -q scoring_lib
	$(MAKE) --no-print-directory git-filter
	touch $(STAMP)

# nbstripout as the git filter for *.ipynb (.gitattributes names it): saving a notebook with its outputs
# in JupyterLab leaves `git status` clean. Idempotent; does nothing outside a git checkout. Uses .venv's
# Python, or without .venv (a conda environment) the $(PYTHON) on PATH.
FILTER_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
git-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		$(FILTER_PY) -m nbstripout --install && \
		git config filter.nbstripout.extrakeys \
			"$$($(FILTER_PY) -c 'from scoring_lib.notebook import STRIP_EXTRA_KEYS as k; print(" ".join(k))')" && \
		echo "nbstripout: git filter installed (notebook outputs are stripped when staged)"; \
	fi

# The main job: the quick sweep against the embedded simulated service, then its report in
# results/report/ (ignored by git; report.md and a self-contained report.html). The report is built even
# when some points failed (it lists them); `make run` then still exits with the sweep's non-zero code.
GRID ?= notebooks/grids/quick.yaml
run: $(STAMP)
	$(PY) -m scoring_lib sweep $(GRID); rc=$$?; \
		$(PY) -m scoring_lib report --sweep $(GRID) && exit $$rc

# JupyterLab on 127.0.0.1 with this project's environment; the notebooks are in notebooks/. Saving one
# writes it without outputs (as committed) and its executed copy to results/notebooks/saved/.
LAB_PORT ?= 8888
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=$(CURDIR) \
		--ServerApp.default_url=/lab/tree/notebooks \
		--FileContentsManager.pre_save_hook=scoring_lib.notebook.save_hook $(if $(filter 0,$(shell id -u)),--allow-root,)

# Everything: unit tests, notebooks, Ray, and the browser test (skipped, saying so, without Chromium).
test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# The inner loop: no notebooks, no Ray, no browser.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not ray and not browser" $(ARGS)

bench: $(STAMP)
	$(PY) -m scoring_lib bench $(ARGS)

# The committed reference report, rebuilt from its committed records (results/reference/runs/): the sweep
# notebooks/grids/reference.yaml at full scale (python -m scoring_lib sweep notebooks/grids/reference.yaml
# --records-dir results/reference/runs makes them anew, about 25 minutes).
reference: $(STAMP)
	$(PY) -m scoring_lib report --runs results/reference/runs --sweep reference \
		--out results/reference/report

clean:
	rm -rf $(VENV) results/cache results/scores results/runs results/report results/notebooks
