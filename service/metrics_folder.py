"""The files of ``PROMETHEUS_MULTIPROC_DIR``, apart from the metrics that write them.

`reset_multiprocess_dir` empties the folder when the server starts (a restarted container keeps
/tmp, and its new workers reuse the old pids); `drop_dead_workers` removes the live gauges of
workers that died without a goodbye (``kill -9``, OOM): uvicorn respawns them, and nothing else
would remove their files.

Not in `service.metrics` on purpose: importing that module defines the metrics, and a metric
without labels opens its process's file at once. With one worker uvicorn serves in the server
process itself, so a reset after that import deleted the file every counter of the process then
wrote to, and Prometheus saw no counter at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")


def reset_multiprocess_dir() -> Path | None:
    """Create ``PROMETHEUS_MULTIPROC_DIR`` empty of metric files (None: not in multiprocess mode).

    Called once by the server process before any worker starts: files left by an earlier run
    would be read as live workers of this one.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def drop_dead_workers(folder: Path) -> list[int]:
    """Remove the live-gauge files of worker processes that no longer exist; their pids.

    Counters and histograms of a dead worker stay: what it counted did happen, and dropping it
    would make the totals go backwards.
    """
    dead = sorted(
        {
            int(match.group(1))
            for name in os.listdir(folder)
            if (match := _LIVE_GAUGE_FILE.match(name)) and not _alive(int(match.group(1)))
        }
    )
    # imported here: prometheus_client picks its mode at import, after service.metrics settles
    # the environment
    from prometheus_client import multiprocess

    for pid in dead:
        multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
    return dead
