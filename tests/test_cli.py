"""The `ranker` command end to end in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _ranker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, check=False
    )


def test_generate_prints_a_summary_and_writes_the_world(tmp_path: Path) -> None:
    result = _ranker("data", "generate", "--size", "tiny", "--seed", "3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "CTR by level" in result.stdout and "40,000" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    levels = summary["ctr_by_relevance"]
    assert [levels[k] for k in "0123"] == sorted(levels.values())
    shown = _ranker("data", "summary", str(tmp_path))
    assert shown.returncode == 0 and "oracle AUC" in shown.stdout


def test_unknown_command_and_bad_option_fail_clearly(tmp_path: Path) -> None:
    assert _ranker("nope").returncode == 2
    result = _ranker("data", "generate", "--size", "huge", "--out", str(tmp_path))
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_help_lists_commands() -> None:
    result = _ranker("--help")
    assert result.returncode == 0 and "data" in result.stdout
