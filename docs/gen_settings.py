"""Write docs/settings.md from the settings class (core/config.py reads it; bots/settings.py adds
each channel's own section): every field, the environment variable(s) that set it, its type,
its default and the comment written beside it. Nested models (a channel's own settings) get a
section each.

    .venv/bin/python docs/gen_settings.py          # rewrite docs/settings.md
    .venv/bin/python docs/gen_settings.py --check  # exit 1 when the file is out of date

tests/ops/test_settings_doc.py fails when the file and the class drift apart.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "settings.md"

HEADER = """# Settings reference

Generated from `Settings` in `core/config.py` and the channels' own settings (`bots/*_settings.py`,
put together in `bots/settings.py`) by `docs/gen_settings.py`; do not edit by hand
(`tests/ops/test_settings_doc.py` fails when this file and the classes differ). The ones most
installs touch are explained in [configuration.md](configuration.md).

Every setting is an environment variable, or a line in an optional `confidante.toml` in the
working directory (or the file `CONFIDANTE_CONFIG` names); the environment wins. In the TOML
file a name is the variable's name without `CONFIDANTE_`, in lower case.
"""


def _comments(model: type) -> tuple[dict[str, str], dict[str, str]]:
    """(field name -> the comment lines right above it and the one at its line's end,
    field name -> the group heading it opens). A group heading is a short first comment line
    after a blank line, without a colon ("# background work")."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}, {}
    lines = source.splitlines()
    notes: dict[str, str] = {}
    groups: dict[str, str] = {}
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        opens_group = i >= 0 and not lines[i].strip()
        if above and opens_group and ":" not in above[0] and len(above[0].split()) <= 8:
            groups[node.target.id] = above.pop(0)
        end = lines[node.end_lineno - 1]
        inline = end.split("  # ", 1)[1].strip() if "  # " in end else ""
        notes[node.target.id] = " ".join(part for part in [*above, inline] if part)
    return notes, groups


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is not None:
        args = ", ".join(_type(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and len(value) > 60:
        return f"`{value[:57]}…`"
    return f"`{value}`"


def _names(name: str, info: Any, prefix: str, section: str | None = None) -> list[str]:
    if section is not None:
        from core.config import section_env_names

        return section_env_names(prefix, section, name, info)
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [c.upper() for c in alias.choices if isinstance(c, str) and c != name]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{prefix}{name}".upper()]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections(
    model: type[BaseModel], prefix: str, delimiter: str, title: str, section: str | None = None
) -> list[str]:
    """A table of `model`'s fields, then one per nested model (a channel's section). A section's
    fields are listed by the names core/config.py reads them from (section_env_names)."""
    comments, groups = _comments(model)
    rows, nested = [], []
    for name, info in model.model_fields.items():
        if _is_model(info.annotation):
            nested.append((name, info.annotation))
            continue
        if name in groups:
            rows.append(f"| **{groups[name]}** | | | |")
        env = ", ".join(f"`{n}`" for n in _names(name, info, prefix, section))
        note = (info.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(f"| {env} | {_type(info.annotation)} | {_default(info)} | {note} |")
    out = [f"## {title}", ""]
    if section is not None:
        owner = f"`{model.__module__.replace('.', '/')}.py`"
        out += [
            f"Owned by the channel ({owner}). Each variable also reads as "
            f"`{prefix}{section.upper()}{delimiter}<NAME>`; in `confidante.toml`, as `<name>` in a "
            f"`[{section}]` table or as a flat `{section}_<name>` line.",
            "",
        ]
    out += ["| variable | type | default | notes |", "| --- | --- | --- | --- |", *rows, ""]
    for name, sub in nested:
        out += sections(sub, prefix, delimiter, f"{title}: {name}", name)
    return out


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from bots.settings import ChannelSettings

    prefix = ChannelSettings.model_config.get("env_prefix", "")
    delimiter = ChannelSettings.model_config.get("env_nested_delimiter") or "__"
    return "\n".join([HEADER, *sections(ChannelSettings, prefix, delimiter, "Settings")]).rstrip() + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
