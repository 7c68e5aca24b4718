# The two commands of the README:  `make demo`  and  `make test`.
# Both do all set-up on a fresh Debian machine (Python 3.11, node 20, root) and are idempotent:
# each set-up step leaves a stamp in .stamps/ and reruns only when its inputs change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(abspath $(VENV))/bin
# A second venv for tests/hf with the newest transformers 4.x (.venv has the newest 5.x)
VENV_TF4 := .venv-tf4
TF4_BIN := $(abspath $(VENV_TF4))/bin
TRANSFORMERS_4 := 4.57.6
STAMPS := .stamps
export PATH := $(BIN):$(PATH)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# Keep the JupyterLab build of a dev install out of the user's home.
export JUPYTER_PLATFORM_DIRS := 1

.PHONY: demo demo-check test setup lint lint-py lint-ts check-auth pytest ui-test clean

# jupyter refuses to start as root without --allow-root; the README's machine runs as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# More `jupyter lab` options, e.g. make demo DEMO_FLAGS="--no-browser --port=8890"
DEMO_FLAGS ?=

## demo: set up, then open JupyterLab on the demo notebook (as root or as a normal user)
demo: setup
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(DEMO_FLAGS) examples/demo.ipynb

## demo-check: the demo command as root and as a new normal user on a fresh copy (~10 min)
demo-check: setup
	$(BIN)/python -m pytest tests/test_demo_command.py --fresh-setup -p no:cacheprovider -v

## test: set up, then lint, check handler authentication, run pytest and the Galata suite
test: setup $(STAMPS)/chromium $(STAMPS)/ui-tests
	$(MAKE) --no-print-directory lint check-auth pytest ui-test

setup: $(STAMPS)/python

$(STAMPS)/venv:
	mkdir -p $(STAMPS)
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

# torch first: on x86_64 Linux a plain `torch` requirement would pull a multi-GB CUDA build,
# so install the CPU build unless a torch is already there.
define install_torch
	@if ! $(1)/python -c "import torch" 2>/dev/null; then \
	  if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
	    $(1)/pip install -q torch==2.13.0; \
	  else $(1)/pip install -q torch; fi; \
	fi
endef

$(STAMPS)/torch: $(STAMPS)/venv
	$(call install_torch,$(BIN))
	touch $@

# The frontend sources are inputs too: a change to src/ or style/ must reach the labextension
# that the UI tests load. pip's build hook (jlpm install:extension) rebuilds only when src/ is
# newer than the last build, so build once more to pick up style/ changes.
FRONTEND_SRC := $(shell find src style -type f 2>/dev/null) tsconfig.json

$(STAMPS)/python: $(STAMPS)/torch pyproject.toml package.json yarn.lock $(FRONTEND_SRC)
	$(BIN)/pip install -q -e ".[dev,test,tensorflow]"
	$(BIN)/jlpm build
	$(BIN)/jupyter labextension develop --overwrite .
	$(BIN)/jupyter server extension enable --sys-prefix jupyter_modelsave
	touch $@

# tests/hf against transformers 4.x. The venv holds only transformers 4 and the hub and tokenizers
# it pins; a .pth file puts .venv's packages (torch, the package, pytest) after them, so torch and
# the rest are not installed twice (160 MB instead of 1.5 GB). USE_TF=0 at test time keeps
# transformers 4, which predates Keras 3, away from .venv's TensorFlow.
PURELIB := import sysconfig; print(sysconfig.get_path('purelib'))

$(STAMPS)/venv-tf4: $(STAMPS)/python
	mkdir -p $(STAMPS)
	rm -rf $(VENV_TF4)
	python3 -m venv $(VENV_TF4)
	echo "import site; site.addsitedir('$$($(BIN)/python -c "$(PURELIB)")')" \
	  > "$$($(TF4_BIN)/python -c "$(PURELIB)")/_jms_main_venv.pth"
	$(TF4_BIN)/python -m pip install -q "transformers==$(TRANSFORMERS_4)"
	touch $@

$(STAMPS)/chromium:
	mkdir -p $(STAMPS)
	@if [ ! -x /usr/bin/chromium ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi
	touch $@

$(STAMPS)/ui-tests: ui-tests/package.json ui-tests/package-lock.json
	mkdir -p $(STAMPS)
	cd ui-tests && npm ci --no-audit --no-fund
	touch $@

lint: lint-py lint-ts

lint-py:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-ts:
	@[ -d node_modules ] || $(BIN)/jlpm install --immutable
	$(BIN)/jlpm run lint:check

check-auth:
	$(BIN)/python scripts/check_auth.py

# the free disk first: the suite and its set-up need a few GB (a full disk fails tests at random);
# short tracebacks, so that a CI log shows each failure's error, not pages of library source
pytest: $(STAMPS)/venv-tf4
	@df -h . $${TMPDIR:-/tmp} | sed 's/^/disk: /'
	$(BIN)/python -m pytest --tb=short
	USE_TF=0 $(TF4_BIN)/python -m pytest --tb=short tests/hf

# flock: Galata's server needs port 8888, so two runs on one machine wait for each other
ui-test:
	cd ui-tests && flock /tmp/jms-galata.lock npx playwright test

clean:
	rm -rf $(STAMPS) $(VENV) $(VENV_TF4) node_modules lib jupyter_modelsave/labextension ui-tests/node_modules
