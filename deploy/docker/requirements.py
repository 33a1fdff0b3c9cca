"""Print the requirements of one of the project's extras, read from pyproject.toml alone.

The Dockerfile installs these in a layer of their own, keyed on pyproject.toml (and this file),
so a code change rebuilds only the small layer that installs the project itself:

    python3 requirements.py pyproject.toml serve > requirements.txt

Self-references (``ranker[serve-base]``) are expanded; the project's own dependencies come first.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*\[([^\]]+)\]\s*$")


def requirements(pyproject: Path, extra: str) -> list[str]:
    """The project's dependencies and ``extra``'s, self-references expanded, in order, once."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"no extra {extra!r} in {pyproject} (have {sorted(extras)})")
    out: list[str] = []

    def add(requirement: str) -> None:
        match = _SELF.match(requirement)
        if match and match.group(1) == project["name"]:
            for name in match.group(2).split(","):
                for inner in extras[name.strip()]:
                    add(inner)
        elif requirement not in out:
            out.append(requirement)

    for requirement in [*project.get("dependencies", []), *extras[extra]]:
        add(requirement)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} PYPROJECT EXTRA")
    sys.stdout.write("".join(f"{r}\n" for r in requirements(Path(sys.argv[1]), sys.argv[2])))
