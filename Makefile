# Two commands do all the set-up on a fresh machine:
#   make run    create .venv if missing, install the project, train the ex09 default preset
#   make ex08   same set-up, then the ex08 leaderboard preset (PRESET=case-study for the course's case study)
#   make test       same set-up, then the whole test suite (what CI runs)
#   make test-fast  the inner loop: everything but the tests marked slow (under 2 minutes on 2 cores)
# Data: --data-dir via DATA_DIR=..., else $I2DL_DATA_DIR, else the default cache dir (downloaded there).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
PRESET ?= leaderboard
DATA_ARG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: run ex08 test test-fast quick install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,postgres]"
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.run ex09 $(DATA_ARG) $(ARGS)

ex08: $(STAMP)
	$(PY) -m experiments.run ex08 --preset $(PRESET) $(DATA_ARG) $(ARGS)

quick: $(STAMP)
	$(PY) -m experiments.run ex09 --preset quick $(DATA_ARG) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
