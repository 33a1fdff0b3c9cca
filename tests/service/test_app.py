"""The service through HTTP: the ASGI app with its lifespan (TestClient), or a live uvicorn."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.index.keys import KeySchema
from service.index.loader import load_snapshot
from service.index.snapshot import Snapshot
from service.metrics import EXPORTED
from service.ranking import rank_disagreement
from service.routing import Router
from service.settings import Settings
from tests.service.conftest import RedisServer, live_server

MakeSettings = Callable[..., Settings]


def _request(s: Snapshot, n: int = 12, **extra: Any) -> dict[str, Any]:
    query_row = int(s.pair_query[len(s.pair_query) // 3])
    rows = np.flatnonzero(np.asarray(s.pair_query) == query_row)[:n]
    return {
        "user_id": s.user_key[int(np.argmax(np.diff(s.history_offsets)))],
        "query": s.query_text[query_row],
        "candidates": [{"item_id": s.item_key[int(s.pair_item[r])]} for r in rows],
        **extra,
    }


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        yield client


def test_every_answer_says_how_its_query_was_resolved_and_whether_its_user_was_known(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    """An unresolved query and a borrowed one used to look like an exact one: the response
    now says which it was (and from what and how close, when borrowed), and whether the index
    knew the user."""
    known = _request(tiny_snapshot)
    matcher = tiny_snapshot.query_matcher()
    paraphrase = next(
        variant
        for text in (tiny_snapshot.query_text[r] for r in range(1, len(tiny_snapshot.query_text)))
        for variant in (f"{text} today", " ".join(text.split()[:-1]) + " thing")
        if matcher.match(variant).kind == "nearest"
    )
    cases = {
        "exact": known,
        "borrowed": {**known, "query": paraphrase},
        "none": {**known, "query": "zzqx vvkp"},
        "empty": {**known, "query": ""},
    }
    with serving(make_settings()) as client:
        answers = {name: client.post("/rank", json=body).json() for name, body in cases.items()}
        stranger = client.post("/rank", json={**known, "user_id": "never-seen"}).json()
    for name, answer in answers.items():
        assert answer["resolution"]["query"] == name, answer["resolution"]
        assert answer["resolution"]["user_known"] is True
    borrowed = answers["borrowed"]["resolution"]
    assert borrowed["borrowed_from"] == matcher.match(paraphrase).matched_text
    assert 0 < borrowed["similarity"] < 1
    assert answers["exact"]["resolution"]["borrowed_from"] is None
    assert stranger["resolution"]["user_known"] is False


@pytest.mark.parametrize("model", ["prectr", "vanilla"])
def test_happy_path_ranks_every_candidate(
    make_settings: MakeSettings, tiny_snapshot: Snapshot, model: str
) -> None:
    body = _request(tiny_snapshot, model=model, request_id="r-1")
    answered = f'ranker_requests_total{{arm="request",model="{model}",status="200"}}'
    stage = f'ranker_stage_duration_seconds_count{{model="{model}",stage="inference"}}'
    with serving(make_settings()) as client:
        before = _metric(client, answered), _metric(client, stage)
        response = client.post("/rank", json=body)
        v1 = client.post("/v1/rank", json=body)
        counted = _metric(client, answered) - before[0], _metric(client, stage) - before[1]
    assert counted == (2, 2)  # each answer is counted, and each of its stages timed
    assert response.status_code == 200 and v1.status_code == 200
    out = response.json()
    assert out["request_id"] == "r-1"
    assert out["model"] == {"name": model, "version": "1", "arm": "request"}
    scores = [item["score"] for item in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in out["items"]] == list(range(1, len(scores) + 1))
    assert {item["item_id"] for item in out["items"]} == {c["item_id"] for c in body["candidates"]}
    assert all(0.0 < s < 1.0 for s in scores)
    assert set(out["timing_ms"]) == {"queue", "parse", "fetch", "assemble", "inference", "total"}
    assert out["degraded"] == []
    assert "inference;dur=" in response.headers["server-timing"]
    assert [i["score"] for i in v1.json()["items"]] == scores  # deterministic


def test_the_total_counts_from_the_arrival_and_holds_every_stage(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    """Over real HTTP a request waits before its handler (``queue``): the total is the server's
    whole time, so every stage lies inside it, as inside the echo floors the bench compares it
    with (they count from the arrival too)."""
    body = _request(tiny_snapshot)
    with (
        live_server(make_settings(enable_echo=True)) as base,
        httpx.Client(base_url=base, timeout=5) as client,
    ):
        timings = [client.post("/rank", json=body).json()["timing_ms"] for _ in range(20)]
        echo = client.post("/v1/echo", json=body).json()["timing_ms"]
    for timing in timings:
        stages = sum(ms for stage, ms in timing.items() if stage != "total")
        assert timing["queue"] > 0
        assert timing["total"] >= stages - 0.005  # each stage is rounded to a microsecond
    assert echo["total"] >= echo["parse"] > 0


def test_top_k_and_explain_consistent_with_the_score(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    with serving(make_settings()) as client:
        out = client.post("/rank", json=_request(tiny_snapshot, top_k=5, explain=True)).json()
    assert len(out["items"]) == 5
    for item in out["items"]:
        e = item["explain"]
        assert len(e["p_rsl"]) == 4 and len(e["p_click_given_rsl"]) == 4
        assert sum(e["p_rsl"]) == pytest.approx(1.0, abs=1e-5)
        f = float(np.clip(np.dot(e["p_rsl"], e["p_click_given_rsl"]), 1e-6, 1 - 1e-6))
        tau = e["tau"]
        assert item["score"] == pytest.approx(tau * f / (1 - f + tau * f), abs=1e-5)


def test_a_top_k_past_the_candidates_answers_every_candidate(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    body = _request(tiny_snapshot)
    with serving(make_settings()) as client:
        answers = [
            client.post("/rank", json={**body, "top_k": top_k}) for top_k in (10**30, 2**63, 1)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [len(a.json()["items"]) for a in answers] == [len(body["candidates"])] * 2 + [1]


LIMITS = {"max_candidates": 20, "max_string_length": 40, "max_body_bytes": 4096}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "q", "candidates": [{"item_id": "a"}]}, 422, "missing_field"),
        ({"user_id": 7, "query": "q", "candidates": [{"item_id": "a"}]}, 422, "wrong_type"),
        ({"user_id": "u", "query": "q", "candidates": "a"}, 422, "wrong_type"),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": "a"}], "x": 1},
            422,
            "unknown_field",
        ),
        ({"user_id": "u", "query": "q", "candidates": []}, 422, "empty_candidates"),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": "a"}, {"item_id": "a"}]},
            422,
            "duplicate_candidates",
        ),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": f"i{i}"} for i in range(21)]},
            413,
            "too_many_candidates",
        ),
        (
            {"user_id": "u" * 41, "query": "q", "candidates": [{"item_id": "a"}]},
            422,
            "string_too_long",
        ),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": "a"}, {"item_id": "b" * 41}]},
            422,
            "string_too_long",
        ),
        (
            {
                "user_id": "u",
                "query": "q",
                "candidates": [{"item_id": "a"}, {"item_id": "b", "features": {"title": "t" * 41}}],
            },
            422,
            "string_too_long",
        ),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": "a"}], "model": "nope"},
            422,
            "unknown_model",
        ),
        (
            {"user_id": "u", "query": "q", "candidates": [{"item_id": "a"}], "top_k": 0},
            422,
            "invalid_value",
        ),
    ],
)
def test_each_class_of_bad_input_has_its_own_code(
    make_settings: MakeSettings, body: dict[str, Any], status: int, code: str
) -> None:
    with serving(make_settings(**LIMITS)) as client:
        response = client.post("/rank", json=body, headers={"X-Request-ID": "bad-1"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code and problem["status"] == status
    assert problem["request_id"] == "bad-1" and problem["detail"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (
            b'{"user_id": "u", "query": "q", "candidates": [{"item_id": "a", '
            b'"features": {"item_category": NaN}}]}',
            422,
            "non_finite_feature",
        ),
        (
            b'{"user_id": "u", "query": "q", "candidates": [{"item_id": "a", '
            b'"features": {"item_brand": Infinity}}]}',
            422,
            "non_finite_feature",
        ),
        (b'{"user_id": "u", "query": ', 400, "invalid_json"),
        (
            b'{"user_id": "u", "query": "' + b"q" * 5000 + b'", "candidates": []}',
            413,
            "body_too_large",
        ),
    ],
)
def test_raw_bodies_non_finite_broken_and_oversized(
    make_settings: MakeSettings, raw: bytes, status: int, code: str
) -> None:
    with serving(make_settings(**LIMITS)) as client:
        response = client.post("/rank", content=raw, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_unknown_items_are_flagged_scored_and_counted(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    body = _request(tiny_snapshot, n=4)
    body["candidates"] += [
        {"item_id": "never-seen"},
        {"item_id": "new-with-features", "features": {"item_category": 2, "title": "x"}},
    ]
    with serving(make_settings()) as client:
        before = _metric(client, 'ranker_index_misses_total{kind="item"}')
        out = client.post("/rank", json=body).json()
        after = _metric(client, 'ranker_index_misses_total{kind="item"}')
    flags = {item["item_id"]: item.get("flags", []) for item in out["items"]}
    assert flags["never-seen"] == ["unknown_item"]
    assert flags["new-with-features"] == ["unknown_item", "request_features"]
    assert all(not flags[c["item_id"]] for c in body["candidates"][:4])
    assert after - before == 2
    assert len(out["items"]) == 6


def test_an_empty_query_is_a_recommendation_request(
    make_settings: MakeSettings,
    tiny_snapshot: Snapshot,
    tiny_exports: dict[str, Any],
    tmp_path: Path,
) -> None:
    body = _request(tiny_snapshot) | {"query": "", "model": "prectr"}
    package = tiny_exports["prectr"].package
    assert package.manifest.empty_query_share > 0  # the tiny world has recommendation requests
    with serving(make_settings()) as client:
        out = client.post("/rank", json=body).json()
    assert out["degraded"] == [] and len(out["items"]) == len(body["candidates"])
    assert not any("approximated_pair" in item.get("flags", []) for item in out["items"])

    search_only = tmp_path / "prectr"  # the same model, as if trained on search requests only
    shutil.copytree(package.folder, search_only)
    manifest = json.loads((search_only / "manifest.json").read_text())
    manifest["empty_query_share"] = 0.0
    (search_only / "manifest.json").write_text(json.dumps(manifest))
    settings = make_settings(models=[search_only])
    with serving(settings) as client:
        untrained = client.post("/rank", json=body).json()
        searched = client.post("/rank", json=_request(tiny_snapshot)).json()
    assert untrained["degraded"] == ["empty_query_untrained"]
    assert searched["degraded"] == []


def _metric(client: TestClient, prefix: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((prefix + " ", prefix + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_readiness_models_and_health(make_settings: MakeSettings) -> None:
    with serving(make_settings()) as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        ready = client.get("/readyz")
        models = client.get("/models").json()
        missing = client.get("/nope")
    assert ready.status_code == 200 and ready.json()["index_version"] == "tiny"
    names = {m["name"]: m for m in models["models"]}
    assert set(names) == {"prectr", "vanilla"}
    assert names["prectr"]["providers"] == ["CPUExecutionProvider"]
    assert names["prectr"]["buckets"] == [16, 64, 256]
    assert models["index"]["version"] == "tiny" and models["default"] == "prectr"
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_ab_arms_split_users_by_md5_within_a_point() -> None:
    router = Router({"prectr": 70, "vanilla": 30}, default="prectr")
    arms = [router.route(f"user-{i}", None).arm for i in range(10_000)]
    assert abs(arms.count("prectr") / 10_000 - 0.70) < 0.01
    assert abs(arms.count("vanilla") / 10_000 - 0.30) < 0.01
    assert router.route("user-1", None) == router.route("user-1", None)  # sticky
    assert router.route("user-1", "vanilla").arm == "request"


def test_the_response_names_the_arm_and_the_shadow_is_measured(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    settings = make_settings(arms={"prectr": 50, "vanilla": 50}, shadow_model="vanilla")
    seen: set[str] = set()
    with serving(settings) as client:
        before = _metric(client, "ranker_shadow_rank_disagreement_count")
        for i in range(30):
            body = _request(tiny_snapshot) | {"user_id": f"user-{i}"}
            out = client.post("/rank", json=body).json()
            assert out["model"]["arm"] == out["model"]["name"]
            seen.add(out["model"]["arm"])
        deadline = time.monotonic() + 5  # shadow scoring runs off the response path
        while _metric(client, "ranker_shadow_rank_disagreement_count") == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert seen == {"prectr", "vanilla"}


def test_rank_disagreement_is_zero_for_the_same_order_and_two_for_the_reverse() -> None:
    a = np.array([0.1, 0.5, 0.3])
    assert rank_disagreement(a, a * 2) == pytest.approx(0.0)
    assert rank_disagreement(a, -a) == pytest.approx(2.0)


def test_every_documented_metric_is_exported(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    settings = make_settings(shadow_model="vanilla", fail_on_store_error=False)
    with serving(settings) as client:
        body = _request(tiny_snapshot)
        body["candidates"].append({"item_id": "unknown"})
        client.post("/rank", json=body)
        client.post("/rank", json={"user_id": "u"})  # an error
        client.post("/admin/reload", json={"path": "/nowhere"}, headers=_admin())  # refused
        client.app.state.service.store = _BrokenStore()  # type: ignore[attr-defined]
        client.post("/rank", json=body)  # degraded
        client.get("/readyz")
        time.sleep(0.2)  # the shadow
        exposition = client.get("/metrics").text
    names = {
        line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line[:1] != "#"
    }
    assert EXPORTED <= names, sorted(EXPORTED - names)


class _BrokenStore:
    def prefetch(self, *args: Any) -> None:
        return None

    async def fetch(self, *args: Any) -> Any:
        from service.store import IndexUnavailable

        raise IndexUnavailable("down for the test")

    async def check(self) -> Any:
        from service.store import IndexUnavailable

        raise IndexUnavailable("down for the test")

    async def close(self) -> None:
        return None


def _admin(token: str = "secret") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admin_needs_the_token(make_settings: MakeSettings, tiny_exports: dict[str, Any]) -> None:
    path = str(tiny_exports["vanilla"].package.folder)
    with serving(make_settings()) as client:
        assert client.post("/admin/reload", json={"path": path}).status_code == 401
        wrong = client.post("/admin/reload", json={"path": path}, headers=_admin("nope"))
        ok = client.post("/admin/reload", json={"path": path}, headers=_admin())
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    assert ok.status_code == 200 and ok.json()["replaced"] == "1"


# --- live server: Redis degradation and recovery, reload under traffic ------------------------


def _load(server: RedisServer, snapshot: Snapshot) -> None:
    client = redis.Redis.from_url(server.url)
    load_snapshot(snapshot, client, KeySchema("rank"), grace_s=0)
    client.close()


def test_redis_down_degrades_within_the_deadline_then_recovers(
    redis_settings: Settings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    _load(private_redis, tiny_snapshot)
    body = _request(tiny_snapshot)
    with live_server(redis_settings) as base, httpx.Client(base_url=base, timeout=5) as client:
        healthy = client.post("/rank", json=body).json()
        assert healthy["degraded"] == [] and healthy["index_version"].startswith("1-")

        private_redis.stop()
        down = client.post("/rank", json=body)  # a hang would trip the client's 5 s timeout
        not_ready = client.get("/readyz")
        assert down.status_code == 200
        assert down.json()["degraded"] == ["store_unavailable"]
        assert len(down.json()["items"]) == len(body["candidates"])
        assert all("unknown_item" in i["flags"] for i in down.json()["items"])
        assert not_ready.status_code == 503 and not_ready.headers["retry-after"]

        private_redis.start()  # an empty server again (nothing is kept on disk)
        _load(private_redis, tiny_snapshot)
        deadline = time.monotonic() + 10
        while True:
            again = client.post("/rank", json=body).json()
            if not again["degraded"]:
                break
            assert time.monotonic() < deadline, again
            time.sleep(0.1)
        assert [i["score"] for i in again["items"]] == [i["score"] for i in healthy["items"]]
        assert client.get("/readyz").status_code == 200


def test_a_slow_store_times_out_into_a_degraded_answer(
    redis_settings: Settings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    _load(private_redis, tiny_snapshot)
    body = _request(tiny_snapshot)
    with live_server(redis_settings) as base, httpx.Client(base_url=base, timeout=5) as client:
        assert client.post("/rank", json=body).json()["degraded"] == []
        admin = redis.Redis.from_url(private_redis.url)
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        slow = client.post("/rank", json=body).json()
        admin.close()
    assert slow["degraded"] in (["store_timeout"], ["store_unavailable"])


def test_fail_on_store_error_answers_503_instead(
    make_settings: MakeSettings, tiny_snapshot: Snapshot, private_redis: RedisServer
) -> None:
    _load(private_redis, tiny_snapshot)
    settings = make_settings(
        store="redis", redis_url=private_redis.url, fail_on_store_error=True, store_timeout_ms=100
    )
    with live_server(settings) as base, httpx.Client(base_url=base, timeout=5) as client:
        private_redis.stop()
        response = client.post("/rank", json=_request(tiny_snapshot))
    assert response.status_code == 503 and response.json()["code"] == "store_unavailable"
    assert response.headers["retry-after"]


def test_reload_under_concurrent_requests_fails_none_and_refuses_a_broken_package(
    make_settings: MakeSettings,
    tiny_snapshot: Snapshot,
    tiny_exports: dict[str, Any],
    tmp_path: Path,
) -> None:
    source = tiny_exports["prectr"].package.folder
    v2 = tmp_path / "prectr-2"
    shutil.copytree(source, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "2"
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    broken = tmp_path / "prectr-broken"
    shutil.copytree(v2, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    body = _request(tiny_snapshot, model="prectr")

    async def traffic(base: str) -> tuple[list[int], set[str], list[int]]:
        statuses: list[int] = []
        versions: set[str] = set()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    response = await client.post("/rank", json=body)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        versions.add(response.json()["model"]["version"])

            workers = [asyncio.create_task(worker()) for _ in range(8)]
            await asyncio.sleep(0.3)
            reloads = []
            for path in (broken, v2, broken):
                reply = await client.post(
                    "/admin/reload", json={"path": str(path)}, headers=_admin()
                )
                reloads.append(reply.status_code)
                await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*workers)
        return statuses, versions, reloads

    with live_server(make_settings(package_root=tmp_path)) as base:
        statuses, versions, reloads = asyncio.run(traffic(base))
        after = httpx.post(f"{base}/rank", json=body).json()
    assert reloads == [409, 200, 409]
    assert len(statuses) > 50 and set(statuses) == {200}
    assert versions == {"1", "2"}
    assert after["model"]["version"] == "2"  # the broken package after it changed nothing


def test_an_index_built_with_another_text_tower_is_not_served(
    make_settings: MakeSettings,
    tiny_snapshot: Snapshot,
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    _load(private_redis, tiny_snapshot)
    other = tmp_path / "other-tower"
    shutil.copytree(tiny_snapshot.folder, other)
    meta = other / "meta.json"
    meta.write_text(meta.read_text().replace(tiny_snapshot.meta.text_tower_fingerprint, "e" * 64))
    settings = make_settings(store="redis", redis_url=private_redis.url)
    body = _request(tiny_snapshot)
    with live_server(settings) as base, httpx.Client(base_url=base, timeout=5) as client:
        assert client.post("/rank", json=body).json()["degraded"] == []
        _load(private_redis, Snapshot(other))  # loaded without --model: nothing refused it
        wrong = client.post("/rank", json=body).json()
        assert wrong["degraded"] == ["index_incompatible"]
        assert all("unknown_item" in item["flags"] for item in wrong["items"])
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and "incompatible" in not_ready.text
        _load(private_redis, tiny_snapshot)
        assert client.post("/rank", json=body).json()["degraded"] == []
        assert client.get("/readyz").status_code == 200


def _handed_to_threads(base: str) -> float:
    """The inferences the service at ``base`` has handed to its threads (all models)."""
    from bench.load import fetch_counters

    with httpx.Client(base_url=base, timeout=5) as http:
        return fetch_counters(http)["handed"]


def test_concurrent_rankings_on_the_embedded_store_are_inferred_on_the_thread(
    make_settings: MakeSettings, tiny_snapshot: Snapshot
) -> None:
    """The embedded store's handler runs to its inference without waiting on anything, so with
    clients that send a request's head and body in one write (the bench's load generator, most
    HTTP clients for small bodies) a ranking was never in flight beside another, and every
    inference ran on the event loop at any load while the requests parsed meanwhile waited
    behind it. The server's open requests show the overlap: the inferences go to the thread."""
    from bench.load import HttpClient

    request = HttpClient.prepare("/rank", orjson.dumps(_request(tiny_snapshot)))
    statuses: list[int] = []

    async def clients(base: str) -> None:
        client = HttpClient.of(base)

        async def one_client() -> None:
            for _ in range(30):
                statuses.append((await client.send(request))[0])

        await asyncio.gather(*(one_client() for _ in range(6)))
        client.close()

    with live_server(make_settings(inference_threads=1)) as base:
        before = _handed_to_threads(base)
        asyncio.run(clients(base))
        handed = _handed_to_threads(base) - before
    assert statuses == [200] * 180
    assert handed > 0


@pytest.mark.parametrize("threads", [0, 2])
def test_inference_runs_on_its_threads_and_scores_the_same(
    make_settings: MakeSettings, tiny_snapshot: Snapshot, threads: int
) -> None:
    """With inference threads the models run off the event loop while another ranking is in
    flight (so the loop parses and fetches it meanwhile); a ranking alone in flight, or every
    ranking with 0 threads, runs on the loop. The scores are the same either way."""
    body = _request(tiny_snapshot)
    ran_on: list[str] = []
    with serving(make_settings(inference_threads=threads)) as client:
        state = client.app.state.service  # type: ignore[attr-defined]
        runner = state.registry.get("prectr").runner
        execute = runner.execute  # the graph's run, inline or on a thread

        def spy(prepared: Any) -> dict[str, Any]:
            ran_on.append(threading.current_thread().name)
            return execute(prepared)

        def another_in_flight(change: int) -> None:
            state.in_flight += change  # on the loop's thread, as the handlers change it

        runner.execute = spy
        answers = [client.post("/rank", json=body).json() for _ in range(2)]
        client.portal.call(another_in_flight, 1)  # type: ignore[union-attr]
        answers.append(client.post("/rank", json=body).json())
        client.portal.call(another_in_flight, -1)  # type: ignore[union-attr]
        loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
    assert all(a["items"] == answers[0]["items"] for a in answers)
    assert ran_on[:2] == [loop_thread] * 2
    assert ran_on[2] == ("inference_0" if threads else loop_thread)
