"""How many torch threads an adapter training step should use, decided step by step.

On a small machine the refresh shares the cores with the chat. Two threads that wait on each
other while another process holds one core made a refresh about 3x slower (measured on 2 cores),
yet on an idle machine a second thread is free speed. So the count follows what the rest of the
machine did during the last step: all cores while nothing else wanted them, one otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STAT = Path("/proc/stat")


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (None where /proc/stat is missing)."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ThreadGovernor:
    """Call `step()` after each training step; it sets torch's thread count for the next one."""

    def __init__(self, most: int | None = None, others_limit: float = 0.5) -> None:
        import torch

        self.torch = torch
        self.most = most or os.cpu_count() or 1
        self.others_limit = others_limit  # cores others may use for the machine to count as idle
        self.threads = 1
        self.history: list[int] = []
        self._mark()
        torch.set_num_threads(self.threads)

    def _mark(self) -> None:
        self._wall, self._busy, self._own = time.perf_counter(), _busy_seconds(), _own_seconds()

    def others(self) -> float | None:
        """Cores the rest of the machine kept busy since the last mark."""
        busy = _busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        return max(0.0, (busy - self._busy) - (_own_seconds() - self._own)) / wall

    def step(self) -> int:
        others = self.others()
        self.threads = 1 if others is None or others > self.others_limit else self.most
        self.torch.set_num_threads(self.threads)
        self.history.append(self.threads)
        self._mark()
        return self.threads


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on `count` threads inside the block (0: start on one; a ThreadGovernor adapts)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
