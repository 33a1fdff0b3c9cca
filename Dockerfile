# syntax=docker/dockerfile:1
# The serving image: the `serve` extra only (FastAPI, ONNX Runtime, Redis, faiss; never torch).
#
#   docker build -t ranker .                      # CPU (python:3.11-slim)
#   docker build -t ranker:gpu --target gpu .     # CUDA 13 + cuDNN 9, what onnxruntime-gpu needs
#
# Both run `ranker serve` as a non-root user and read RANKER_* settings (README: The service).
# Model packages and index snapshots are mounted (docker-compose.yml mounts ./artifacts).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# --- build: the project's own wheel (only service/ goes in: the image needs nothing else) ---
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --upgrade "pip>=24" \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- gpu: the same service on the CUDA runtime base onnxruntime-gpu needs ---
FROM ${CUDA_IMAGE} AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ranker-metrics \
    PATH=/opt/venv/bin:$PATH \
    RANKER_DEVICE=cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /dist /dist
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir "$(ls /dist/ranker-*.whl)[serve]" \
    && rm -rf /dist \
    && groupadd --system --gid 10001 ranker \
    && useradd --system --uid 10001 --gid ranker --home-dir /app --create-home ranker \
    && mkdir -p /tmp/ranker-metrics && chown ranker:ranker /tmp/ranker-metrics
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["ranker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# --- cpu: the default serving image (the last stage: what a plain `docker build .` makes) ---
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ranker-metrics
COPY --from=build /dist /dist
RUN pip install --no-cache-dir "$(ls /dist/ranker-*.whl)[serve]" \
    && rm -rf /dist \
    && groupadd --system --gid 10001 ranker \
    && useradd --system --uid 10001 --gid ranker --home-dir /app --create-home ranker \
    && mkdir -p /tmp/ranker-metrics && chown ranker:ranker /tmp/ranker-metrics
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Liveness only: readiness (models warm, index usable) is /readyz, used by compose's healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["ranker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
