"""The soak's history: every action and fault, in order, with what it touched.

Invariants are checked at the end against what GitHub, the backends, S3 and the store hold;
a violation names the PR (and job) it is about, and :meth:`History.about` cuts the history
down to what led to it: the actions on that PR and the faults of the same time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One thing the harness did: ``kind`` is ``action`` or ``fault``, ``name`` what."""

    at: float  # seconds since the soak started
    kind: str
    name: str
    pr: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: For faults: when they were healed (None while they last).
    until: float | None = None

    def line(self) -> str:
        span = f"..{self.until:7.1f}s" if self.until is not None else ""
        pr = f" PR {self.pr}" if self.pr is not None else ""
        extra = " ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{self.at:7.1f}s{span} {self.kind:6} {self.name}{pr} {extra}".rstrip()


class History:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.entries: list[Entry] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def action(self, name: str, pr: int | None = None, **detail: Any) -> Entry:
        return self._add(Entry(self.now(), "action", name, pr, detail))

    def fault(self, name: str, **detail: Any) -> int:
        """A fault that lasts until :meth:`healed` (its index)."""
        with self._lock:
            self.entries.append(Entry(self.now(), "fault", name, None, detail))
            return len(self.entries) - 1

    def healed(self, index: int) -> None:
        with self._lock:
            e = self.entries[index]
            self.entries[index] = Entry(e.at, e.kind, e.name, e.pr, e.detail, self.now())

    def _add(self, entry: Entry) -> Entry:
        with self._lock:
            self.entries.append(entry)
        return entry

    def counts(self, kind: str) -> Counter[str]:
        with self._lock:
            return Counter(e.name for e in self.entries if e.kind == kind)

    def about(self, pr: int | None, at: float | None = None) -> list[Entry]:
        """The minimal history of a violation on ``pr`` (about what happened ``at``): the
        PR's own actions up to then, and the faults active from a little before it to the
        time its outcome should have been seen (the only ones that can have touched it).
        Without a time: the PR's whole life; without a PR: every fault."""
        with self._lock:
            entries = list(self.entries)
        faults = [e for e in entries if e.kind == "fault"]
        own = [e for e in entries if e.kind == "action" and pr is not None and e.pr == pr]
        if not own:
            return faults if at is None else _overlapping(faults, at - 30, at + 90)
        if at is not None:
            own = [e for e in own if e.at <= at + 0.5]
            start, end = at - 30, at + 90
        else:
            start, end = own[0].at, own[-1].at + 120  # its jobs run on after its last action
        return sorted(own + _overlapping(faults, start, end), key=lambda e: e.at)


def _overlapping(faults: list[Entry], start: float, end: float) -> list[Entry]:
    return [f for f in faults if f.at <= end and (f.until or f.at) >= start]
