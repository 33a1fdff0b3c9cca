"""`ranker index load|status`: the static index in Redis."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from tqdm import tqdm

from service.index.keys import DEFAULT_NAMESPACE, KeySchema
from service.index.loader import (
    DEFAULT_BATCH,
    DEFAULT_GRACE_S,
    IndexMismatch,
    LoadError,
    SyncClient,
    check_compatible,
    live_version,
    load_snapshot,
    record_count,
    version_states,
)
from service.index.snapshot import Snapshot, SnapshotError
from service.package import ModelPackage, PackageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker index", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("load", "load a snapshot as the new live version"), ("status", "show")):
        action = sub.add_parser(name, help=text)
        action.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
        action.add_argument("--cluster", action="store_true", help="the URL is a cluster node")
        action.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="key namespace")
        if name == "load":
            action.add_argument("snapshot", type=Path, help="a snapshot folder")
            action.add_argument(
                "--model",
                type=Path,
                action="append",
                default=[],
                help="a model package the index will serve: refuse a snapshot it cannot use "
                "(repeatable)",
            )
            action.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="keys per MSET")
            action.add_argument(
                "--grace",
                type=float,
                default=DEFAULT_GRACE_S,
                help="seconds the previous version stays after the switch",
            )
    return parser


def _client(url: str, cluster: bool) -> SyncClient:
    if cluster:
        return RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def main(command: str, argv: Sequence[str]) -> int:
    """Entry point the `ranker` dispatcher calls."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    keys = KeySchema(args.namespace)
    client = _client(args.redis, args.cluster)
    try:
        if args.action == "status":
            state = {
                "live": live_version(client, keys),
                "versions": version_states(client, keys),
            }
            print(json.dumps(state, indent=2))
            return 0
        snapshot = Snapshot(args.snapshot)
        for package in args.model:  # refuse before writing anything
            check_compatible(snapshot.meta, ModelPackage(package).manifest)
        with tqdm(total=record_count(snapshot), unit="key", desc="index load") as bar:
            result = load_snapshot(
                snapshot, client, keys, batch=args.batch, grace_s=args.grace, progress=bar.update
            )
        print(
            f"loaded {args.snapshot} as version {result.version} under {args.namespace!r}: "
            f"{result.keys:,} keys in {result.seconds:.2f}s = {result.keys_per_second:,.0f} "
            f"keys/s (previous version: {result.previous or 'none'})"
        )
        return 0
    except (IndexMismatch, LoadError, SnapshotError, PackageError) as err:
        print(f"ranker index: {err}", file=sys.stderr)
        return 1
    finally:
        client.close()
