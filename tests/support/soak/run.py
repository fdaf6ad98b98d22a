"""A soak from start to report: the system up, activity and faults for ``minutes``, then
everything healed and settled, the invariants checked and the figures taken.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from tests.support.soak.activity import Activity
from tests.support.soak.faults import Faults
from tests.support.soak.history import Entry, History
from tests.support.soak.invariants import Checker, Violation
from tests.support.soak.system import System, rss_mb, start_system, wait_until

#: How long the soak may take to settle after its last action and fault.
SETTLE_SECONDS = 240


@dataclass
class SoakReport:
    seed: int
    minutes: float
    actions: dict[str, int]
    faults: dict[str, int]
    violations: list[Violation]
    histories: dict[int, list[Entry]]
    first_reply_seconds: list[float]
    webhook_answer_seconds: list[float]
    memory_mb: dict[str, tuple[float, float]]
    #: Every ten minutes from the start, and at the end.
    memory_samples: list[dict[str, float]]
    github_requests: int
    builds: int
    jobs: int
    settled: bool
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"soak: seed {self.seed}, {self.minutes:g} min, {self.builds} builds, "
               f"{self.jobs} jobs, settled: {self.settled}"]
        out.append("actions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())))
        out.append("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        out.append(f"command -> first reply: p50 {pct(self.first_reply_seconds, 50):.2f} s, "
                   f"p99 {pct(self.first_reply_seconds, 99):.2f} s "
                   f"({len(self.first_reply_seconds)} commands)")
        out.append(f"webhook answer under load: p50 "
                   f"{1000 * pct(self.webhook_answer_seconds, 50):.1f} ms, p99 "
                   f"{1000 * pct(self.webhook_answer_seconds, 99):.1f} ms "
                   f"({len(self.webhook_answer_seconds)} deliveries)")
        for name, (start, end) in sorted(self.memory_mb.items()):
            growth = 100 * (end - start) / start if start else 0.0
            series = " ".join(f"{m.get(name, 0):.0f}" for m in self.memory_samples)
            out.append(f"memory {name}: {start:.0f} MB -> {end:.0f} MB ({growth:+.0f} %); "
                       f"every 10 min: {series}")
        out.append(f"GitHub requests per build: {self.github_requests / max(self.builds, 1):.1f}"
                   f" ({self.github_requests} requests)")
        out += [f"note: {n}" for n in self.notes]
        out.append(f"invariant violations: {len(self.violations)}")
        for v in self.violations:
            out.append(f"  VIOLATION [{v.invariant}] {v.message}")
            history = self.histories.get(id(v), [])
            out += [f"      {e.line()}" for e in history]
        return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def settled(system: System) -> bool:
    """Every job final, the outbox sent, every delivery handled."""
    engine = create_engine(system.postgres.url)
    try:
        with engine.connect() as conn:
            busy = conn.execute(text(
                "SELECT (SELECT count(*) FROM jobs WHERE state NOT IN "
                "('succeeded','failed','cancelled','timed_out','lost'))"
                " + (SELECT count(*) FROM outbox WHERE status IN ('pending','sending'))"
                " + (SELECT count(*) FROM inbox_events WHERE status IN "
                "('pending','processing'))"
                " + (SELECT count(*) FROM deployments WHERE state IN "
                "('queued','uploading'))")).scalar()
        return busy == 0
    except Exception:  # PostgreSQL restarting: not settled yet
        return False
    finally:
        engine.dispose()


def memory(system: System) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in system.processes().items()}


def run_soak(root: Path, minutes: float, seed: int, *, rate: float = 0.5,
             log: Any = print) -> SoakReport:
    """``rate``: actions per second on average."""
    duration = 60 * minutes
    with start_system(root) as system:
        history = History()
        rng = random.Random(seed)
        activity = Activity(system.fleet, history, random.Random(rng.random()))
        faults = Faults(system, activity, history, random.Random(rng.random()))
        plan = faults.schedule(duration)
        log(f"soak: {len(plan)} faults planned over {duration:.0f} s; root {root}")
        # Memory is first read once the processes have warmed up (imports, caches, pools).
        warm_up = min(60.0, 0.1 * duration)
        start_memory: dict[str, float] = {}
        stop = threading.Event()
        injector = threading.Thread(target=faults.run, args=(plan, stop), name="faults")
        injector.start()
        action_rng = random.Random(rng.random())
        samples: list[dict[str, float]] = []
        while history.now() < duration:
            if not start_memory and history.now() >= warm_up:
                start_memory = memory(system)
            if start_memory and history.now() >= warm_up + 600 * len(samples):
                samples.append(memory(system))  # every ten minutes: growth or a plateau
            try:
                activity.step()
            except Exception as exc:  # the harness goes on; the history says
                history.action("action failed", None, error=repr(exc)[:300])
            time.sleep(action_rng.expovariate(rate))
        injector.join()
        faults.wait()
        log(f"soak: activity over at {history.now():.0f} s; settling")
        system.ingest.once()
        ok = wait_until(lambda: settled(system), SETTLE_SECONDS, step=2)
        system.ingest.once()
        end_memory = memory(system)
        checker = Checker(system, activity, history)
        violations = checker.all()
        return SoakReport(
            seed=seed, minutes=minutes,
            actions=dict(history.counts("action")), faults=dict(history.counts("fault")),
            violations=violations,
            histories={id(v): history.about(v.pr, v.at) for v in violations},
            first_reply_seconds=checker.first_reply_seconds(),
            webhook_answer_seconds=list(activity.answers),
            memory_mb={k: (v, end_memory.get(k, 0.0)) for k, v in start_memory.items()},
            memory_samples=[*samples, end_memory],
            github_requests=system.fleet.fake.count(), builds=len(checker.builds),
            jobs=len(checker.jobs), settled=ok,
            notes=[] if system.small_disk else
            ["not root: local-b's job directories are on the machine's disk"])
