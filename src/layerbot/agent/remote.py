"""The ledger of an agent on a cluster: the control plane over HTTPS, with a journal on disk.

Each job the agent holds is one JSON file in its state directory: the job as leased, where
it stands here, and the reports not yet acknowledged. A file is written (atomically) before
the step it records is acted on, so an agent that crashes or loses the server finds on
restart what it submitted and what it still has to say; reports are numbered per lease, so
one sent twice is applied once.

Fencing (why a job never runs twice): the agent submits only while its lease is valid by
its own clock (the time of the last answered heartbeat or claim plus the lease, less a
margin), the server gives a job to another agent only after the lease has ended there, and
a submission is released (or, on the local executor, kept) only once the server accepted
it under this lease; a refused one is cancelled.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbot import log
from layerbot.agent.client import ControlPlane, NotYours, Refused, ServerUnreachable
from layerbot.agent.ledger import Accounting, ActiveJob, Outcome, outcome_report
from layerbot.agent.step_cache import cache_spec
from layerbot.core.jobs import JobState
from layerbot.core.protocol import (
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobSpec,
    Report,
    ReportKind,
)

_log = log.get("agent")

#: The agent stops submitting this long before its lease ends by its own clock (at most a
#: quarter of the lease).
LEASE_MARGIN_SECONDS = 5.0
#: How long a submission waits for the server's word before the job is taken back.
SUBMIT_ANSWER_SECONDS = 30.0


@dataclass
class HeldJob:
    spec: JobSpec
    state: str = JobState.QUEUED.value
    job_dir: str | None = None
    backend_id: str | None = None
    next_seq: int = 1
    pending: list[dict[str, Any]] = field(default_factory=list)
    cancel: bool = False
    #: The server no longer gives it to this agent: stop it and forget it.
    gone: bool = False
    #: Its submission was accepted after the submitter stopped waiting: release it.
    release_due: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"), "state": self.state,
                "job_dir": self.job_dir, "backend_id": self.backend_id,
                "next_seq": self.next_seq, "pending": self.pending, "cancel": self.cancel,
                "gone": self.gone, "release_due": self.release_due}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldJob:
        return cls(spec=JobSpec.model_validate(data["spec"]), state=data["state"],
                   job_dir=data.get("job_dir"), backend_id=data.get("backend_id"),
                   next_seq=int(data.get("next_seq", 1)), pending=list(data.get("pending", [])),
                   cancel=bool(data.get("cancel")), gone=bool(data.get("gone")),
                   release_due=bool(data.get("release_due")))


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """``path`` holds ``data`` as JSON, on disk, whole or not at all (a crash leaves the
    previous version)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Journal:
    """One file per held job under ``directory`` (the agent's own, mode 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.jobs: dict[int, HeldJob] = {}
        for path in sorted(directory.glob("*.json")):
            try:
                job = HeldJob.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError) as exc:
                _log.error("unreadable journal entry kept aside", path=str(path), error=str(exc))
                path.rename(path.with_suffix(".bad"))
                continue
            self.jobs[job.spec.id] = job

    def save(self, job: HeldJob) -> None:
        with self._lock:
            self.jobs[job.spec.id] = job
            write_atomically(self.directory / f"{job.spec.id}.json", job.to_json())

    def forget(self, job_id: int) -> None:
        with self._lock:
            self.jobs.pop(job_id, None)
            (self.directory / f"{job_id}.json").unlink(missing_ok=True)

    def all(self) -> list[HeldJob]:
        with self._lock:
            return list(self.jobs.values())


class RemoteLedger:
    def __init__(self, server: ControlPlane, journal: Journal, lease_seconds: float) -> None:
        self.server = server
        self.journal = journal
        self.lease_seconds = lease_seconds
        #: Monotonic time until which this agent's leases hold by its own clock.
        self._lease_until = 0.0
        self._report_lock = threading.Lock()
        #: Why the server refused this agent altogether (a revoked token), if it did.
        self.refused: str | None = None

    # --- leases -------------------------------------------------------------------------

    def lease_valid(self) -> bool:
        margin = min(LEASE_MARGIN_SECONDS, self.lease_seconds / 4)
        return time.monotonic() < self._lease_until - margin

    def renewed(self, asked_at: float, lease_seconds: float) -> None:
        """A heartbeat asked at ``asked_at`` (monotonic) was answered."""
        self.lease_seconds = lease_seconds
        self._lease_until = max(self._lease_until, asked_at + lease_seconds)

    def claim(self, slots: int, wait_seconds: float) -> list[JobSpec]:
        self.flush()
        asked = time.monotonic()
        answer = self.server.claim(ClaimRequest(slots=slots, wait_seconds=wait_seconds))
        # A lease runs from when the server granted it, which is after we asked.
        self._lease_until = max(self._lease_until, asked + self.lease_seconds)
        for spec in answer.jobs:
            self.journal.save(HeldJob(spec=spec))
        return list(answer.jobs)

    def heartbeat(self, free_slots: int, resources: Mapping[str, object] | None
                  ) -> HeartbeatResponse:
        self.flush()
        held = self.journal.all()
        asked = time.monotonic()
        try:
            answer = self.server.heartbeat(HeartbeatRequest(
                holding={j.spec.id: j.spec.lease_id for j in held if not j.gone},
                free_slots=free_slots, resources=dict(resources) if resources else None))
        except Refused as exc:
            self.refused = str(exc)
            raise
        self.renewed(asked, answer.lease_seconds)
        for job_id in answer.cancel:
            self._mark(job_id, cancel=True)
        for job_id in answer.gone:
            self._mark(job_id, cancel=True, gone=True)
        return answer

    def _mark(self, job_id: int, *, cancel: bool, gone: bool = False) -> None:
        job = self.journal.jobs.get(job_id)
        if job is None:
            return
        if gone and job.state == JobState.QUEUED.value:
            # Not submitted here: nothing to stop (a submission under way is refused).
            _log.info("job leased elsewhere; dropped", job_id=job_id)
            self.journal.forget(job_id)
            return
        job.cancel = job.cancel or cancel
        job.gone = job.gone or gone
        self.journal.save(job)

    # --- what the submitter and reconciler read -----------------------------------------

    def holding(self) -> int:
        return sum(1 for j in self.journal.all() if not JobState(j.state).terminal)

    def queued(self) -> list[JobSpec]:
        return [j.spec.model_copy(update={"job_dir": j.job_dir})
                for j in self.journal.all()
                if j.state == JobState.QUEUED.value and not j.gone and not j.cancel]

    def held(self) -> list[str]:
        return [j.backend_id for j in self.journal.all()
                if j.state == JobState.SUBMITTED.value and j.backend_id and not j.pending
                and not j.gone]

    def late_submissions(self) -> list[str]:
        due = [j for j in self.journal.all() if j.release_due and j.backend_id]
        for job in due:
            job.release_due = False
            self.journal.save(job)
        return [j.backend_id for j in due if j.backend_id]

    def active(self) -> list[ActiveJob]:
        return [ActiveJob(j.spec.id, j.backend_id, j.job_dir, JobState(j.state),
                          j.cancel or j.gone, str(j.spec.facts.get("role") or "build"),
                          cache_spec(j.spec.facts))
                for j in self.journal.all()
                if j.backend_id and j.state in (JobState.SUBMITTED.value,
                                                JobState.RUNNING.value)]

    # --- reports ------------------------------------------------------------------------

    def record_job_dir(self, job: JobSpec, job_dir: Path) -> bool:
        held = self.journal.jobs.get(job.id)
        if held is None or held.gone or not self.lease_valid():
            return False
        if not self._say(held, "job_dir", deadline=0.0, job_dir=str(job_dir)):
            # Refused, or no answer: not prepared here (a pending job_dir report only
            # records a directory; the next attempt makes a new one).
            return False
        held.job_dir = str(job_dir)  # a later attempt asks the backend about this one
        self.journal.save(held)
        return True

    def submitted(self, job: JobSpec, backend_id: str, base_sha: str | None,
                  job_dir: Path, facts: Mapping[str, object]) -> bool:
        held = self.journal.jobs.get(job.id)
        if held is None:
            return False
        # On disk first: after a crash the agent knows what it submitted, and where.
        held.state, held.backend_id, held.job_dir = (JobState.SUBMITTED.value, backend_id,
                                                     str(job_dir))
        held.spec = held.spec.model_copy(update={"facts": dict(facts)})  # its role, too
        self.journal.save(held)
        answered = self._say(held, "submitted", deadline=SUBMIT_ANSWER_SECONDS,
                             backend_id=backend_id, base_sha=base_sha, job_dir=str(job_dir),
                             facts=dict(facts))
        if answered:
            held.release_due = False  # the submitter releases it itself
            self.journal.save(held)
        if answered is None:
            # No word yet: the job stays held in the backend (hold_release) with its report
            # pending; once the server accepts it, it is released (late_submissions), and
            # if the server refuses it, cancelled. The submitter must not cancel it now.
            return True
        if not answered:
            held.cancel = True
            self.journal.save(held)
        return answered

    def fail(self, job: JobSpec, reason: str) -> None:
        held = self.journal.jobs.get(job.id)
        if held is None:
            return
        held.state = JobState.FAILED.value
        self._queue(held, "failed", reason=reason)
        self.flush()

    def apply(self, outcomes: Mapping[int, tuple[Accounting, Outcome]]) -> int:
        changed = 0
        for job_id, (acct, outcome) in outcomes.items():
            held = self.journal.jobs.get(job_id)
            if held is None:
                continue
            report = outcome_report(held.next_seq, held.spec.lease_id, acct, outcome)
            held.next_seq += 1
            held.pending.append(report.model_dump(mode="json"))
            held.state = outcome.state.value
            self.journal.save(held)
            changed += 1
        self.flush()
        return changed

    def log_tails(self, tails: Mapping[int, str]) -> set[int]:
        delivered: set[int] = set()
        for job_id, text in tails.items():
            held = self.journal.jobs.get(job_id)
            if held is None or held.gone or held.pending:
                continue  # what must arrive first has not yet
            report = Report(seq=held.next_seq, lease_id=held.spec.lease_id, kind="log",
                            log_tail=text[-64_000:])
            held.next_seq += 1
            self.journal.save(held)
            try:
                self.server.report(job_id, report)
            except (ServerUnreachable, NotYours) as exc:
                _log.debug("log tail not delivered", job_id=job_id, error=str(exc))
            else:
                delivered.add(job_id)
        return delivered

    def _queue(self, held: HeldJob, kind: ReportKind, **fields: object) -> Report:
        report = Report(seq=held.next_seq, lease_id=held.spec.lease_id, kind=kind,
                        **fields)  # type: ignore[arg-type]
        held.next_seq += 1
        held.pending.append(report.model_dump(mode="json"))
        self.journal.save(held)
        return report

    def _say(self, held: HeldJob, kind: ReportKind, deadline: float, **fields: object
             ) -> bool | None:
        """Send one report now and wait for the server's word (up to ``deadline`` seconds
        of retries): True if it was accepted and the job goes on, False if refused, None if
        the server did not answer (the report stays pending)."""
        self._queue(held, kind, **fields)
        end = time.monotonic() + deadline
        while True:
            answered = self.flush(only=held.spec.id)
            if answered is not None:
                return answered
            if time.monotonic() >= end or not self.lease_valid():
                return None
            time.sleep(1.0)

    def flush(self, only: int | None = None) -> bool | None:
        """Send pending reports in order. For ``only``: True/False once the job's reports
        were all answered (accepted and going on / refused), None if the server is away."""
        result: bool | None = None
        with self._report_lock:
            for held in self.journal.all():
                if only is not None and held.spec.id != only:
                    continue
                result = self._flush_job(held)
                if result is None and only is None:
                    return None  # the server is away: try again later
        return result

    def _flush_job(self, held: HeldJob) -> bool | None:
        goes_on = True
        while held.pending:
            report = Report.model_validate(held.pending[0])
            try:
                answer = self.server.report(held.spec.id, report)
            except ServerUnreachable as exc:
                _log.warning("report not delivered yet", job_id=held.spec.id, error=str(exc))
                return None
            except NotYours as exc:
                answer = None
                _log.warning("job no longer ours", job_id=held.spec.id, detail=str(exc))
            held.pending.pop(0)
            if answer is None or not answer.accepted or answer.cancel:
                goes_on = False
                held.cancel = True
                held.gone = held.gone or answer is None or not answer.accepted
            elif report.kind == "submitted":
                held.release_due = True  # cleared at once if the submitter is waiting
        ended = JobState(held.state).terminal
        if ended or (held.gone and held.state == JobState.QUEUED.value):
            self.journal.forget(held.spec.id)
        else:
            self.journal.save(held)
        return goes_on
