"""LanceDB tables for people, their accounts, their turns and their memories, behind one façade.

This package is the only code that talks to LanceDB, and every filter it sends is built from
`core.memory.filters`, so no caller can hand LanceDB a string that widens a query.
Forgetting is physical: after a delete, `purge_history` compacts the tables and removes the
older table versions that still hold the deleted rows.

`Store` is one object to its callers; each part lives in a module of its own:
schema (tables, constants, row conversion), base (opening), people (people, accounts, chats),
turns (and import appends), memories, search (vector and hybrid), erasure, upkeep (indexes,
compaction) and cache_sync (the in-memory search cache). `open_store` (opening.py)
is the one way the processes open it from settings.
"""

from __future__ import annotations

from core.memory.store.base import StoreBase
from core.memory.store.cache_sync import CacheSync
from core.memory.store.erasure import Erasure
from core.memory.store.memories import Memories
from core.memory.store.opening import open_store
from core.memory.store.people import PeopleAndChats
from core.memory.store.schema import (
    COMPACT_EVERY_WRITES,
    EXACT_SEARCH_ROWS,
    SCALAR_INDEXES,
    SCHEMAS,
    SEARCH_ATTEMPTS,
    SEARCH_CACHE_BYTES,
    SEARCH_CACHE_SYNC_ROWS,
    VECTOR,
    VECTOR_INDEX_MIN_ROWS,
    VECTOR_INDEX_NPROBES,
    VERIFY_FETCH_ROWS,
    WHOLE_LIST_ROWS,
    ChatSettings,
    Hit,
    Search,
)
from core.memory.store.search import Searching
from core.memory.store.turns import Turns
from core.memory.store.upkeep import Upkeep


class Store(PeopleAndChats, Turns, Memories, Searching, Erasure, Upkeep, CacheSync, StoreBase):
    """All of Confidante's durable state, in one LanceDB database (a folder or an s3:// URI)."""


__all__ = [
    "COMPACT_EVERY_WRITES",
    "EXACT_SEARCH_ROWS",
    "SCALAR_INDEXES",
    "SCHEMAS",
    "SEARCH_ATTEMPTS",
    "SEARCH_CACHE_BYTES",
    "SEARCH_CACHE_SYNC_ROWS",
    "VECTOR",
    "VECTOR_INDEX_MIN_ROWS",
    "VECTOR_INDEX_NPROBES",
    "VERIFY_FETCH_ROWS",
    "WHOLE_LIST_ROWS",
    "open_store",
    "ChatSettings",
    "Hit",
    "Search",
    "Store",
]
