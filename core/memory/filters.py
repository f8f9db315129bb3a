"""The one place that turns values into LanceDB (DataFusion SQL) filter text.

Person ids, chat ids and message ids come from the outside world: a Slack user id, a Matrix
room id, a name typed in a terminal. Every one of them reaches a filter through `quote`, so
a value like `x' OR '1'='1` stays a string literal and can neither break nor widen a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")


class FilterValueError(ValueError):
    """A value that cannot be represented safely in a filter."""


def quote(value: str) -> str:
    """A SQL string literal for `value`: single quotes doubled, NUL refused."""
    if not isinstance(value, str):
        raise FilterValueError(f"filter values must be strings, got {type(value).__name__}")
    if "\x00" in value:
        raise FilterValueError("filter values may not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _column(name: str) -> str:
    if not _COLUMN.match(name):
        raise FilterValueError(f"not a column name: {name!r}")
    return name


def eq(column: str, value: str) -> str:
    return f"{_column(column)} = {quote(value)}"


def is_in(column: str, values: Iterable[str]) -> str:
    items = [quote(v) for v in values]
    if not items:
        return "false"
    return f"{_column(column)} IN ({', '.join(items)})"


def is_null(column: str) -> str:
    return f"{_column(column)} IS NULL"


def not_null(column: str) -> str:
    return f"{_column(column)} IS NOT NULL"


def all_of(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    if not parts:
        return "true"
    return " AND ".join(f"({c})" for c in parts)


def any_of(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    if not parts:
        return "false"
    return " OR ".join(f"({c})" for c in parts)
