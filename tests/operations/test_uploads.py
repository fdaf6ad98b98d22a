"""Uploads on a real store (SQLite and PostgreSQL): a deployment goes to the agent of its
job, is given out once per attempt, and its report is applied once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from layerbot import clock
from layerbot.config import Config
from layerbot.core.deploy_plan import ArtifactView, JobView, Pick
from layerbot.core.jobs import JobState
from layerbot.core.protocol import UploadReport
from layerbot.operations import uploads
from layerbot.operations.deployments import queue_deployments
from layerbot.store.db import Store
from layerbot.store.models import Artifact, Build, Deployment, Job, OutboxMessage
from tests.operations.test_leases import add_agent, config, queue_jobs

SHA = "c" * 64


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url)


def built_by(store: Store, cfg: Config, agent: str) -> int:
    """A job of ``agent`` that succeeded with an artifact, and a queued deployment of it;
    returns the deployment's id."""
    (job_id,) = queue_jobs(store, cfg, 1)
    now = clock.now()
    with store.transaction() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.agent, job.state, job.ended_at = agent, JobState.SUCCEEDED.value, now
        job.pr = 1
        build = s.get(Build, job.build_id)
        assert build is not None
        build.pr, build.installation_id = 1, 7  # so that the PR's replies are written
        artifact = Artifact(job_id=job_id, name=f"a-{job_id}.tar.gz",
                            path=f"/jobs/job-{job_id}/a.tar.gz", size=10, sha256=SHA)
        s.add(artifact)
        s.flush()
        view = JobView(job_id, job.state, job.head_sha, "x86_64/amd/zen2", None,
                       job.repo_target)
        queue_deployments(s, cfg, job.repo, 1, [Pick(view, ArtifactView(artifact.id, job_id,
                                                                        artifact.name))],
                          by="maint", forced=False, now=now)
        return int(s.scalars(select(Deployment.id)
                             .where(Deployment.artifact_id == artifact.id)).one())


def take(store: Store, cfg: Config, agent: str, holding: Sequence[int] = (),
         now: datetime | None = None) -> list[tuple[int, int]]:
    """(deployment, attempt) given to ``agent``."""
    with store.transaction() as s:
        taken = uploads.claim(s, cfg, uploads.Owner(agent), 5, holding,
                              now or clock.now())
        return [(d.id, d.attempt) for d in taken]


def send(store: Store, cfg: Config, agent: str, deployment_id: int, now: datetime | None = None,
         **fields: object) -> uploads.Applied | None:
    with store.transaction() as s:
        return uploads.apply_report(s, cfg, uploads.Owner(agent), deployment_id,
                                    UploadReport.model_validate(fields), now or clock.now())


def row(store: Store, deployment_id: int) -> Deployment:
    with store.read() as s:
        found = s.get(Deployment, deployment_id)
        assert found is not None
        return found


def two_agents(store: Store) -> Config:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    add_agent(store, cfg, "b", ["zen2"])
    return cfg


def test_a_deployment_goes_to_the_agent_of_its_job_only(store: Store) -> None:
    cfg = two_agents(store)
    mine, theirs = built_by(store, cfg, "a"), built_by(store, cfg, "b")
    assert take(store, cfg, "a") == [(mine, 1)]
    assert row(store, mine).state == "uploading"
    assert row(store, theirs).state == "queued"
    # Another agent can neither see nor report it.
    assert send(store, cfg, "b", mine, attempt=1, outcome="uploaded", key="k") is None
    assert row(store, mine).state == "uploading"


def test_an_uploading_deployment_is_offered_again_only_to_an_agent_not_holding_it(
        store: Store) -> None:
    cfg = two_agents(store)
    d = built_by(store, cfg, "a")
    assert take(store, cfg, "a") == [(d, 1)]
    assert take(store, cfg, "a", holding=[d]) == []  # in its journal: not again
    # The answer was lost (or the journal): the same attempt is offered again.
    assert take(store, cfg, "a") == [(d, 1)]
    assert take(store, cfg, "b") == []


def test_a_report_is_applied_once(store: Store) -> None:
    cfg = two_agents(store)
    d = built_by(store, cfg, "a")
    take(store, cfg, "a")
    done = {"attempt": 1, "outcome": "uploaded", "key": "o/r/pr-1/a.tar.gz", "url": "s3://b/k"}
    first = send(store, cfg, "a", d, **done)
    assert first is not None and first.changed and first.response.accepted
    stamped = row(store, d).updated_at
    again = send(store, cfg, "a", d, **done)  # the acknowledgement was lost
    assert again is not None and again.response.accepted and not again.changed
    settled = row(store, d)
    assert (settled.state, settled.key, settled.url) == ("uploaded", done["key"], done["url"])
    assert settled.updated_at == stamped
    assert take(store, cfg, "a") == []  # never given out again


def test_a_transient_failure_queues_it_again_after_a_growing_delay(store: Store) -> None:
    cfg = two_agents(store)
    d = built_by(store, cfg, "a")
    now = clock.now()
    take(store, cfg, "a", now=now)
    send(store, cfg, "a", d, now=now, attempt=1, outcome="failed", transient=True,
         error="S3 did not answer")
    queued = row(store, d)
    assert queued.state == "queued" and queued.error == "will retry in 5s: S3 did not answer"
    assert take(store, cfg, "a", now=now + timedelta(seconds=4)) == []
    assert take(store, cfg, "a", now=now + timedelta(seconds=6)) == [(d, 2)]
    # A late copy of the first attempt's report changes nothing.
    late = send(store, cfg, "a", d, attempt=1, outcome="failed", transient=True, error="x")
    assert late is not None and not late.response.accepted and "stale" in late.response.detail
    assert row(store, d).state == "uploading"
    later = now + timedelta(seconds=6)
    send(store, cfg, "a", d, now=later, attempt=2, outcome="failed", transient=True,
         error="again")
    assert row(store, d).error == "will retry in 10s: again"
    assert uploads.retry_delay(20) == uploads.RETRY_MAX_SECONDS


def test_a_permanent_failure_ends_failed_until_deployed_again(store: Store) -> None:
    cfg = two_agents(store)
    d = built_by(store, cfg, "a")
    take(store, cfg, "a")
    send(store, cfg, "a", d, attempt=1, outcome="failed", error="credentials refused")
    failed = row(store, d)
    assert (failed.state, failed.error) == ("failed", "credentials refused")
    assert take(store, cfg, "a") == []


def test_the_spec_names_the_file_and_the_control_planes_instance(store: Store) -> None:
    cfg = two_agents(store)
    d = built_by(store, cfg, "a")
    with store.transaction() as s:
        taken = uploads.claim(s, cfg, uploads.Owner("a"), 1, [], clock.now())
        spec = uploads.spec(s, taken[0])
    assert (spec.deployment_id, spec.attempt, spec.instance) == (d, 1, cfg.instance.name)
    assert spec.artifact.sha256 == SHA and spec.cpu_target == "x86_64/amd/zen2"


def test_concurrent_claims_for_one_agent_give_a_deployment_once(store: Store) -> None:
    import threading

    cfg = two_agents(store)
    ids = {built_by(store, cfg, "a") for _ in range(6)}
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        with store.transaction() as s:
            taken = uploads.claim(s, cfg, uploads.Owner("a"), 1, [], clock.now(),
                                  resume=False)
            with lock:
                got.extend(d.id for d in taken)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(set(got)) and set(got) <= ids
    assert len(got) == 6


def test_the_builtin_agent_takes_its_uploading_rows_again_only_when_its_loop_starts(
        store: Store) -> None:
    from layerbot.operations.agent_ledger import StoreUploads

    cfg = two_agents(store)
    ledger = StoreUploads(cfg, store)
    d = built_by(store, cfg, cfg.agent_name)
    assert [s.deployment_id for s in ledger.take_uploads(1, resume=False)] == [d]
    # Cut short (a crash, or another replica took the built-in agent's turn):
    assert ledger.take_uploads(1, resume=False) == []
    [again] = ledger.take_uploads(1, resume=True)
    assert (again.deployment_id, again.attempt) == (d, 1)


def test_two_reports_at_once_leave_the_deploy_reply_showing_both(store: Store) -> None:
    """The second transaction waits for the first before it reads what it renders, so the
    reply written last is not one that misses the other's outcome."""
    import threading
    import time

    cfg = two_agents(store)
    first, second = built_by(store, cfg, "a"), built_by(store, cfg, "b")
    take(store, cfg, "a")
    take(store, cfg, "b")
    done = threading.Event()

    def slow_first() -> None:
        with store.transaction() as s:
            uploads.apply_report(s, cfg, uploads.Owner("a"), first, UploadReport(
                attempt=1, outcome="uploaded", key="k1"), clock.now())
            time.sleep(1.0)  # still uncommitted while the other reports
        done.set()

    thread = threading.Thread(target=slow_first)
    thread.start()
    time.sleep(0.3)
    send(store, cfg, "b", second, attempt=1, outcome="failed", error="no [deploy]")
    thread.join()
    assert done.is_set()
    with store.read() as s:
        bodies = [m.payload["body"] for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.coalesce_key.like("comment:deploy:%"))
            .order_by(OutboxMessage.id))]
    assert "✅ uploaded" in bodies[-1] and "❌ failed" in bodies[-1], bodies[-1]
