"""Deployment files, checked without a Docker engine: compose, the Dockerfile, Prometheus config
and rules, the dashboard's queries, and a real Prometheus scraping the real service."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.docker.requirements import requirements
from deploy.stack_check import panels_without_data
from service.metrics import EXPORTED
from service.settings import Settings
from tests.service.conftest import free_port, live_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CI = os.environ.get("CI") == "true"
_METRIC = re.compile(r"\b(ranker_[a-z0-9_]+)\b")


def tool(name: str) -> str:
    """A checker binary: the venv's (pip-installed) or the system's; required in CI."""
    found = shutil.which(
        name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if found is None:
        if CI:
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_compose_file_is_valid(profile: str | None) -> None:
    command = [tool("docker-compose"), "-f", "docker-compose.yml"]
    if profile:
        command += ["--profile", profile]
    result = run(*command, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_scales_the_ranker_behind_one_port() -> None:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "ports" not in services["ranker"]  # replicas publish nothing: --scale works
    assert services["lb"]["ports"][0]["published"] == "8000"
    assert services["ranker"]["depends_on"]["index-loader"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["ranker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "readyz" in " ".join(services["ranker"]["healthcheck"]["test"])
    assert "--maxmemory" in services["redis"]["command"]


def test_dockerfile_lints_clean() -> None:
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_serving_images_install_no_torch_and_one_onnxruntime() -> None:
    for extra, runtime in (("serve", "onnxruntime"), ("serve-gpu", "onnxruntime-gpu")):
        listed = requirements(ROOT / "pyproject.toml", extra)
        names = {re.split(r"[\[<>=;~ ]", r)[0] for r in listed}
        assert "torch" not in names and not {n for n in names if n.startswith("ranker")}
        assert names & {"onnxruntime", "onnxruntime-gpu"} == {runtime}
        assert {"fastapi", "uvicorn", "redis", "numpy"} <= names  # serve-base expanded


def test_the_dockerfile_builds_offline_cpu_first_with_a_dependency_layer() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not dockerfile.startswith("# syntax=")  # BuildKit would fetch a frontend
    stages = {
        stage.split("\n", 1)[0].split(" AS ")[1]: stage for stage in dockerfile.split("\nFROM ")[1:]
    }
    # the classic builder builds every stage before its target: cpu never waits for CUDA
    assert list(stages) == ["cpu-wheel", "cpu", "gpu-wheel", "gpu"]
    for serving, extra in (("cpu", "serve"), ("gpu", "serve-gpu")):
        lines = stages[serving].splitlines()
        deps = next(i for i, line in enumerate(lines) if f"pyproject.toml {extra} " in line)
        code = lines.index(f"COPY --from={serving}-wheel /wheels /wheels")
        copies_before = [line for line in lines[:deps] if line.startswith("COPY")]
        assert copies_before == ["COPY pyproject.toml deploy/docker/requirements.py ./"]
        assert deps < code  # a code change leaves the dependency layer cached
        assert "USER 10001:10001" in stages[serving] and "HEALTHCHECK" in stages[serving]
        # the compiler stays in the wheel stage: the serving image installs no build tools
        assert "gcc" not in stages[serving] and "gcc" in stages[f"{serving}-wheel"]
        assert "COPY service ./service" in stages[f"{serving}-wheel"]


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    config = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def queried_metrics(expressions: list[str]) -> set[str]:
    """The ranker_* series names PromQL expressions read (histogram suffixes kept)."""
    return {name for expr in expressions for name in _METRIC.findall(expr)}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ranker.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def unknown_metrics(expressions: list[str]) -> set[str]:
    return queried_metrics(expressions) - EXPORTED


def test_dashboard_and_rules_query_only_metrics_the_service_exports() -> None:
    dashboard, rules = dashboard_expressions(), rule_expressions()
    assert len(dashboard) >= 12 and len(rules) >= 4
    assert unknown_metrics(dashboard) == set()
    assert unknown_metrics(rules) == set()
    # the check bites: a panel on a metric the service does not export is caught
    assert unknown_metrics([*dashboard, "rate(ranker_requests_totl[5m])"]) == {
        "ranker_requests_totl"
    }


def test_the_dashboard_covers_what_operators_need() -> None:
    read = queried_metrics(dashboard_expressions())
    for metric in (
        "ranker_requests_total",
        "ranker_request_duration_seconds_bucket",
        "ranker_stage_duration_seconds_bucket",
        "ranker_errors_total",
        "ranker_degraded_total",
        "ranker_index_misses_total",
        "ranker_candidates_per_request_bucket",
        "ranker_model_info",
        "ranker_index_info",
        "ranker_shadow_rank_disagreement_bucket",
    ):
        assert metric in read, metric


# --- a real scrape --------------------------------------------------------------------------


@pytest.fixture
def live_service(tiny_exports: dict[str, Any], tiny_snapshot: Any) -> Iterator[str]:
    settings = Settings(
        models=[tiny_exports["prectr"].package.folder, tiny_exports["vanilla"].package.folder],
        shadow_model="vanilla",  # so the shadow panels have data too
        snapshot=tiny_snapshot.folder,
        store="embedded",
        device="cpu",
    )
    with live_server(settings) as base:
        yield base


def test_a_real_prometheus_scrapes_the_service_and_every_dashboard_panel_has_data(
    live_service: str, tiny_snapshot: Any, tmp_path: Path
) -> None:
    from service.serve import example_request

    binary = tool("prometheus")
    target = live_service.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "ranker", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    body = example_request(tiny_snapshot.folder, candidates=8)
    p99_query = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(ranker_request_duration_seconds_bucket{status="200"}[30s])))'
    )
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as prom:
        try:
            api = f"http://127.0.0.1:{port}/api/v1"
            p99 = None
            empty_panels: list[str] = ["not evaluated yet"]
            deadline = time.monotonic() + 90
            with httpx.Client() as client:

                def query(expr: str) -> list[dict[str, Any]]:
                    reply = client.get(f"{api}/query", params={"query": expr}).json()
                    assert reply["status"] == "success", (expr, reply)
                    result: list[dict[str, Any]] = reply["data"]["result"]
                    return result

                while p99 is None or empty_panels:
                    assert prom.poll() is None, "prometheus exited"
                    assert time.monotonic() < deadline, f"p99 {p99}, no data: {empty_panels}"
                    for _ in range(20):
                        assert client.post(f"{live_service}/rank", json=body).status_code == 200
                    try:
                        result = query(p99_query)
                        empty_panels = panels_without_data(query)
                    except (httpx.TransportError, ValueError):
                        time.sleep(0.5)
                        continue
                    if result and result[0]["value"][1] not in ("NaN", "+Inf"):
                        p99 = float(result[0]["value"][1])
                    time.sleep(0.5)
                rules = client.get(f"{api}/rules").json()["data"]["groups"]
        finally:
            prom.terminate()
            prom.wait(timeout=20)
    assert math.isfinite(p99) and p99 > 0
    assert {rule["name"] for rule in rules[0]["rules"]} >= {
        "RankerLatencyP99High",
        "RankerNotReady",
    }
