# Two commands do all the set-up on a fresh machine:
#   make run    create .venv if missing, install the project, train the ex09 default preset
#   make ex08   same set-up, then the ex08 leaderboard preset (PRESET=case-study for the course's case study)
#   make test       same set-up, then the whole test suite (what CI runs)
#   make test-fast  the inner loop: everything but the tests marked slow (under 2 minutes on 2 cores)
#   make study      an Optuna study (STUDY=kp, EXP=ex09; ARGS="--workers 2 --trials 40"), then make report
#   make dashboard  the study in a browser (optuna-dashboard; ARGS="--port 8081")
#   make lint       ruff, as configured in pyproject.toml
#   make constraints  constraints.txt: the exact versions installed here (pip install -c constraints.txt)
# Data: --data-dir via DATA_DIR=..., else $I2DL_DATA_DIR, else the default cache dir (downloaded there).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
PRESET ?= leaderboard
STUDY  ?= kp
EXP    ?= ex09
DATA_ARG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: run ex08 test test-fast quick install clean study report dashboard lint constraints wheel

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

study: $(STAMP)
	$(PY) -m experiments.run $(EXP) --study $(STUDY) $(DATA_ARG) $(ARGS)

report: $(STAMP)
	$(PY) -m experiments.run report --study $(STUDY) $(ARGS)

dashboard: $(STAMP)
	$(PY) -m experiments.run dashboard --study $(STUDY) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

constraints: $(STAMP)
	{ echo "# The exact versions of the environment CI ran (make constraints); pip install -c constraints.txt -e ."; \
	  $(PY) -m pip freeze --exclude-editable --disable-pip-version-check; } > constraints.txt

wheel: $(STAMP)
	$(PY) -m build --wheel --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist
