"""The `ranker` console command: a thin dispatcher over the subcommands of each package.

Each subcommand lives in the package that owns it and is imported only when named, so that
`ranker serve` never imports torch (tests/test_architecture.py checks it). The table below
names modules by string on purpose: the service package holds no import of `training`,
`export` or `bench`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Subcommand(NamedTuple):
    module: str
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "data": Subcommand("training.cli", "generate, import and encode data sets"),
    "train": Subcommand("training.cli", "train models, evaluate runs, write reports"),
    "export": Subcommand("export.cli", "ONNX model packages, parity checks, index snapshots"),
    "index": Subcommand("service.index.cli", "load a snapshot into Redis, show index versions"),
    "serve": Subcommand("service.serve", "run the ranking service (RANKER_* settings)"),
    "demo": Subcommand("service.serve", "serve the demo artifacts and send an example request"),
    "bench": Subcommand("bench.cli", "latency, throughput and memory against measured floors"),
}


def _usage() -> str:
    lines = ["usage: ranker <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {sub.help}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "Run `ranker <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch `ranker <command> ...` to `<module>.main(command, argv)`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        print(f"ranker: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(sub.module)
    result: int = module.main(name, rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
