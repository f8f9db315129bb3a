"""The two places the store reaches below LanceDB's public API, kept here and nowhere else.

Recall sends all its searches in one batch on LanceDB's own event loop, through the async
handles of the very table objects the sync API writes through, so a read sees every write of
this process at once. The public async API (`lancedb.connect_async`) opens separate handles on a
separate connection: they see this process's writes only after the read-consistency interval
(or, with an interval of 0, after a version check on every query), which recall cannot afford.
Both reach-ins fail loudly at start if a LanceDB upgrade removes them.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from lancedb.background_loop import LOOP
from lancedb.table import AsyncTable

T = TypeVar("T")


def async_handle(table: Any) -> AsyncTable:
    """The AsyncTable a sync LanceTable wraps (the same table object, not a second handle)."""
    handle = getattr(table, "_table", None)
    if not isinstance(handle, AsyncTable):
        raise RuntimeError("this lancedb version no longer wraps an AsyncTable in its LanceTable")
    return handle


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on LanceDB's background event loop (where its async handles live)."""
    return LOOP.run(coroutine)
