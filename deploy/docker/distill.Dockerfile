# syntax=docker/dockerfile:1
# The nightly re-distillation job: torch (CUDA build), transformers, peft, accelerate and the project.
# Build from the repository root:
#   docker build -f deploy/docker/distill.Dockerfile -t cascade/distill:0.1.0 .
# Run (one cycle): docker run --gpus all -v adapters:/adapters cascade/distill:0.1.0
# The CUDA runtime comes from the base; torch brings its own CUDA libraries and needs only the host driver.
# Pin the base by digest in your registry mirror (docker buildx imagetools inspect nvidia/cuda:12.8.1-...).

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.* python3.12-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv
# torch first, pinned: PyPI's torch for Linux x86_64 is the CUDA build.
RUN pip install torch==2.13.0 "transformers>=4.45,<5" "peft>=0.13" "accelerate>=1.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cascade/ cascade/
COPY gateway/ gateway/
COPY router/ router/
COPY serving/ serving/
COPY logstore/ logstore/
COPY distill/ distill/
COPY evaluation/ evaluation/
# The project from this checkout (its version is the source's own).
# hadolint ignore=DL3013
RUN pip install ".[distill]" \
    && groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid cascade --home-dir /var/lib/cascade --create-home cascade \
    && install -d -o cascade -g cascade /var/lib/cascade/distill /adapters
WORKDIR /var/lib/cascade
USER 10001:10001
# A batch job, not a server: nothing to probe while it runs (the Pushgateway and the job status report it).
HEALTHCHECK NONE
ENTRYPOINT ["cascade"]
CMD ["distill", "run", "--config", "/etc/cascade/cascade.yaml"]
