"""KV caches of recent prompts, so the next message of a conversation prefills only what is new.

On two CPU cores a 1k-token prompt costs ~2.5 s of prefill, almost all of it matmuls. In a
conversation most of the next prompt (persona, the earlier turns) is the previous prompt again,
and the keys/values of an identical token prefix under identical weights are identical, so they
can be reused. Entries are keyed by what produced them (the base model, or one adapter version):
a prefix computed under another person's adapter is never reused. Reuse only ever covers tokens
the new prompt itself contains, so nothing of one prompt reaches another; `clear()` still drops
everything when a person asks to be forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Entry:
    key: str
    ids: torch.Tensor
    layers: KV
    nbytes: int


class PrefixCache:
    """A byte-bounded LRU of prompt KV caches (one row each, as the engine's prefill makes them)."""

    def __init__(self, max_bytes: int, *, min_tokens: int = 32) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_id = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, ids: list[int]) -> tuple[int, KV] | None:
        """The longest cached prefix of `ids` under `key`, cut to leave one token to prefill."""
        if self.max_bytes <= 0 or len(ids) <= self.min_tokens:
            self.misses += 1
            return None
        query = torch.tensor(ids, dtype=torch.long)
        best_id, best_len = -1, 0
        for entry_id, entry in self._entries.items():
            if entry.key != key:
                continue
            n = _common_prefix(entry.ids, query)
            if n > best_len:
                best_id, best_len = entry_id, n
        best_len = min(best_len, len(ids) - 1)
        if best_len < self.min_tokens:
            self.misses += 1
            return None
        self._entries.move_to_end(best_id)
        self.hits += 1
        self.reused_tokens += best_len
        layers = self._entries[best_id].layers
        return best_len, [(k[:, :, :best_len], v[:, :, :best_len]) for k, v in layers]

    def store(self, key: str, ids: list[int], layers: KV) -> None:
        """Keep the KV of a prompt just prefilled; entries it makes redundant are dropped."""
        if self.max_bytes <= 0 or len(ids) <= self.min_tokens:
            return
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.max_bytes:
            return
        query = torch.tensor(ids, dtype=torch.long)
        for entry_id, entry in list(self._entries.items()):
            # an older prompt of the same conversation: the new one serves its follow-ups as well
            if entry.key == key and 2 * _common_prefix(entry.ids, query) >= len(entry.ids):
                del self._entries[entry_id]
        while self._entries and self.nbytes + nbytes > self.max_bytes:
            self._entries.popitem(last=False)
        self._entries[self._next_id] = _Entry(key, query, layers, nbytes)
        self._next_id += 1

    def clear(self) -> None:
        self._entries.clear()


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0, 0]) if len(differ) else n


def kv_layers(cache: Any) -> KV:
    """The (keys, values) of every layer of a transformers cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]
