"""Faults on a schedule drawn from the soak's seed: GitHub misbehaving, deliveries lost or
doubled, processes killed, services restarted, a full disk, a job that never ends.

Every kind happens at least once (spread over the first three quarters of the soak, so the
system has time to recover before the invariants are checked); longer soaks draw more.
Each fault is logged in the history with when it began and when it was healed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tests.support.soak.activity import Activity
from tests.support.soak.content import Content
from tests.support.soak.history import History
from tests.support.soak.system import REPO_ROOT, System, children

SLURM_BASE = Path(os.environ.get("LAYERBOT_SLURM_DIR", "/var/tmp/layerbot-slurm"))


class Fault(StrEnum):
    GITHUB_5XX = "github 5xx"
    GITHUB_403_RETRY_AFTER = "github 403 retry-after"
    GITHUB_429_RETRY_AFTER = "github 429 retry-after"
    GITHUB_SECONDARY_LIMIT = "github secondary rate limit"
    GITHUB_TIMEOUT = "github timeout"
    DELIVERY_DUPLICATED = "delivery duplicated"
    DELIVERY_REORDERED = "delivery reordered"
    DELIVERY_LOST = "delivery lost"
    BODY_REPLAYED = "body replayed"
    KILL_REPLICA = "SIGKILL replica"
    KILL_AGENT = "SIGKILL agent"
    KILL_WORKER = "SIGKILL worker"
    SLURMCTLD_RESTART = "slurmctld stopped and started"
    S3_KILLED = "S3 killed mid-upload"
    POSTGRES_RESTART = "PostgreSQL restarted"
    DISK_FULL = "disk full in a job directory"
    NEVER_ENDING_JOB = "job that never ends"


@dataclass
class Faults:
    system: System
    activity: Activity
    history: History
    rng: random.Random
    #: How a delivery misbehaves next (consumed by Activity.deliver).
    pending_delivery: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.activity.delivery_fault = self._next_delivery_fault

    def schedule(self, duration: float) -> list[tuple[float, Fault]]:
        """Each kind once, in a seeded order over [5 %, 75 %] of ``duration``; then one more
        fault every two minutes for long soaks."""
        kinds = list(Fault)
        self.rng.shuffle(kinds)
        start, end = 0.05 * duration, 0.75 * duration
        gap = (end - start) / len(kinds)
        plan = [(start + i * gap + self.rng.uniform(0, gap / 2), k) for i, k in enumerate(kinds)]
        extra = int(duration // 120) - len(kinds) // 2
        plan += [(self.rng.uniform(start, end), self.rng.choice(kinds)) for _ in range(extra)]
        return sorted(plan)

    def run(self, plan: list[tuple[float, Fault]], stop: threading.Event) -> None:
        for at, fault in plan:
            if stop.wait(max(0.0, at - self.history.now())):
                return
            self.inject(fault)

    def inject(self, fault: Fault) -> None:
        action: Callable[[int], None] = getattr(self, "_" + fault.name.lower())
        index = self.history.fault(fault.value)
        thread = threading.Thread(target=self._guarded, args=(action, index), name=fault.value)
        thread.start()
        self._threads.append(thread)

    def _guarded(self, action: Callable[[int], None], index: int) -> None:
        try:
            action(index)
        except Exception as exc:  # a fault that could not be applied is logged
            self.history.action("fault failed", None, error=repr(exc)[:300])
        finally:
            if self.history.entries[index].until is None:
                self.history.healed(index)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join(300)

    # --- GitHub ----------------------------------------------------------------------------

    def _github_5xx(self, index: int) -> None:
        self.system.fleet.fake.fail_next("*", ".", self.rng.choice([500, 502, 503]), times=4)
        time.sleep(5)

    def _github_403_retry_after(self, index: int) -> None:
        self.system.fleet.fake.fail_next("*", ".", 403, times=3, headers={"retry-after": "2"},
                                         body={"message": "You have exceeded a secondary rate "
                                               "limit. Please wait a few minutes."})
        time.sleep(5)

    def _github_429_retry_after(self, index: int) -> None:
        self.system.fleet.fake.fail_next("*", ".", 429, times=3, headers={"retry-after": "2"})
        time.sleep(5)

    def _github_secondary_limit(self, index: int) -> None:
        """A secondary limit without retry-after: back off at least a minute (GitHub's
        advice), here made shorter by the answer's reset header."""
        self.system.fleet.fake.fail_next(
            "POST", r"/comments$", 403, times=2,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 3)},
            body={"message": "You have exceeded a secondary rate limit."})
        time.sleep(5)

    def _github_timeout(self, index: int) -> None:
        """A reply's create held past the client's timeout (30 s) and then applied: the bot
        never saw the answer. (Comments only: a check run made so cannot be found again,
        as the API description this fake follows has no operation that lists them.)"""
        self.system.fleet.fake.delay("POST", r"/issues/\d+/comments$", 35, times=1)
        time.sleep(40)

    # --- deliveries --------------------------------------------------------------------------

    def _next_delivery_fault(self) -> str | None:
        with self._lock:
            return self.pending_delivery.pop(0) if self.pending_delivery else None

    def _queue_delivery(self, kind: str) -> None:
        with self._lock:
            self.pending_delivery.append(kind)

    def _delivery_duplicated(self, index: int) -> None:
        self._queue_delivery("duplicate")

    def _delivery_reordered(self, index: int) -> None:
        self._queue_delivery("hold")

    def _delivery_lost(self, index: int) -> None:
        self._queue_delivery("lose")

    def _body_replayed(self, index: int) -> None:
        self._queue_delivery("replay")

    # --- processes -----------------------------------------------------------------------------

    def _kill_replica(self, index: int) -> None:
        replicas = self.system.fleet.replicas
        replica = replicas[self.rng.randrange(len(replicas))]
        replica.kill()
        time.sleep(8)
        replica.start()

    def _kill_agent(self, index: int) -> None:
        agent = self.rng.choice(list(self.system.fleet.agents.values()))
        agent.kill()
        time.sleep(10)
        agent.start()

    def _kill_worker(self, index: int) -> None:
        replica = self.rng.choice(self.system.fleet.replicas)
        if replica.proc is None:
            return
        for pid in children(replica.proc.pid):
            os.kill(pid, signal.SIGKILL)
        time.sleep(3)

    def _slurmctld_restart(self, index: int) -> None:
        """slurmctld stopped (SIGTERM: it saves its state, as a restart by its service
        does) and started 12 s later.

        Not SIGKILL: killed within seconds of a submission, slurmctld loses that job from
        its own state, gives its id to the next submission and drains the node ("Duplicate
        jobid") when the first one's batch step reports in; only an administrator brings
        the node back, and every later job waits (a 20-minute soak found this)."""
        pid_file = SLURM_BASE / "run" / "slurmctld.pid"
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):  # gone once its state is saved
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        time.sleep(12)
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "slurm.sh"), "start"],
                       capture_output=True, check=True, timeout=180)

    def _s3_killed(self, index: int) -> None:
        """A deploy label on a PR whose builds succeeded, and the S3 server killed as the
        agents start uploading; back after 15 s."""
        candidates = [p for p in self.activity.pulls.values()
                      if p.open and p.content is Content.OK]
        if candidates:
            self.activity.label_deploy(self.rng.choice(candidates))
            time.sleep(self.rng.uniform(0.2, 1.5))
        self.system.s3.stop()
        time.sleep(15)
        self.system.s3.start()

    def _postgres_restart(self, index: int) -> None:
        self.system.postgres.stop()
        time.sleep(4)
        self.system.postgres.start()

    # --- jobs --------------------------------------------------------------------------------

    def _disk_full(self, index: int) -> None:
        pull = self.activity.open_pr(Content.FILL_DISK)
        self.activity.comment(pull, "bot: build for:arch=x86_64/intel/haswell")
        pull.open = False  # left alone by the other actions: its outcome is the fault's

    def _never_ending_job(self, index: int) -> None:
        pull = self.activity.open_pr(Content.HANG)
        self.activity.comment(pull, self.rng.choice([
            "bot: build for:arch=x86_64/amd/zen2", "bot: build arch:zen4"]))
        pull.open = False
