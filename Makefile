# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
# Debian packages the project needs (datasets shipped by Debian, read offline).
DEB_PACKAGES := dataset-fashion-mnist
PYTEST_ARGS ?=

.PHONY: quickstart test test-all venv debs benchmarks clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

quickstart: venv debs
	$(VENV)/bin/augtrain quickstart --data $(DATA)

test: venv debs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv debs
	$(PY) -m pytest $(PYTEST_ARGS)

benchmarks: venv debs
	$(PY) benchmarks/data_throughput.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
