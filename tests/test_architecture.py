"""Import rules: the service side stays torch-free and FastAPI stays out of the contract."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
    assert not loaded & {"torch", "training", "export", "transformers"}


def test_service_modules_load_without_torch() -> None:
    statement = "import service.store, service.inference, service.index.loader, service.index.cli"
    loaded = _modules_after(statement)
    assert not loaded & {"torch", "training", "export", "transformers"}


def test_service_package_never_imports_torch_training_or_export() -> None:
    forbidden = {"torch", "training", "export", "transformers", "sentence_transformers"}
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
