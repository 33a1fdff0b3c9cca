"""`ranker serve` (uvicorn over `create_app`) and `ranker demo` (serve the demo artifacts and send
one example request).

Configuration is the ``RANKER_*`` environment (service/settings.py); the flags here only say how
to run the process. With ``--workers N`` each worker is a process with its own models and store
connection, and Prometheus metrics are aggregated through ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
temporary folder unless set).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn


def _serve_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    return parser


def serve(argv: Sequence[str]) -> int:
    parser = _serve_parser("ranker serve")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="asyncio",
        help="event loop (asyncio: a 200-candidate request took ~0.4 ms less on it than on "
        "uvloop here, pipelined Redis reads included)",
    )
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send its request head before it is closed",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=2048,
        help="open connections and requests per worker; past it uvicorn answers 503",
    )
    args = parser.parse_args(argv)
    # Read by service.protocol in every worker process (they inherit the environment).
    os.environ["RANKER_HEAD_TIMEOUT_S"] = str(args.head_timeout)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ranker-metrics-")
    from service.metrics_folder import reset_multiprocess_dir

    reset_multiprocess_dir()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # one line per request costs more than ranking it
        loop=args.loop,
        http="service.protocol:HeadTimeoutProtocol",
        limit_concurrency=args.max_connections,
    )
    return 0


def example_request(snapshot_dir: Path, candidates: int = 20) -> dict[str, Any]:
    """A realistic request from a snapshot: a user with history, a known query with its
    labelled candidates, and one item the index has never seen."""
    from service.index.snapshot import Snapshot

    s = Snapshot(snapshot_dir)
    user_row = int(np.argmax(np.diff(s.history_offsets)))  # the longest history
    query_row = int(s.pair_query[len(s.pair_query) // 2])
    pair_rows = np.flatnonzero(np.asarray(s.pair_query) == query_row).tolist()
    items = [s.item_key[int(s.pair_item[r])] for r in pair_rows[:candidates]]
    return {
        "request_id": "demo-1",
        "user_id": s.user_key[user_row],
        "query": s.query_text[query_row],
        "candidates": [{"item_id": i} for i in items]
        + [{"item_id": "new-item-1", "features": {"title": s.query_text[query_row] + " deluxe"}}],
        "top_k": 10,
        "explain": True,
    }


def compact_json(body: dict[str, Any]) -> str:
    """JSON with one line per top-level field and per list element: readable, and short."""
    lines = ["{"]
    for i, (key, value) in enumerate(body.items()):
        end = "," if i < len(body) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {json.dumps(key)}: [")
            lines += [
                f"    {json.dumps(v)}{',' if j < len(value) - 1 else ''}"
                for j, v in enumerate(value)
            ]
            lines.append(f"  ]{end}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{end}")
    return "\n".join([*lines, "}"])


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST ``body`` as JSON) with the standard library: the status, the headers
    (lower-case names) and the body; status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def demo(argv: Sequence[str]) -> int:
    parser = _serve_parser("ranker demo")
    parser.add_argument("--packages", type=Path, default=Path("artifacts/demo/packages"))
    parser.add_argument("--snapshot", type=Path, default=Path("artifacts/demo/snapshot"))
    parser.add_argument("--version", default="demo", help="package version to serve")
    parser.add_argument(
        "--exit-after-request", action="store_true", help="stop after printing the response"
    )
    args = parser.parse_args(argv)
    from service.app import create_app
    from service.settings import Settings

    packages = [args.packages / name / args.version for name in ("prectr", "vanilla")]
    settings = Settings(
        models=packages,
        default_model="prectr",
        shadow_model="vanilla",
        store="embedded",
        snapshot=args.snapshot,
        enable_docs=True,  # the demo points people at /docs
    )
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )
    server = uvicorn.Server(config)

    def run() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind: the loop below reports it
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    base = f"http://{args.host}:{args.port}"
    deadline = time.monotonic() + 120
    # Our own server must be listening before anything is asked: another server on the port
    # would otherwise answer for it (uvicorn sets `started` once it has bound the socket).
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            print(f"ranker demo: could not serve on {args.host}:{args.port} (in use? pass --port)")
            server.should_exit = True
            return 1
        time.sleep(0.1)
    while _http(f"{base}/readyz")[0] != 200:
        if time.monotonic() > deadline or not thread.is_alive():
            print("ranker demo: the service did not become ready")
            server.should_exit = True
            return 1
        time.sleep(0.2)
    request = example_request(args.snapshot, candidates=8)
    print(f"POST {base}/rank")
    print(compact_json(request))
    status, headers, body = _http(f"{base}/rank", request)
    print(f"-> {status}, Server-Timing: {headers.get('server-timing')}")
    print(compact_json(json.loads(body)))
    if args.exit_after_request:
        server.should_exit = True
        thread.join(timeout=10)
        return 0 if status == 200 else 1
    print(f"serving on {base} (docs at {base}/docs); Ctrl-C stops")
    try:
        thread.join()
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)
    return 0


def main(command: str, argv: Sequence[str]) -> int:
    """Entry point the `ranker` dispatcher calls."""
    if command == "serve":
        return serve(argv)
    if command == "demo":
        return demo(argv)
    raise SystemExit(f"service.serve has no command {command!r}")
