"""The layers hold: bots -> core <- workers, and only the composition root (app/) sees them all."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(folder: str) -> dict[str, set[str]]:
    """Each module of `folder` -> the top-level packages it imports (at any depth: lazy ones too)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("bots", {"workers", "app"}), ("core", {"bots", "workers", "app"}), ("workers", {"bots", "app"})],
)
def test_each_layer_imports_only_what_is_below_it(folder, forbidden):
    wrong = {module: names & forbidden for module, names in _imports(folder).items() if names & forbidden}
    assert wrong == {}


def test_the_cli_modules_share_helpers_without_importing_each_other():
    imports = _imports("app")
    adapter_cli = ast.parse((ROOT / "app" / "adapter_cli.py").read_text())
    from_cli = [n for n in ast.walk(adapter_cli) if isinstance(n, ast.ImportFrom) and n.module == "app.cli"]
    assert from_cli == [] and "app" in imports["app/adapter_cli.py"]  # app.people, not app.cli


def test_a_broken_workers_package_fails_loudly_instead_of_turning_consolidation_off(monkeypatch, settings):
    """`_jobs` used to catch ImportError and hand back NoJobs: a typo in workers/ silently meant
    no consolidation ever. Now the import error reaches whoever starts the process."""
    from app import cli

    monkeypatch.setitem(sys.modules, "workers.jobs", None)  # `import workers.jobs` now raises
    with pytest.raises(ImportError):
        cli._jobs(settings, start_worker=False)
