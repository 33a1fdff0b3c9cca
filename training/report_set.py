"""The report set where text matters, run as one piece and timed part by part.

The set: five long-tail worlds and the Amazon Industrial & Scientific histories, each generated
or imported and encoded from its source, then every report on them (ELEC's tables with the
diagnosis rows, and Table 1 of the click models). Parts run side by side up to ``jobs`` at a
time, each as its own ``ranker`` process with its own torch threads, a part starting once the
parts it reads have finished. What each part took, and what was on disk before the set began
(a part finds cached encodings, towers and runs and does not redo them), is written beside the
reports: ``timing.json``, ``timing.md`` and a timeline, ``timing.png``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.encode import DEFAULT_CACHE

log = logging.getLogger(__name__)

#: Table 1's rows on the text worlds: the baselines PRECTR is read against, and PRECTR.
TABLE1_CONFIGS = "lr,wide_deep,deepfm,dcnv2,wide_deep_pair,prectr"
#: ELEC's rows on the long-tail world: the paper's distillation, the gain network's diagnosis
#: rows and the two distillations with what the diagnosis found.
LONGTAIL_ELEC_VARIANTS = (
    "elec,gain_zero,gain_shuffled,gain_layernorm,gain_disjoint,gain_full_text,elec_norm,elec_fixed"
)
#: On Amazon: the paper's distillation and the two sanity rows.
AMAZON_ELEC_VARIANTS = "elec,gain_zero,gain_shuffled"


#: How a part's commands are run: this interpreter's ``ranker``.
RANKER = (sys.executable, "-m", "service.cli")


@dataclass(frozen=True)
class Part:
    """One step of the set: ``program`` with each of ``commands`` in order, once every part
    named in ``after`` is done."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    after: tuple[str, ...] = ()
    program: tuple[str, ...] = RANKER


@dataclass
class PartTiming:
    name: str
    #: "done", "failed" (a command exited non-zero) or "skipped" (a part it reads failed)
    status: str
    started_s: float  # from the start of the set
    seconds: float


Runner = Callable[[Part, Path], bool]


def text_report_set(
    data: Path,
    reports: Path,
    amazon_source: Path,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    threads: int = 1,
) -> list[Part]:
    """The parts in the order they are started when ready (the longest chain first)."""
    each = ("--seeds", ",".join(str(s) for s in seeds), "--threads", str(threads))
    amazon, longtail = str(data / "amazon"), str(data / "longtail-{seed}")
    amazon_label = "Amazon Industrial & Scientific"

    def encoded(name: str, source: tuple[str, ...], folder: str) -> Part:
        """The world ``source`` writes to ``folder``, then its MiniLM vectors."""
        write = (*source, "--out", folder)
        return Part(name, (write, ("data", "encode", folder, "--threads", str(threads))))

    def report(name: str, world: str, out: str, label: str, *options: str) -> Part:
        command = ("train", *options, "--data", world, "--out", str(reports / out))
        waits = ("amazon-data",) if world == amazon else tuple(f"longtail-{s}" for s in seeds)
        return Part(name, ((*command, "--label", label, *each),), after=waits)

    generate = ("data", "generate", "--world", "longtail", "--size", "default")
    worlds = [
        encoded(f"longtail-{s}", (*generate, "--seed", str(s)), str(data / f"longtail-{s}"))
        for s in seeds
    ]
    return [
        encoded("amazon-data", ("data", "import-amazon", "--folder", str(amazon_source)), amazon),
        *worlds,
        report(
            "longtail-elec",
            longtail,
            "longtail-elec",
            "the long-tail world",
            *("elec-report", "--variants", LONGTAIL_ELEC_VARIANTS),
        ),
        report(
            "amazon-elec",
            amazon,
            "amazon-elec",
            amazon_label,
            *("elec-report", "--variants", AMAZON_ELEC_VARIANTS, "--no-timing"),
        ),
        report(
            "longtail-table1",
            longtail,
            "longtail",
            "the long-tail world (one world per seed)",
            *("report", "--configs", TABLE1_CONFIGS),
        ),
        report(
            "amazon-table1",
            amazon,
            "amazon",
            f"{amazon_label} (real histories and item text; queries and negatives simulated)",
            *("report", "--configs", TABLE1_CONFIGS),
        ),
    ]


def run_commands(part: Part, log_dir: Path) -> bool:
    """Run a part's commands in order, their output to ``log_dir/<part>.log``; False on the
    first that fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{part.name}.log").open("w") as out:
        for command in part.commands:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            argv = (*part.program, *command)
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return False
    return True


def run_parts(
    parts: Sequence[Part], jobs: int, log_dir: Path, runner: Runner = run_commands
) -> list[PartTiming]:
    """Run every part once the parts it reads are done, at most ``jobs`` at a time, starting
    ready parts in list order; a part whose input failed is skipped. Timings in list order."""
    names = {part.name for part in parts}
    unknown = {dep for part in parts for dep in part.after} - names
    if unknown:
        raise ValueError(f"parts wait on unknown parts: {sorted(unknown)}")
    origin = time.perf_counter()
    timings: dict[str, PartTiming] = {}
    pending = list(parts)
    running: dict[Future[bool], tuple[Part, float]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for part in list(pending):
                failed_inputs = [
                    d for d in part.after if d in timings and timings[d].status != "done"
                ]
                if failed_inputs:
                    pending.remove(part)
                    now = time.perf_counter() - origin
                    timings[part.name] = PartTiming(part.name, "skipped", now, 0.0)
                    log.error("%s skipped: %s did not finish", part.name, failed_inputs)
                elif len(running) < jobs and all(d in timings for d in part.after):
                    pending.remove(part)
                    log.info("%s started", part.name)
                    running[pool.submit(runner, part, log_dir)] = (part, time.perf_counter())
            if not running:
                continue  # only skips happened this round; look again
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                part, started = running.pop(future)
                ok = future.result()
                seconds = time.perf_counter() - started
                status = "done" if ok else "failed"
                timings[part.name] = PartTiming(part.name, status, started - origin, seconds)
                log.info("%s %s in %.1f min", part.name, status, seconds / 60)
    return [timings[part.name] for part in parts]


def describe_disk(paths: Sequence[Path], cache: Path) -> dict[str, Any]:
    """What the set could reuse: which of its folders exist, and the encodings already cached."""
    cached = sum(1 for _ in cache.rglob("shard-*.keys.npy")) if cache.is_dir() else 0
    return {"existing": [str(p) for p in paths if p.exists()], "cache_shards": cached}


def write_timing(
    out_dir: Path,
    parts: Sequence[Part],
    timings: Sequence[PartTiming],
    *,
    jobs: int,
    threads: int,
    wall_seconds: float,
    started_at: str,
    at_start: dict[str, Any],
) -> dict[str, Any]:
    """timing.json, timing.md and timing.png under ``out_dir``; returns the record."""
    record = {
        "started_at": started_at,
        "wall_minutes": round(wall_seconds / 60, 1),
        "jobs": jobs,
        "threads_per_part": threads,
        "machine": {"cores": os.cpu_count(), "processor": platform.processor() or "unknown"},
        "on_disk_at_start": at_start,
        "parts": [
            {**asdict(t), "commands": [" ".join(c) for c in p.commands], "after": p.after}
            for p, t in zip(parts, timings, strict=True)
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "timing.md").write_text(render_timing(record))
    plot_timing(record, out_dir / "timing.png")
    return record


def render_timing(record: dict[str, Any]) -> str:
    reused = record["on_disk_at_start"]
    start = (
        "from nothing: none of its folders existed and the encoding cache was empty"
        if not reused["existing"] and not reused["cache_shards"]
        else f"with {', '.join(reused['existing']) or 'no folder'} on disk and "
        f"{reused['cache_shards']} encoding cache shards"
    )
    lines = [
        "# The report set where text matters: what each part took",
        "",
        f"Started {record['started_at']}, {start}; {record['jobs']} parts at a time, "
        f"{record['threads_per_part']} torch thread each, on {record['machine']['cores']} cores. "
        f"**Wall time of the whole set: {record['wall_minutes']} minutes.**",
        "",
        "| part | status | started (min) | took (min) | waits for | commands (`ranker ...`) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for part in record["parts"]:
        commands = "<br>".join(f"`{c}`" for c in part["commands"])
        lines.append(
            f"| {part['name']} | {part['status']} | {part['started_s'] / 60:.1f} "
            f"| {part['seconds'] / 60:.1f} | {', '.join(part['after']) or '-'} | {commands} |"
        )
    return "\n".join(lines) + "\n"


def plot_timing(record: dict[str, Any], path: Path) -> None:
    """Each part as a bar from its start to its end, minutes from the start of the set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = record["parts"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(parts) + 1.2))
    colors = {"done": "tab:blue", "failed": "tab:red", "skipped": "tab:gray"}
    for k, part in enumerate(parts):
        ax.barh(
            k,
            part["seconds"] / 60,
            left=part["started_s"] / 60,
            color=colors[part["status"]],
        )
    ax.set_yticks(range(len(parts)), [p["name"] for p in parts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("minutes from the start of the set")
    ax.set_title(f"the report set: {record['wall_minutes']} minutes, {record['jobs']} at a time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_report_set(
    data: Path,
    reports: Path,
    amazon_source: Path,
    *,
    jobs: int = 2,
    threads: int = 1,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    cache: Path = DEFAULT_CACHE,
) -> dict[str, Any]:
    """Run the whole set; the timing files go to ``reports/text-set``."""
    parts = text_report_set(data, reports, amazon_source, seeds=seeds, threads=threads)
    outputs = [data / "amazon", *(data / f"longtail-{s}" for s in seeds)] + [
        reports / name for name in ("longtail-elec", "amazon-elec", "longtail", "amazon")
    ]
    at_start = describe_disk(outputs, cache)
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    origin = time.perf_counter()
    timings = run_parts(parts, jobs, reports / "text-set" / "logs")
    return write_timing(
        reports / "text-set",
        parts,
        timings,
        jobs=jobs,
        threads=threads,
        wall_seconds=time.perf_counter() - origin,
        started_at=started_at,
        at_start=at_start,
    )
