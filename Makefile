# The two commands a new user needs:  `make figures`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: env env-dev figures dictionaries test bench device-check clean

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# SAELens pins transformer-lens<4, so it goes in without its dependency resolver (see the file).
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-saelens.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-saelens.txt
	@# Debian's headless Chromium for tests/test_graph_viewer.py (skipped there without it).
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; } || echo "warning: could not install chromium" >&2
	touch $@

env: $(VENV)/.runtime
env-dev: $(VENV)/.dev

# The paper-figure suite on built-in offline defaults; report at runs/figures/report.md.
figures: env
	$(PY) experiments/figures.py --workdir=runs/figures

# Optional, longer: the graph entry's transcoders trained 5x as long (about 25 minutes on a
# 2-core CPU) into runs/figures/dictionaries; later `make figures` runs use them.
dictionaries: env
	$(PY) experiments/figures.py --workdir=runs/figures --dictionaries

# The whole test suite, on 8 simulated CPU devices (tests/__init__.py sets them); it ends with
# the slowest files. PYTEST_ARGS adds options, e.g. PYTEST_ARGS="-x --durations=20".
# PYTEST_WORKERS pytest-xdist processes share the files (a file stays in one process, so its
# module fixtures are built once); PYTEST_WORKERS=0 runs everything in this process.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
test: env-dev
	$(PY) -m pytest -q tests -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Every benchmark beside its peer, each in its own process: runs/bench/table.md (+ table.json).
bench: env-dev
	$(PY) experiments/bench_all.py --out_dir=runs/bench

# Once, on a machine with an accelerator (< 8 minutes on one H200): a table and runs/device_check.json.
# The peers (SAELens, TransformerLens) are optional: a missing one is a "peer not installed" row.
# No venv is built: GPU machines come with jax[cuda] and torch installed and often no network,
# so it uses .venv when there is one and the machine's python otherwise.
DEVICE_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
device-check:
	$(DEVICE_PY) experiments/device_check.py --out=runs/device_check.json

clean:
	rm -rf runs .pytest_cache
