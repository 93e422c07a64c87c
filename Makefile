# Two commands from a fresh clone with only python3 and make:
#   make demo   run the main job against the embedded simulator
#   make test   build the environment (with the third-party clients tests/thirdparty
#               runs against the simulator), then lint, type-check and test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit env clean serve provision

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev,thirdparty]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/bambu demo

serve: $(STAMP)
	$(BIN)/bambu demo --serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)
	$(BIN)/mypy

# The real servers the tests start (mosquitto...): installed with apt-get when
# run as root, otherwise their tests are skipped with one line (failed under CI=true).
provision: $(STAMP)
	$(BIN)/python tests/binaries.py provision

# The tests mostly wait on sockets, so more workers than cores pays off (2 cores:
# 9 min in one process, about 5 in three); TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= 3
unit: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_JOBS) tests

test: lint types provision unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
