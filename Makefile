# Two entry points a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint typecheck ruff venv bench wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Initialises a node on first run (asks for workspace, user and passphrase), then opens the console.
run: $(STAMP)
	$(BIN)/rallypoint console

# Every tier (tests/unit, contracts, flows, console, system); test-fast leaves out the system tier
# (real processes, sockets, namespaces, the image) and takes a few minutes.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not system" $(PYTEST_ARGS)

# Strict typing of the three packages and the linter over the whole tree (pyproject.toml configures
# both); `make -k lint` runs both even when the first fails.
lint: typecheck ruff

typecheck: $(STAMP)
	$(BIN)/mypy --strict appliance sync tui

ruff: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/store.py --quick
	$(BIN)/python bench/sneakernet.py --quick
	$(BIN)/python bench/lan.py --quick
	$(BIN)/python bench/console.py --quick
	$(BIN)/python bench/cli.py --quick

# Three nodes on this machine (network namespaces as root, else loopback), then alpha's console;
# the scenario partitions charlie and heals it; lab-down removes it all (images/lab/README.md).
.PHONY: lab lab-scenario lab-down
lab: $(STAMP)
	$(BIN)/python images/lab/lab.py up

lab-scenario: $(STAMP)
	$(BIN)/python images/lab/lab.py scenario

lab-down: $(STAMP)
	$(BIN)/python images/lab/lab.py down

# The project's wheel (dist/), what the appliance image and the Vagrant lab install. build/ goes
# first: setuptools would ship modules an older tree left there.
wheel: $(STAMP)
	rm -rf build dist/rallypoint-*.whl
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info
