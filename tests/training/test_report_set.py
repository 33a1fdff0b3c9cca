"""The report set runner: its parts wait for their inputs, run at most `jobs` at a time, stop a
chain at a failure, and say what each took; the set's own commands are valid `ranker` calls."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from training.cli import _data_parser, _elec_report_parser, _report_parser
from training.report_set import (
    RANKER,
    Part,
    run_commands,
    run_parts,
    text_report_set,
    write_timing,
)


def test_parts_wait_for_their_inputs_and_a_failure_skips_what_reads_it(tmp_path: Path) -> None:
    parts = [
        Part("a", ()),
        Part("b", ()),
        Part("broken", ()),
        Part("after_a_b", (), after=("a", "b")),
        Part("after_broken", (), after=("broken",)),
        Part("after_after_broken", (), after=("after_broken",)),
    ]
    finished: list[str] = []
    started = {part.name: threading.Event() for part in parts}
    running, most, overlapped = 0, 0, False
    lock = threading.Lock()

    def runner(part: Part, _: Path) -> bool:
        nonlocal running, most, overlapped
        with lock:
            assert all(dep in finished for dep in part.after), f"{part.name} started early"
            running += 1
            most = max(most, running)
        started[part.name].set()
        if part.name == "a":  # the first two ready parts run side by side
            overlapped = started["b"].wait(timeout=30)
        with lock:
            running -= 1
            finished.append(part.name)
        return part.name != "broken"

    timings = run_parts(parts, jobs=2, log_dir=tmp_path, runner=runner)

    assert [t.name for t in timings] == [p.name for p in parts]
    status = {t.name: t.status for t in timings}
    assert status == {
        "a": "done",
        "b": "done",
        "broken": "failed",
        "after_a_b": "done",
        "after_broken": "skipped",
        "after_after_broken": "skipped",
    }
    assert "after_broken" not in finished
    assert overlapped and most == 2


def test_a_part_waiting_on_an_unknown_part_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        run_parts([Part("a", (), after=("missing",))], jobs=1, log_dir=tmp_path)


def test_a_part_runs_its_commands_in_order_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    python = (sys.executable, "-c")
    part = Part(
        "steps",
        (
            (f"open({str(marker)!r}, 'a').write('one '); print('first output')",),
            ("raise SystemExit(3)",),
            (f"open({str(marker)!r}, 'a').write('never')",),
        ),
        program=python,
    )
    assert run_commands(part, tmp_path / "logs") is False
    assert marker.read_text() == "one "
    log = (tmp_path / "logs" / "steps.log").read_text()
    assert "first output" in log and "SystemExit(3)" in log and "never" not in log


def test_the_timing_says_what_each_part_took_and_what_was_reused(tmp_path: Path) -> None:
    parts = [Part("data", (("data", "generate"),)), Part("report", (), after=("data",))]
    timings = run_parts(parts, jobs=1, log_dir=tmp_path, runner=lambda part, _: True)
    at_start = {"existing": ["data/longtail-0"], "cache_shards": 3}
    record = write_timing(
        tmp_path / "out",
        parts,
        timings,
        jobs=1,
        threads=1,
        wall_seconds=90.0,
        started_at="2026-12-05 00:00 UTC",
        at_start=at_start,
    )
    assert json.loads((tmp_path / "out" / "timing.json").read_text()) == json.loads(
        json.dumps(record)
    )
    markdown = (tmp_path / "out" / "timing.md").read_text()
    assert "1.5 minutes" in markdown and "data/longtail-0" in markdown
    assert "| report | done |" in markdown and "`data generate`" in markdown
    assert (tmp_path / "out" / "timing.png").stat().st_size > 0


def test_the_text_report_set_is_made_of_valid_ranker_commands(tmp_path: Path) -> None:
    parts = text_report_set(tmp_path / "data", tmp_path / "reports", tmp_path / "amazon")
    names = {part.name for part in parts}
    assert all(set(part.after) <= names for part in parts)
    parsers = {
        "data": lambda argv: _data_parser().parse_args(argv[1:]),
        "report": lambda argv: _report_parser().parse_args(argv[2:]),
        "elec-report": lambda argv: _elec_report_parser().parse_args(argv[2:]),
    }
    reports = []
    for part in parts:
        assert part.program == RANKER
        for command in part.commands:
            kind = command[0] if command[0] == "data" else command[1]
            args = parsers[kind](list(command))
            if kind != "data":
                reports.append(args)
                assert args.threads == 1
    # every report reads worlds a part of the set writes, and waits for that part
    written = {str(c[c.index("--out") + 1]) for p in parts for c in p.commands if "generate" in c}
    written |= {str(c[2]) for p in parts for c in p.commands if c[:2] == ("data", "encode")}
    for args in reports:
        seeds = [int(s) for s in args.seeds.split(",")]
        assert {str(args.data).format(seed=s) for s in seeds} <= written
