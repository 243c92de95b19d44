# The two commands a new user runs (see README.md):
#   make demo   set everything up and run a node on the embedded dev chain, with a walkthrough
#   make test   set everything up and run the whole test suite
# Both are idempotent: the venv and node_modules are rebuilt only when their pins change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint deps compile bench clean

deps: $(PIP_STAMP) $(NPM_STAMP)

# twistd finds its plugins in the twisted/plugins folders of sys.path, and an editable install's
# import hook does not put this checkout there: a .pth file does, so `twistd --help` lists
# perund. (-qq: setuptools' notice that the checkout's folders shadow installed ones, which
# is the point of an editable install.)
$(PIP_STAMP): constraints.txt setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -qq --disable-pip-version-check \
		-e '.[dev]'
	$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], \
		"perund-checkout.pth").write_text(sys.argv[1] + "\n")' '$(CURDIR)'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: deps
	$(PY) -m perund.cli.walkthrough

test: deps
	$(VENV)/bin/ruff check perund tests bench twisted
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check perund tests bench twisted
	$(VENV)/bin/mypy

compile: $(NPM_STAMP)
	node contracts/compile.js

bench: deps
	$(PY) bench/all.py

clean:
	rm -rf $(VENV) node_modules
