# Every target sets up its own environment: a fresh machine needs only Python 3.10+ and pip.
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# pytest-xdist processes for `make test`: test files are spread over them in collection order (tests/conftest.py
# puts the longest first), a file's tests stay in one process (its module fixtures are built once). Two fit a
# 2-core machine; `make test TEST_WORKERS=1` runs in one process.
TEST_WORKERS ?= 2

.PHONY: demo demo-full app showcase lint format test test-large bench clean

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip

$(INSTALLED): $(VENV_PYTHON) setup.cfg pyproject.toml
	$(VENV_PYTHON) -m pip install --quiet -e ".[test,crf,app,human]"
	touch $(INSTALLED)

# One seed of RMI, the LSTM baseline, LG-LSTM and the one-conv baseline (docs/synthetic_demo.md).
demo: $(INSTALLED)
	$(VENV_PYTHON) -m tf_recurrent_seg.demo $(DEMO_FLAGS)

# Every Table 5 model, three referring seeds, TFLite.
demo-full: $(INSTALLED)
	$(VENV_PYTHON) -m tf_recurrent_seg.demo --budget=full $(DEMO_FLAGS)

# A local page to try the demo's exported models (after `make demo`): docs/app.md.
app: $(INSTALLED)
	$(VENV_PYTHON) -m tf_recurrent_seg.cli.app --export_dir saved_models/demo_rmi \
		--parsing_export_dir saved_models/demo_lg_lstm $(APP_FLAGS)

showcase: $(INSTALLED)
	$(VENV_PYTHON) -m tf_recurrent_seg.demo.showcase $(SHOWCASE_FLAGS)

# ruff (a test extra) formats and lints the tree; settings in pyproject.toml.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(VENV_PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_FLAGS)

test-large: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -q -m large --durations=10 $(PYTEST_FLAGS)

bench: $(INSTALLED)
	$(VENV_PYTHON) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
