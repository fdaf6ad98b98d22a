"""A pipeline in the control center: the plan job's page draws its steps as an SVG graph
(nodes by status, edges for needs, no JavaScript) with a table of steps and their cost;
each step's page links to it; GET /api/jobs/{id}/pipeline; and the costs per target and
per PR count every step (a reused step costs nothing)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from layerbot import clock, control
from layerbot.core.jobs import JobState
from layerbot.store import repos
from layerbot.store.models import Build, Job
from tests.operations.test_leases import add_agent, queue_jobs
from tests.operations.test_pipelines import DIAMOND, Agent, start, steps
from tests.web.conftest import Web

T0 = clock.now() - timedelta(hours=2)


def finish(me: Agent, job_id: int, state: JobState, hours: float, minutes: int = 0) -> None:
    """The job ran ``hours`` core-hours (on one CPU), from ``minutes`` after T0."""
    me.report(job_id, "submitted", backend_id=f"b{job_id}", job_dir=f"/j/{job_id}")
    me.report(job_id, "outcome", state=state.value, elapsed_seconds=hours * 3600, cpus=1,
              started_at=T0 + timedelta(minutes=minutes),
              ended_at=T0 + timedelta(minutes=minutes, hours=hours))


def start_on_pr(me: Agent, pr: int) -> int:
    """A target of a build of PR ``pr`` whose job ran the plan on ``me``."""
    (plan_job,) = queue_jobs(me.store, me.cfg, 1)
    with me.store.transaction() as s:
        job = s.get(Job, plan_job)
        assert job is not None
        job.pr = pr
        build = s.get(Build, job.build_id)
        assert build is not None
        build.pr = pr
    assert plan_job in me.claim(50)
    me.plan(plan_job, DIAMOND)
    return plan_job


@pytest.fixture
def web(web_factory: Any) -> Web:
    made: Web = web_factory()
    with made.store.transaction() as s:  # a public repository: its jobs are for everyone
        repos.record(s, "o/r", False, 1, clock.now())
    return made


def test_the_plan_jobs_page_draws_the_pipeline_and_each_step_links_to_it(web: Web) -> None:
    cfg, store = web.config, web.store
    add_agent(store, cfg, "alpha", ["zen2"], priority=10)  # before the built-in one
    me, plan = start(store, cfg, DIAMOND)
    got = steps(store, plan)
    me.claim()
    finish(me, got["a"].id, JobState.SUCCEEDED, 1.0)
    finish(me, got["b"].id, JobState.FAILED, 0.5, minutes=60)
    client, _ = web.client()

    page = client.get(f"/jobs/{plan}")
    assert page.status_code == 200
    html = page.text
    svg = html[html.index('<svg class="pipeline"'):html.index("</svg>", html.index(
        '<svg class="pipeline"'))]
    for sid in "abcde":
        assert f'data-step="{sid}"' in svg
        assert f'href="/jobs/{got[sid].id}"' in svg
    edges = set(re.findall(r'data-from="(\w)" data-to="(\w)"', svg))
    assert edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert 'class="node n-done" data-step="a"' in svg
    assert 'class="node n-failed" data-step="b"' in svg
    assert 'class="node n-cancelled" data-step="d"' in svg
    assert 'class="node n-waiting" data-step="e"' in svg
    assert "1 h 0 min" in svg  # a's duration on its node
    assert "<script" not in svg
    assert "1/5 done, 2 waiting, 1 failed, 1 cancelled" in html
    assert "not run: it needs step b, which failed" in html  # the table's reasons

    step_page = client.get(f"/jobs/{got['b'].id}").text
    assert f'href="/jobs/{plan}#pipeline"' in step_page
    assert '<svg class="pipeline"' not in step_page  # drawn on the plan job's page

    api = client.get(f"/api/jobs/{got['c'].id}/pipeline")
    assert api.status_code == 200
    body = api.json()
    assert body["plan_job_id"] == plan and body["state"] == "running"
    by_id = {s["step_id"]: s for s in body["steps"]}
    assert by_id["d"]["needs"] == ["b", "c"] and by_id["d"]["depth"] == 3
    assert (by_id["a"]["status"], by_id["a"]["core_hours"]) == ("done", 1.0)
    assert body["core_hours"] == 1.5
    assert body["critical_path"][:2] == ["a", "b"]


def test_a_job_of_no_pipeline_has_none(web: Web) -> None:
    (plain,) = queue_jobs(web.store, web.config, 1)
    client, _ = web.client()
    assert client.get(f"/api/jobs/{plain}/pipeline").status_code == 404
    assert client.get("/api/jobs/999999/pipeline").status_code == 404
    assert 'id="pipeline"' not in client.get(f"/jobs/{plain}").text


def test_costs_per_target_and_per_pr_count_every_step_and_reused_ones_nothing(
        web: Web) -> None:
    cfg, store = web.config, web.store
    add_agent(store, cfg, "alpha", ["zen2"], priority=10)  # before the built-in one
    me, first = start(store, cfg, DIAMOND)
    got = steps(store, first)
    me.claim()
    finish(me, got["a"].id, JobState.SUCCEEDED, 2.0)  # cache key A-1: reused below
    finish(me, got["e"].id, JobState.SUCCEEDED, 0.25)
    second = start_on_pr(me, 2)
    other = steps(store, second)
    assert other["a"].reused_from == got["a"].id
    me.claim()
    finish(me, other["b"].id, JobState.SUCCEEDED, 1.0)

    costs = control.costs(store, clock.now(), weeks=1)
    by_pr = {r.key: r.core_hours for r in costs.by_pr}
    assert by_pr == {"o/r#1": 2.25, "o/r#2": 1.0}  # the reused step cost PR 2 nothing
    assert {r.key: r.core_hours for r in costs.by_target} == {"x86_64/amd/zen2": 3.25}
    assert control.pull_detail(store, "o/r", 1).core_hours == 2.25
    view = control.pipeline_of(store, second, clock.now())
    assert view is not None and view.core_hours == 1.0
    assert {s.step_id: s.status for s in view.steps}["a"] == "reused"
    assert {s.step_id: s.core_hours for s in view.steps}["a"] is None
