# syntax=docker/dockerfile:1
# The Cascade gateway: FastAPI + uvicorn, core dependencies only (no torch, no vLLM).
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t cascade/gateway:0.1.0 .
# Run: docker run -p 8000:8000 -v ./cascade.yaml:/etc/cascade/cascade.yaml:ro cascade/gateway:0.1.0
# Pin the base by digest in your registry mirror (docker buildx imagetools inspect python:3.11.11-slim-bookworm).

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cascade/ cascade/
COPY gateway/ gateway/
COPY router/ router/
COPY serving/ serving/
COPY logstore/ logstore/
COPY distill/ distill/
COPY evaluation/ evaluation/
# A wheel of the project (every package's source) and of its core dependencies only: no extras, so no
# torch, transformers or vLLM (distill/ imports those lazily; its image installs them).
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1
# The project's own wheel, built above from this source: its version is this checkout's.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels cascade-gateway \
    && groupadd --system --gid 10001 cascade \
    && useradd --system --uid 10001 --gid cascade --home-dir /var/lib/cascade --create-home cascade \
    && install -d -o cascade -g cascade /var/lib/cascade/spool /var/lib/cascade/state
# The spool (records kept while the database is down) and the state file (the promoted student) live
# here; mount volumes over them.
WORKDIR /var/lib/cascade
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["cascade"]
CMD ["serve", "--config", "/etc/cascade/cascade.yaml", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
