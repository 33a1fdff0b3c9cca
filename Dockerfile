# The serving images: the `serve` extra only (FastAPI, ONNX Runtime, Redis, faiss; never torch).
#
#   docker build -t ranker --target cpu .         # CPU (python:3.11-slim, onnxruntime)
#   docker build -t ranker:gpu --target gpu .     # CUDA 13 + cuDNN 9 (onnxruntime-gpu)
#
# Both run `ranker serve` as a non-root user and read RANKER_* settings (README: The service).
# Model packages and index snapshots are mounted (docker-compose.yml mounts ./artifacts).
#
# Layout, on purpose:
# - `cpu` comes before `gpu`: the classic builder builds every stage up to its target, so a CPU
#   build never touches the multi-GB CUDA base. A plain `docker build .` builds `gpu` (the last
#   stage); name the target.
# - No `# syntax=` line: BuildKit would fetch that frontend from a registry, and offline
#   (air-gapped) builds must work (deploy/check builds here with no registry).
# - Dependencies are installed in a layer keyed on pyproject.toml (and the script that reads
#   it): a code change rebuilds only the last layers, in seconds.
# - The package has a C part (service/_kernels.c, the request path's per-candidate loops): each
#   serving stage installs a wheel built in a `*-wheel` stage on the same base, which has the
#   compiler; the serving images carry none.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# --- cpu-wheel: the package compiled on the cpu stage's own base (the same Python) ---
FROM ${PYTHON_IMAGE} AS cpu-wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Python's headers: the official image has its own; a Debian one needs python3-dev.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if ! python -c "import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))"; then \
        apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- cpu: the default serving image ---
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ranker-metrics
WORKDIR /src
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python requirements.py pyproject.toml serve > requirements.txt \
    && pip install -r requirements.txt
COPY --from=cpu-wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && rm -rf /src/* /wheels \
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

# --- gpu-wheel: the package compiled on the gpu stage's own base (its Python 3) ---
FROM ${CUDA_IMAGE} AS gpu-wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- gpu: the same service on the CUDA runtime base onnxruntime-gpu needs ---
FROM ${CUDA_IMAGE} AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ranker-metrics \
    PATH=/opt/venv/bin:$PATH \
    RANKER_DEVICE=cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python requirements.py pyproject.toml serve-gpu > requirements.txt \
    && pip install -r requirements.txt
COPY --from=gpu-wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && rm -rf /src/* /wheels \
    && groupadd --system --gid 10001 ranker \
    && useradd --system --uid 10001 --gid ranker --home-dir /app --create-home ranker \
    && mkdir -p /tmp/ranker-metrics && chown ranker:ranker /tmp/ranker-metrics
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["ranker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
