# Darkroom developer tasks. Everything runs from .venv, which these rules create on first use
# and reinstall whenever pyproject.toml changes.
#
#   make run     start the whole app (simulator in demo mode, worker, beat, web) on PORT
#   make test    ruff check, then pytest; pass pytest options in PYTEST_ARGS
#   make test-fast  the same without the slow tests (real workers, browsers) and the drills
#   make lint    ruff check and ruff format --check
#   make clean   remove .venv, caches and var/'s runtime files; keeps the dev database

PYTHON ?= python3
PORT ?= 8000
PYTEST_ARGS ?=

VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: older than pyproject.toml means "install again".
INSTALLED := $(VENV)/.installed
VAR_DIR := $(or $(DARKROOM_VAR_DIR),var)

.DEFAULT_GOAL := help
.PHONY: help run test test-fast lint clean install migrate

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

run: migrate
	$(BIN)/python manage.py up --port $(PORT)

# Lint first: it takes a second, the suite takes minutes.
test: lint | $(VAR_DIR)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
	  echo "make test: pytest collected no tests, which counts as a failure" >&2; \
	fi; \
	exit $$status

test-fast:
	@$(MAKE) --no-print-directory test PYTEST_ARGS='-m "not slow and not drill" $(PYTEST_ARGS)'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts *.egg-info
	rm -rf $(VAR_DIR)/broker $(VAR_DIR)/static \
	  $(VAR_DIR)/test-*.sqlite3*
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

install: $(INSTALLED)

migrate: install | $(VAR_DIR)
	$(BIN)/python manage.py migrate --no-input

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	touch $@

$(BIN)/python:
	@command -v "$(PYTHON)" >/dev/null || { \
	  echo "make: $(PYTHON) not found. Darkroom needs Python 3.12 or newer:" \
	    "make $(MAKECMDGOALS) PYTHON=/path/to/python3.12" >&2; \
	  exit 1; }
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 12))' || { \
	  echo "make: Darkroom needs Python 3.12 or newer, but $(PYTHON) is" \
	    "$$("$(PYTHON)" -V 2>&1). Try: make $(MAKECMDGOALS) PYTHON=python3.12" >&2; \
	  exit 1; }
	"$(PYTHON)" -m venv $(VENV)

$(VAR_DIR):
	mkdir -p $@
