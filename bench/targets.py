"""Targets a benchmark states, with one verdict each, and the exit status `make bench` reads.

Every benchmark prints what it measured and the targets it holds itself to; a missed target must
be visible to a script too, so `bench/run_all.sh` (and CI, if it runs benches) fails instead of a
person having to read every table.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


@dataclass
class Targets:
    """Collect `check`s, then `report()` prints them and `exit()` ends the process with 1 on a miss."""

    title: str = "targets"
    rows: list[tuple[str, float, str, float, bool]] = field(default_factory=list)

    def check(self, name: str, value: float, op: str, bound: float) -> bool:
        ok = _OPS[op](value, bound)
        self.rows.append((name, value, op, bound, ok))
        return ok

    @property
    def missed(self) -> list[str]:
        return [name for name, *_, ok in self.rows if not ok]

    def report(self) -> int:
        """Print one line per target (`met` / `MISSED`); 1 when any was missed, else 0."""
        print(f"\n{self.title}:")
        for name, value, op, bound, ok in self.rows:
            print(f"  {name}: {_fmt(value)} (target {op} {_fmt(bound)}) {'met' if ok else 'MISSED'}")
        if self.missed:
            print(f"  {len(self.missed)} of {len(self.rows)} missed: {', '.join(self.missed)}")
        return 1 if self.missed else 0

    def exit(self, status: int = 0) -> None:
        """Report and exit: non-zero when a target was missed or `status` already says failure."""
        sys.exit(self.report() or status)


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)
