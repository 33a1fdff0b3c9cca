# The serving image: the `serve` extra only (no torch). The deployment issue completes it
# (multi-stage build, GPU variant, healthcheck on /healthz).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir ".[serve]" \
    && useradd --system --uid 10001 ranker
USER ranker
ENTRYPOINT ["ranker"]
CMD ["--help"]
