"""The ledger of the agent inside an embedded ``serve``: the control plane's store itself.

Each step is the same report a cluster's agent sends over HTTP, applied by the same code
(``operations/leases.py``) in one transaction with the PR's report; only the transport is
missing. The built-in agent is a row of ``agents`` like any other (``builtin``), so the
fleet's views, claims and the control center treat it alike.

Its uploads (:class:`StoreUploads`) are the same claims and reports a cluster's agent makes
over HTTP (``operations/uploads.py``), and it stages them with the same code
(``deploy/upload.py``), with this file's ``[deploy]``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from layerbot import __version__, clock
from layerbot.agent.ledger import Accounting, ActiveJob, Outcome, outcome_report
from layerbot.agent.runner import AgentRunner, capabilities_of
from layerbot.agent.step_cache import cache_spec
from layerbot.backends.base import Backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.core.protocol import (
    PROTOCOL_VERSION,
    HeartbeatResponse,
    JobSpec,
    Report,
    ReportKind,
    UploadReport,
    UploadSpec,
)
from layerbot.operations import leases, uploads
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Agent, Job


def builtin_agent(config: Config, store: Store, backend: Backend, mirrors: Mirrors,
                  on_written: Callable[[], None] = lambda: None) -> AgentRunner:
    """The agent of an embedded ``serve`` (or ``layerbot run``), registered and ready."""
    register_builtin(store, config, clock.now())
    return AgentRunner(config, StoreLedger(config, store, on_written=on_written), backend,
                       mirrors, uploads=StoreUploads(config, store, on_written=on_written),
                       send_log_tails=False)


def register_builtin(store: Store, config: Config, now: datetime) -> None:
    """The agent row of ``serve``'s own agent, with this configuration's node types."""
    with store.transaction() as s:
        _builtin_row(s, config, now)


def _builtin_row(s: Session, config: Config, now: datetime) -> Agent:
    """Inserted by one insert-or-nothing statement: every replica of ``serve`` registers its
    built-in agent when it starts, and two may start at once against one PostgreSQL."""
    name = config.agent_name
    cluster = config.agent.cluster or platform.node().split(".")[0] or name
    insert = sqlite_insert if s.get_bind().dialect.name == "sqlite" else pg_insert
    s.execute(insert(Agent).values(name=name, cluster=cluster, builtin=True,
                                   created_by="serve", created_at=now, priority=0,
                                   paused=False, draining=False)
              .on_conflict_do_nothing(index_elements=[Agent.name]))
    agent = s.get(Agent, name, populate_existing=True)
    assert agent is not None  # inserted above or by another replica
    agent.builtin = True
    leases.register(s, config, agent, PROTOCOL_VERSION, __version__, cluster,
                    capabilities_of(config), now)
    return agent


class StoreLedger:
    def __init__(self, config: Config, store: Store,
                 on_written: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.name = config.agent_name
        self.on_written = on_written

    # --- taking work ------------------------------------------------------------------------

    def claim(self, slots: int, wait_seconds: float) -> list[JobSpec]:
        now = clock.now()
        with self.store.transaction() as s:
            return leases.claim(s, self.config, self.name, slots, now)

    def holding(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.count(Job.id)).where(
                Job.agent == self.name, Job.state.in_(jobstore.ACTIVE))) or 0)

    def queued(self) -> list[JobSpec]:
        with self.store.read() as s:
            jobs = s.scalars(select(Job).where(Job.agent == self.name,
                                               Job.state == JobState.QUEUED.value)
                             .order_by(Job.id)).all()
            return leases.specs(s, jobs)

    def held(self) -> list[str]:
        with self.store.read() as s:
            return [b for b in s.scalars(
                select(Job.backend_id).where(Job.agent == self.name,
                                             Job.state == JobState.SUBMITTED.value,
                                             Job.backend_id.is_not(None))) if b]

    def late_submissions(self) -> list[str]:
        return []  # a submission is recorded in the store before the submitter goes on

    # --- reports ----------------------------------------------------------------------------

    def record_job_dir(self, job: JobSpec, job_dir: Path) -> bool:
        return self._report(job, "job_dir", job_dir=str(job_dir))

    def submitted(self, job: JobSpec, backend_id: str, base_sha: str | None,
                  job_dir: Path, facts: Mapping[str, object]) -> bool:
        return self._report(job, "submitted", backend_id=backend_id, base_sha=base_sha,
                            job_dir=str(job_dir), facts=dict(facts))

    def fail(self, job: JobSpec, reason: str) -> None:
        self._report(job, "failed", reason=reason)

    def _report(self, job: JobSpec, kind: ReportKind, **fields: object) -> bool:
        now = clock.now()
        with self.store.transaction() as s:
            row = s.get(Job, job.id)
            seq = (row.report_seq if row is not None else 0) + 1
            applied = leases.apply_report(s, self.config, self.name, job.id, Report(
                seq=seq, lease_id=job.lease_id, kind=kind, **fields), now)  # type: ignore[arg-type]
            if applied.changed is not None:
                leases.report_changed(s, self.config, [applied.changed], now)
        if applied.changed is not None:
            self.on_written()
        return applied.response.accepted and not applied.response.cancel

    def active(self) -> list[ActiveJob]:
        with self.store.read() as s:
            rows = s.execute(
                select(Job.id, Job.backend_id, Job.job_dir, Job.state, Job.cancel_requested,
                       Job.facts)
                .where(Job.agent == self.name,
                       Job.state.in_([JobState.SUBMITTED.value, JobState.RUNNING.value]),
                       Job.backend_id.is_not(None))).all()
        return [ActiveJob(r.id, r.backend_id, r.job_dir, JobState(r.state),
                          bool(r.cancel_requested), str((r.facts or {}).get("role") or "build"),
                          cache_spec(r.facts or {}))
                for r in rows]

    def apply(self, outcomes: Mapping[int, tuple[Accounting, Outcome]]) -> int:
        now = clock.now()
        changed: list[Job] = []
        with self.store.transaction() as s:
            for job_id, (acct, outcome) in outcomes.items():
                row = s.get(Job, job_id)
                if row is None or row.lease_id is None:
                    continue
                report = outcome_report(row.report_seq + 1, row.lease_id, acct, outcome)
                applied = leases.apply_report(s, self.config, self.name, job_id, report, now)
                if applied.changed is not None:
                    changed.append(applied.changed)
            leases.report_changed(s, self.config, changed, now)
        if changed:
            self.on_written()
        return len(changed)

    def log_tails(self, tails: Mapping[int, str]) -> set[int]:
        """Nothing to send: the control center reads the built-in agent's job directories
        on this machine itself."""
        return set(tails)

    def heartbeat(self, free_slots: int, resources: Mapping[str, object] | None
                  ) -> HeartbeatResponse:
        now = clock.now()
        with self.store.transaction() as s:
            agent = s.get(Agent, self.name) or _builtin_row(s, self.config, now)
            return leases.heartbeat(s, self.config, agent, {}, free_slots, resources, now,
                                    renew_all=True)


class StoreUploads:
    """The built-in agent's :class:`~layerbot.agent.ledger.UploadLedger`: the store itself.

    Its deployments are those of the jobs it built (those of before the fleet included:
    the upgrade made them the built-in agent's). Its ``uploading``
    rows are taken again only when the loop starts (they were cut short by a crash, a stop,
    or a replica that lost the built-in agent's turn): afterwards the loop reports each
    upload before it claims again, so an ``uploading`` row is in its hands.
    """

    def __init__(self, config: Config, store: Store,
                 on_written: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.owner = uploads.Owner(config.agent_name)
        self.on_written = on_written

    def take_uploads(self, slots: int, resume: bool) -> list[UploadSpec]:
        now = clock.now()
        with self.store.read() as s:  # a look first: most polls find nothing
            if not uploads.waiting(s, self.owner, [], now, resume=resume):
                return []
        with self.store.transaction() as s:
            taken = uploads.claim(s, self.config, self.owner, slots, [], now, resume=resume)
            specs = [uploads.spec(s, d) for d in taken]
        if specs:
            self.on_written()
        return specs

    def report_upload(self, spec: UploadSpec, report: UploadReport) -> None:
        with self.store.transaction() as s:
            applied = uploads.apply_report(s, self.config, self.owner, spec.deployment_id,
                                           report, clock.now())
        if applied is not None and applied.changed:
            self.on_written()
