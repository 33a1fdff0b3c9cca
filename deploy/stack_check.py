"""Assertions on a running compose stack (deploy/check calls each step by name).

Each step talks only to what a user of the stack would: the load balancer on :8000, Prometheus on
:9090, and `docker exec` into a replica where a worker is killed. Loads are bounded in count and
time and go to loopback only.

    python deploy/stack_check.py rank | targets N | rules | kill-worker CONTAINER WORKERS |
                                 dashboard | traffic N | scale-under-load COMPOSE... -- ARGS
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

LB = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090/api/v1"
DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "ranker.json"
ALERTS = {
    "RankerLatencyP99High",
    "RankerErrorRateHigh",
    "RankerDegradedRateHigh",
    "RankerNotReady",
    "RankerItemMissRateHigh",
}
#: Grafana's own variables, as Grafana would expand them at a 5 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
REQUEST = {
    "request_id": "stack-check",
    "user_id": "u125",
    "query": "swimsuit",
    "top_k": 3,
    "candidates": [
        {"item_id": "i51"},
        {"item_id": "i153"},
        {"item_id": "i453"},
        {"item_id": "new-item-1", "features": {"title": "swimsuit deluxe"}},
    ],
}


def log(message: str) -> None:
    sys.stdout.write(f"   {message}\n")
    sys.stdout.flush()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    """Poll ``check`` until it returns something truthy (its value) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError) as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(1.0)
    raise SystemExit(f"FAILED: {what} (last: {last!r})")


def prometheus_query(expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{PROMETHEUS}/query", params={"query": expr}, timeout=5).json()
    if reply.get("status") != "success":
        raise SystemExit(f"FAILED: Prometheus refused {expr!r}: {reply}")
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def rank() -> None:
    """A ranking through the load balancer: 200, top_k items, scores in descending order."""
    wait_for("ready through the load balancer", lambda: httpx.get(f"{LB}/readyz").is_success)
    response = httpx.post(f"{LB}/rank", json=REQUEST, timeout=10)
    if response.status_code != 200:
        raise SystemExit(f"FAILED: /rank answered {response.status_code}: {response.text}")
    body = response.json()
    scores = [item["score"] for item in body["items"]]
    if len(scores) != REQUEST["top_k"] or scores != sorted(scores, reverse=True):
        raise SystemExit(f"FAILED: not a ranking of top_k={REQUEST['top_k']}: {body}")
    log(f"ranked through nginx: {[item['item_id'] for item in body['items']]}")
    hidden = {
        path: httpx.request(method, f"{LB}{path}", timeout=5).status_code
        for method, path in (("POST", "/admin/reload"), ("GET", "/metrics"), ("GET", "/docs"))
    }
    if set(hidden.values()) != {404}:
        raise SystemExit(f"FAILED: internal routes reachable through nginx: {hidden}")
    log(f"not on the public port: {sorted(hidden)}")
    log(f"Server-Timing: {response.headers.get('server-timing')}")


def targets(expected: int) -> None:
    """Prometheus scrapes exactly ``expected`` ranker replicas, all up."""

    def up() -> bool:
        active = httpx.get(f"{PROMETHEUS}/targets", timeout=5).json()["data"]["activeTargets"]
        healthy = [t for t in active if t["labels"].get("job") == "ranker" and t["health"] == "up"]
        return len(healthy) == expected == len(active)

    wait_for(f"{expected} Prometheus targets up", up)
    log(f"prometheus targets up: {expected}")


def rules() -> None:
    """The alert rules are loaded (and evaluated) by the stack's Prometheus."""
    groups = wait_for(
        "Prometheus answers with its rules",
        lambda: httpx.get(f"{PROMETHEUS}/rules", timeout=5).json()["data"]["groups"],
    )
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    if not ALERTS <= loaded:
        raise SystemExit(f"FAILED: alert rules missing: {sorted(ALERTS - loaded)}")
    log(f"alert rules loaded: {sorted(loaded)}")


def ready_series(text: str) -> list[tuple[str, float]]:
    """The ``ranker_ready`` samples of an exposition text: (pid label, value)."""
    pattern = re.compile(r'^ranker_ready\{[^}]*pid="(\d+)"[^}]*\}\s+(\S+)$', re.MULTILINE)
    return [(pid, float(value)) for pid, value in pattern.findall(text)]


_IN_CONTAINER = """
import json, os, sys, urllib.request
def workers():
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        except OSError:
            continue
        if "spawn_main" in cmd and int(pid) != os.getpid():
            out.append(int(pid))
    return sorted(out)
if sys.argv[1] == "workers":
    print(json.dumps(workers()))
elif sys.argv[1] == "kill":
    os.kill(int(sys.argv[2]), 9)
else:
    print(urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=5).read().decode())
"""


def in_container(container: str, *args: str) -> str:
    docker = os.environ.get("DOCKER", "docker")
    command = [docker, "exec", container, "python", "-c", _IN_CONTAINER, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def kill_worker(container: str, workers: int) -> None:
    """``kill -9`` one uvicorn worker of a replica; after uvicorn respawns it, the replica
    exports one ``ranker_ready`` series per live worker, every one 1, none for the dead pid."""
    before = json.loads(in_container(container, "workers"))
    if len(before) != workers:
        raise SystemExit(f"FAILED: {container} runs workers {before}, expected {workers}")
    victim = before[0]
    in_container(container, "kill", str(victim))
    log(f"killed worker {victim} of {container} (workers were {before})")

    def respawned() -> list[int] | None:
        now = json.loads(in_container(container, "workers"))
        return now if len(now) == workers and victim not in now else None

    after = wait_for("the worker respawned", respawned)

    def counted() -> list[tuple[str, float]] | None:
        series = ready_series(in_container(container, "metrics"))
        pids = sorted(int(pid) for pid, _ in series)
        if pids == after and all(value == 1 for _, value in series):
            return series
        return None

    series = wait_for("ranker_ready counts the live workers only", counted)
    log(f"workers now {after}; ranker_ready series {series} (dead pid {victim} gone)")


def traffic(count: int) -> None:
    """``count`` rankings through the load balancer, every one a 200."""
    with httpx.Client(base_url=LB, timeout=10) as client:
        statuses = Counter(client.post("/rank", json=REQUEST).status_code for _ in range(count))
    if set(statuses) != {200}:
        raise SystemExit(f"FAILED: traffic answered {dict(statuses)}")
    log(f"{count} rankings through nginx: all 200")


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """Every panel query of the Grafana dashboard as (panel title, PromQL), Grafana's variables
    expanded."""
    panels = json.loads(path.read_text(encoding="utf-8"))["panels"]
    out = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def panels_without_data(query: Callable[[str], list[dict[str, Any]]]) -> list[str]:
    """The dashboard queries that return no finite value (empty list: every panel has data)."""
    empty = []
    for title, expr in dashboard_queries():
        values = [float(sample["value"][1]) for sample in query(expr)]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr} -> {values}")
    return empty


def dashboard() -> None:
    """Every panel of the dashboard shows data from this stack's Prometheus after traffic."""
    queries = dashboard_queries()
    wait_for(
        "every dashboard panel has data",
        lambda: not panels_without_data(prometheus_query),
        timeout_s=60,
    )
    log(f"all {len(queries)} dashboard queries of {DASHBOARD.name} return data")
    ready = prometheus_query(queries[[t for t, _ in queries].index("Ready replicas")][1])
    log(f"Ready replicas panel: {ready[0]['value'][1]}")


def scale_under_load(compose: Sequence[str], replicas: int, clients: int = 4) -> None:
    """Scale the ranker service to ``replicas`` while ``clients`` threads keep ranking through
    the load balancer (bounded: at most 60 s and 4,000 requests); no request may fail."""
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=LB, timeout=10) as http:
            while not stop.is_set() and sum(outcomes.values()) < 4000:
                try:
                    outcome = str(http.post("/rank", json=REQUEST).status_code)
                except httpx.HTTPError as err:
                    outcome = type(err).__name__
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(2)
    command = [*compose, "up", "-d", "--no-build", "--scale", f"ranker={replicas}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    time.sleep(3)  # keep ranking on what is left
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(command)}: {result.stderr}")
    failed = {k: v for k, v in outcomes.items() if k != "200"}
    log(
        f"scaled to {replicas} under load: {sum(outcomes.values())} requests in {elapsed:.1f} s, "
        f"{outcomes['200']} answered 200, failed {failed or 0}"
    )
    if failed or not outcomes["200"]:
        raise SystemExit(f"FAILED: requests failed while scaling down: {failed}")


def main(argv: Sequence[str]) -> None:
    step, args = argv[0], list(argv[1:])
    if step == "rank":
        rank()
    elif step == "targets":
        targets(int(args[0]))
    elif step == "rules":
        rules()
    elif step == "kill-worker":
        kill_worker(args[0], int(args[1]))
    elif step == "traffic":
        traffic(int(args[0]))
    elif step == "dashboard":
        dashboard()
    elif step == "scale-under-load":
        split = args.index("--")
        scale_under_load(args[:split], int(args[split + 1]))
    else:
        raise SystemExit(f"unknown step {step!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
