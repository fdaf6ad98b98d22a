"""A pipeline on the PR, on a real store: reports of the agent applied as the agent API
applies them (the report, then the PR's reports re-derived in the same transaction); the
reply has one row per target and the check runs are one per target, not one per step."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from layerbot import clock
from layerbot.config import Config, load
from layerbot.core.jobs import JobState
from layerbot.core.protocol import Report
from layerbot.operations import leases
from layerbot.store.db import Store
from layerbot.store.models import Build, Job, OutboxMessage
from tests.operations.test_leases import add_agent, queue_jobs
from tests.operations.test_pipelines import DIAMOND, Agent, steps


def config() -> Config:
    return load(None, overrides={
        "fleet": {"builtin_agent": False, "heartbeat_seconds": 1, "lease_seconds": 10,
                  "grace_seconds": 5},
        "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}],
        "reporting": {"check_runs": "live"},
        "web": {"base_url": "https://bot.example"}})


class ReportingAgent(Agent):
    def report(self, job_id: int, kind: str, **fields: Any) -> Any:
        self.seq[job_id] = self.seq.get(job_id, 0) + 1
        with self.store.transaction() as s:
            row = s.get(Job, job_id)
            assert row is not None and row.lease_id is not None
            applied = leases.apply_report(s, self.cfg, self.name, job_id, Report(
                kind=kind, seq=self.seq[job_id], lease_id=row.lease_id, **fields), clock.now())
            if applied.changed is not None:
                leases.report_changed(s, self.cfg, [applied.changed], clock.now())
            return applied


def outbox(store: Store, kind: str) -> list[OutboxMessage]:
    with store.read() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind)
                              .order_by(OutboxMessage.id)))


def test_a_pipeline_is_one_row_and_one_check_run_per_target(store_url: str) -> None:
    store, cfg = Store(store_url), config()
    add_agent(store, cfg, "alpha", ["zen2"])
    plan_job, plain = queue_jobs(store, cfg, 2)
    with store.transaction() as s:  # a build on a PR of an installation: reported
        for build in s.scalars(select(Build)):
            build.installation_id = 7
    me = ReportingAgent(store, cfg, "alpha")
    assert sorted(me.claim()) == [plan_job, plain]
    me.plan(plan_job, DIAMOND)
    me.run(plain, JobState.SUCCEEDED, role="build")
    got = steps(store, plan_job)
    me.claim()
    me.run(got["a"].id, JobState.SUCCEEDED)
    me.run(got["b"].id, JobState.FAILED)  # cancels d
    me.run(got["c"].id, JobState.SUCCEEDED)

    body = outbox(store, "comment")[-1].payload["body"]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert len(rows) == 2, body  # two targets, not seven jobs
    pipe = next(r for r in rows if f"{plan_job} (pipeline, 5 steps)" in r)
    assert "2/5 done, 1 waiting, 1 failed, 1 cancelled" in pipe, pipe
    assert "not built: b" in pipe and "d (not run: it needs step b, which failed)" in pipe

    checks = outbox(store, "check_run")
    keys = {m.payload["key"] for m in checks}
    assert keys == {f"job:{plan_job}", f"job:{plain}"}  # steps have none of their own
    step_ids = {str(j.id) for j in got.values()}
    assert not step_ids & {m.payload["external_id"] for m in checks}

    me.run(got["e"].id, JobState.SUCCEEDED)  # the last unfinished step
    final = [m.payload for m in outbox(store, "check_run")
             if m.payload["key"] == f"job:{plan_job}"][-1]
    assert (final["status"], final["conclusion"]) == ("completed", "failure")
    assert f"[{got['b'].id}](https://bot.example/jobs/{got['b'].id})" in final["output"]["text"]
    assert "3/5 done, 1 failed, 1 cancelled" in final["output"]["title"]
    body = outbox(store, "comment")[-1].payload["body"]
    assert "(2/2 done, 1 succeeded)" in body
    store.close()
