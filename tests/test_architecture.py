"""Import rules: the service side stays torch-free and FastAPI stays out of the contract."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    # The module list goes to stderr: the statement may print to stdout (a usage text).
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)), file=sys.stderr)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return {name.split(".")[0] for name in result.stderr.split()}


def test_contract_imports_neither_torch_nor_fastapi() -> None:
    loaded = _modules_after("import service.contract")
    assert "torch" not in loaded
    assert "fastapi" not in loaded
    assert "starlette" not in loaded


def test_ranker_dispatcher_imports_no_subcommand_until_named() -> None:
    loaded = _modules_after("import service.cli; service.cli.main(['--help'])")
    assert not loaded & {"torch", "training", "export", "bench", "transformers"}


def test_service_modules_load_without_torch() -> None:
    statement = "import service.store, service.inference, service.index.loader, service.index.cli"
    loaded = _modules_after(statement)
    assert not loaded & {"torch", "training", "export", "bench", "transformers"}


def test_service_package_never_imports_torch_training_or_export() -> None:
    forbidden = {"torch", "training", "export", "bench", "transformers", "sentence_transformers"}
    for path in (ROOT / "service").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{path.relative_to(ROOT)} imports {names & forbidden}"


def test_training_imports_only_the_contract_from_service() -> None:
    for path in (ROOT / "training").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("service")
            ):
                assert node.module == "service.contract", f"{path} imports {node.module}"


# --- the serving image's view: only the serve extra installed ---------------------------------

_ONLY_THESE_DISTRIBUTIONS = """
import importlib, importlib.abc, pkgutil, sys

blocked = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the serve extra)")
        return None

sys.meta_path.insert(0, Blocker())
import service
failed = []
for module in pkgutil.walk_packages(service.__path__, "service."):
    try:
        importlib.import_module(module.name)
    except ImportError as err:
        failed.append(f"{module.name}: {err}")
print("\\n".join(failed))
"""


def distributions_of_extra(project: str, extra: str) -> set[str]:
    """The installed distributions `pip install project[extra]` needs: its requirements with
    their own requirements (and requested extras), markers evaluated; canonical names."""
    needed: set[str] = {canonicalize_name(project)}
    todo: list[tuple[str, set[str]]] = [(project, {extra})]
    while todo:
        name, extras = todo.pop()
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            key = canonicalize_name(requirement.name)
            try:
                importlib.metadata.distribution(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                continue  # an optional dependency this platform does not install
            if key == canonicalize_name(project):
                todo.append((name, set(requirement.extras)))  # ranker[serve-base]
            elif key not in needed or requirement.extras:
                needed.add(key)
                todo.append((requirement.name, set(requirement.extras)))
    return needed


def modules_outside(distributions: set[str]) -> set[str]:
    """Top-level modules that only installed distributions outside ``distributions`` provide."""
    providers = importlib.metadata.packages_distributions()
    return {
        module
        for module, dists in providers.items()
        if not {canonicalize_name(d) for d in dists} & distributions
    } | {"training", "export", "bench"}


def test_distributions_of_extra_follows_requirements() -> None:
    serve = distributions_of_extra("ranker", "serve")
    assert {"fastapi", "starlette", "onnxruntime", "redis", "hiredis", "uvicorn"} <= serve
    assert "httptools" in serve  # through uvicorn[standard]
    assert not {"torch", "httpx", "pytest", "onnxruntime-gpu"} & serve
    assert "httpx" not in modules_outside({"httpx"})


def test_every_service_module_imports_with_only_the_serve_extra() -> None:
    """What the serving image installs is enough for every module under service/ (an import of
    a dev or train dependency crash-looped the image once)."""
    blocked = modules_outside(distributions_of_extra("ranker", "serve"))
    assert {"httpx", "torch", "pytest", "training"} <= blocked
    result = subprocess.run(
        [sys.executable, "-c", _ONLY_THESE_DISTRIBUTIONS, ",".join(sorted(blocked))],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "", result.stdout
