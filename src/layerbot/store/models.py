"""The tables. Every arrow of the flow that crosses a process or network boundary goes
through one of them: the inbox (events in), jobs (work out), the outbox (writes to GitHub).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
    select,
    table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use layerbot.clock.now()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class InboxEvent(Base):
    """A webhook delivery, stored before it is answered and handled after."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("hook_id", "delivery_id", name="uq_inbox_delivery"),
        # The event's own identity (core/events.py): a replayed body under a fresh
        # delivery id is refused by the store itself.
        UniqueConstraint("instance", "identity", name="uq_inbox_identity"),
        Index("ix_inbox_status_due", "status", "next_attempt_at"),
        Index("ix_inbox_ordering", "ordering_key", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(100))
    hook_id: Mapped[str] = mapped_column(String(40))
    delivery_id: Mapped[str] = mapped_column(String(80))
    event: Mapped[str] = mapped_column(String(60))
    action: Mapped[str | None] = mapped_column(String(60))
    #: Events with the same key (one pull request) are handled one at a time, in order.
    ordering_key: Mapped[str] = mapped_column(String(300))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    #: pending | processing | handled | ignored | failed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    #: sha256 of what happened (read from the signed body); None for events without one.
    identity: Mapped[str | None] = mapped_column(String(64))


class OutboxMessage(Base):
    """A write to GitHub, stored in the transaction of the state change that causes it.

    Messages with a ``coalesce_key`` (the edits of one comment or check run) are merged
    while pending: only the newest content is sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_due", "status", "next_attempt_at"),
        Index("ix_outbox_coalesce", "coalesce_key", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(40))
    repo: Mapped[str] = mapped_column(String(200))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    coalesce_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    #: pending | sending | sent | failed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    #: How many enqueued versions this message stands for (coalesced edits).
    versions: Mapped[int] = mapped_column(Integer, default=1)


class GitHubObject(Base):
    """The GitHub id of something the bot created (a reply comment, a check run), by key."""

    __tablename__ = "github_objects"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    github_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    #: When it was last written to GitHub (edits are spaced by min_edit_interval_seconds).
    updated_at: Mapped[datetime | None]


class RateLimit(Base):
    __tablename__ = "rate_limits"

    resource: Mapped[str] = mapped_column(String(40), primary_key=True)
    limit: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    reset_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Build(Base):
    """One `bot: build` (or redo, re-run, layerbot run) on one instance."""

    __tablename__ = "builds"
    __table_args__ = (Index("ix_builds_pr", "repo", "pr"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(100))
    repo: Mapped[str] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    head_sha: Mapped[str] = mapped_column(String(64))
    base_ref: Mapped[str] = mapped_column(String(255))
    clone_url: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(100))
    comment_id: Mapped[int | None] = mapped_column(BigInteger)
    delivery_id: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime]
    #: Key of the reply comment in github_objects.
    report_key: Mapped[str] = mapped_column(String(200))
    #: A line shown above the job table (e.g. jobs cancelled by a push).
    note: Mapped[str | None] = mapped_column(Text)
    #: When the PR was closed (job directories are archived after a retention).
    closed_at: Mapped[datetime | None]


#: The two columns of ``agents`` a job's cluster is read from (``Job.cluster``; the ``Agent``
#: model is declared below ``Job``).
_AGENT_CLUSTERS = table("agents", column("name", String), column("cluster", String))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state", "instance", "state"),
        Index("ix_jobs_pr", "repo", "pr"),
        Index("ix_jobs_build", "build_id"),
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_pipeline", "pipeline_id"),
        Index("ix_jobs_cache", "cache_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"))
    instance: Mapped[str] = mapped_column(String(100))
    repo: Mapped[str] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(200))  # e.g. x86_64/amd/zen2 or .../nvidia/cc80
    node_type: Mapped[str] = mapped_column(String(100))
    repo_target: Mapped[str] = mapped_column(String(100))
    head_sha: Mapped[str] = mapped_column(String(64))
    base_ref: Mapped[str] = mapped_column(String(255))
    base_sha: Mapped[str | None] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(20))
    backend_id: Mapped[str | None] = mapped_column(String(500))
    job_dir: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    elapsed_seconds: Mapped[float | None] = mapped_column(Float)
    cpus: Mapped[int | None] = mapped_column(Integer)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    node: Mapped[str | None] = mapped_column(String(200))
    core_hours: Mapped[float | None] = mapped_column(Float)
    #: The job this one redoes, if any.
    redo_of: Mapped[int | None] = mapped_column(Integer)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Set by `bot: cancel`, a push or a close; the reconciler cancels it in the backend.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The agent that holds the job's lease (None: waiting for one), and the lease: its id
    #: (each lease a new one, so a report under an old lease is refused) and its end.
    agent: Mapped[str | None] = mapped_column(String(100))
    lease_id: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[datetime | None]
    #: The last report of the agent applied (reports are idempotent by this number).
    report_seq: Mapped[int] = mapped_column(Integer, default=0)
    #: The command's ``inst:`` pattern: only agents whose name or cluster match build it.
    agent_filter: Mapped[str | None] = mapped_column(String(200))
    #: Pipelines (docs/pipelines.md). A step is a job of its own: its target's plan job
    #: (``pipeline_id``), its id in the plan, the jobs it needs ({step id: job id}) and its
    #: cache key. Every step runs on the agent that ran the plan (``pinned_agent``), where
    #: the artifacts of the steps it needs are. A step reused from another job's artifact
    #: (``reused_from``) never runs: it ends as that job ends.
    pipeline_id: Mapped[int | None] = mapped_column(Integer)
    step_id: Mapped[str | None] = mapped_column(String(64))
    needs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cache_key: Mapped[str | None] = mapped_column(String(200))
    reused_from: Mapped[int | None] = mapped_column(Integer)
    pinned_agent: Mapped[str | None] = mapped_column(String(100))
    #: Claimed before others (the PR had `pipelines.priority_label` when it was asked for).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: The cluster of the job's agent (None: no agent yet, or a job from before the fleet):
    #: read, never written. Deferred: loaded only when selected or touched.
    cluster: Mapped[str | None] = column_property(
        select(_AGENT_CLUSTERS.c.cluster).where(_AGENT_CLUSTERS.c.name == agent)
        .scalar_subquery(), deferred=True)


class JobTransition(Base):
    """Every state change of a job, with its time: the job's history."""

    __tablename__ = "job_transitions"
    __table_args__ = (Index("ix_transitions_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifact_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class Deployment(Base):
    """One artifact's way to the staging area. Unique per artifact: never uploaded twice."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("artifact_id", name="uq_deployment_artifact"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    repo: Mapped[str] = mapped_column(String(200))
    pr: Mapped[int | None] = mapped_column(Integer)
    #: queued | uploading | uploaded | skipped | failed | ingested | rejected
    state: Mapped[str] = mapped_column(String(20))
    key: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(100))
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    report_key: Mapped[str | None] = mapped_column(String(200))
    #: How many times an agent was given it (``queued -> uploading``); a report names the
    #: attempt it is about, so a late copy of an earlier attempt's report changes nothing.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    #: Transient failures in a row, and when the next try may start (None: at once).
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None]


class Instance(Base):
    """A bot instance of the fleet: alive while its heartbeat is fresh."""

    __tablename__ = "instances"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(40))
    backend: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Agent(Base):
    """An agent of the fleet: a cluster's login-node process that pulls jobs.

    It authenticates with its own token, of which only the sha256 is kept. ``builtin``
    marks the agent inside an embedded ``serve`` (no token: it never speaks HTTP).
    """

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_agent_token_hash"),)

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    cluster: Mapped[str] = mapped_column(String(100))
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str | None] = mapped_column(String(64))
    token_prefix: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    #: Higher first when several agents can build a job.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    #: What it said when it registered (None: never connected).
    protocol: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(40))
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    registered_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    #: Free slots and resources as of its last heartbeat.
    load: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiToken(Base):
    """A token for scripts (the control center's API and `layerbot --remote`).

    Only the sha256 of the secret is kept: a leaked database does not leak usable tokens.
    ``scopes`` name the actions the token may take (redo, cancel, deploy, pause) besides
    reading; they are granted by whoever creates the token on the bot's own machine.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    #: The first characters of the secret, to recognise a token in lists.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]]
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class PullPush(Base):
    """The latest push to a PR an instance handled: commands written before it are stale.

    ``pushed_at`` is GitHub's own time of the push (see ``store/pushes.py`` for why).
    """

    __tablename__ = "pull_pushes"

    instance: Mapped[str] = mapped_column(String(100), primary_key=True)
    repo: Mapped[str] = mapped_column(String(200), primary_key=True)
    pr: Mapped[int] = mapped_column(Integer, primary_key=True)
    head_sha: Mapped[str] = mapped_column(String(64))
    pushed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]



class Repository(Base):
    """A repository the bot received events from, and whether GitHub says it is private.

    The control center shows a repository's PRs, jobs and logs without login only when it
    is known to be public: a repository without a row (never seen in an event) counts as
    private, so nothing is public by accident.
    """

    __tablename__ = "repositories"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    private: Mapped[bool] = mapped_column(Boolean)
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class SingletonLock(Base):
    """A loop that runs in one replica at a time (the GitHub sender, delivery recovery):
    held by ``holder`` until ``expires_at``, renewed while it runs (``store/locks.py``)."""

    __tablename__ = "singleton_locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: ``instance:host:port:pid:random`` of the process that holds it.
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


#: Claims look for unleased queued jobs; the lease reaper for expired leases.
Index("ix_jobs_agent", Job.agent, Job.state)

#: The overview's "failures of the last 24 hours" and cost queries read jobs by end time.
Index("ix_jobs_ended", Job.ended_at)
