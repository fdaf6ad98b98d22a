"""Pipelines on a real store (SQLite and PostgreSQL), driven through the agent protocol's
operations (claim, report): a plan becomes steps pinned to its agent, a failure cancels
what needs it, `rebuild failed` redoes only that, and a cached step is built once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from layerbot import clock
from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.core.protocol import Report
from layerbot.operations import leases, pipelines
from layerbot.store.db import Store
from layerbot.store.models import Job
from tests.operations.test_leases import add_agent, claim, config, queue_jobs

DIAMOND = {"version": 1, "steps": [
    {"id": "a", "command": "build a", "cache_key": "A-1"},
    {"id": "b", "command": "build b", "needs": ["a"]},
    {"id": "c", "command": "build c", "needs": ["a"]},
    {"id": "d", "command": "build d", "needs": ["b", "c"]},
    {"id": "e", "command": "build e"},
]}


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url)


class Agent:
    """One agent's side of the protocol: the reports of its jobs, numbered as it would."""

    def __init__(self, store: Store, cfg: Config, name: str) -> None:
        self.store, self.cfg, self.name = store, cfg, name
        self.seq: dict[int, int] = {}

    def claim(self, slots: int = 20) -> list[int]:
        return claim(self.store, self.cfg, self.name, slots)

    def report(self, job_id: int, kind: str, **fields: Any) -> Any:
        self.seq[job_id] = self.seq.get(job_id, 0) + 1
        with self.store.transaction() as s:
            row = s.get(Job, job_id)
            assert row is not None and row.lease_id is not None
            return leases.apply_report(s, self.cfg, self.name, job_id, Report(
                kind=kind, seq=self.seq[job_id], lease_id=row.lease_id, **fields),
                clock.now())

    def run(self, job_id: int, state: JobState, role: str = "step",
            result: dict[str, Any] | None = None) -> Any:
        """Submit the job and report how it ended."""
        facts = {**jobs(self.store, [job_id])[0].facts, "role": role}
        self.report(job_id, "submitted", backend_id=f"b{job_id}", job_dir=f"/j/{job_id}",
                    facts=facts)
        return self.report(job_id, "outcome", state=state.value, result=result)

    def plan(self, job_id: int, plan: dict[str, Any]) -> Any:
        return self.run(job_id, JobState.SUCCEEDED, "plan", {"status": "success",
                                                             "plan": plan})


def jobs(store: Store, ids: list[int] | None = None) -> list[Job]:
    with store.read() as s:
        query = s.query(Job).order_by(Job.id)
        return list(query.filter(Job.id.in_(ids)) if ids is not None else query)


def steps(store: Store, plan_job: int) -> dict[str, Job]:
    with store.read() as s:
        return pipelines.latest_attempts(pipelines.pipeline_steps(s, [plan_job]))


def start(store: Store, cfg: Config, plan: dict[str, Any] = DIAMOND, agent: str = "alpha",
          pr: int = 1) -> tuple[Agent, int]:
    """A target whose job ran the plan on ``agent``."""
    (plan_job,) = queue_jobs(store, cfg, 1)
    if pr != 1:
        with store.transaction() as s:
            row = s.get(Job, plan_job)
            assert row is not None
            row.pr = pr
    me = Agent(store, cfg, agent)
    assert plan_job in me.claim(50)
    me.plan(plan_job, plan)
    return me, plan_job


def test_a_plan_becomes_steps_pinned_to_the_agent_that_ran_it(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, plan_job = start(store, cfg)
    add_agent(store, cfg, "beta", ["zen2"], priority=10)  # preferred for new work
    got = steps(store, plan_job)
    assert sorted(got) == ["a", "b", "c", "d", "e"]
    a, b, d = got["a"], got["b"], got["d"]
    assert (b.needs, d.needs) == ({"a": a.id}, {"b": b.id, "c": got["c"].id})
    assert all(j.pinned_agent == "alpha" and j.state == "queued" for j in got.values())
    assert (b.facts["role"], b.facts["step"]["command"], b.facts["step"]["depth"]) == (
        "step", "build b", 2)
    assert Agent(store, cfg, "beta").claim() == []  # not where the artifacts are
    assert sorted(me.claim()) == sorted(j.id for j in got.values())


def test_a_failed_step_cancels_what_needs_it_with_the_reason(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, plan_job = start(store, cfg)
    got = steps(store, plan_job)
    me.claim()
    me.run(got["a"].id, JobState.SUCCEEDED)
    me.report(got["c"].id, "submitted", backend_id="bc", job_dir="/j/c",
              facts=got["c"].facts)
    me.run(got["b"].id, JobState.FAILED)
    after = steps(store, plan_job)
    assert after["d"].state == "cancelled"
    assert after["d"].reason == "not run: it needs step b, which failed"
    assert (after["c"].state, after["e"].state) == ("submitted", "queued")


def test_rebuild_failed_redoes_only_failed_and_cancelled_steps_reusing_the_rest(
        store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, plan_job = start(store, cfg)
    first = steps(store, plan_job)
    me.claim()
    for sid in ("a", "c", "e"):
        me.run(first[sid].id, JobState.SUCCEEDED)
    me.run(first["b"].id, JobState.FAILED)
    with store.transaction() as s:
        assert pipelines.unfinished_steps(pipelines.pipeline_steps(s, [plan_job])) == ["b",
                                                                                      "d"]
        redone = pipelines.rebuild_failed(s, cfg, plan_job, clock.now())
        assert sorted(j.step_id or "" for j in redone) == ["b", "d"]
    again = steps(store, plan_job)
    assert again["b"].id != first["b"].id and again["b"].redo_of == first["b"].id
    assert again["b"].needs == {"a": first["a"].id}  # what succeeded is reused
    assert again["d"].needs == {"b": again["b"].id, "c": first["c"].id}
    assert again["b"].head_sha == first["b"].head_sha  # the same commit
    assert sorted(me.claim()) == [again["b"].id, again["d"].id]
    me.run(again["b"].id, JobState.SUCCEEDED)
    me.run(again["d"].id, JobState.SUCCEEDED)
    with store.read() as s:
        assert pipelines.unfinished_steps(pipelines.pipeline_steps(s, [plan_job])) == []


def test_an_invalid_plan_from_an_agent_fails_the_target_on_the_control_plane(
        store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    cyclic = {"version": 1, "steps": [{"id": "x", "command": "c", "needs": ["y"]},
                                      {"id": "y", "command": "c", "needs": ["x"]}]}
    _, plan_job = start(store, cfg, cyclic)
    (row,) = jobs(store, [plan_job])
    assert row.state == "failed"
    assert row.reason == "invalid plan: the steps' needs form a cycle: x -> y -> x"
    assert steps(store, plan_job) == {}


def test_a_cached_step_is_reused_by_another_pr_and_named(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, first = start(store, cfg)
    a = steps(store, first)["a"]
    me.claim()
    me.run(a.id, JobState.SUCCEEDED)
    _, second = start(store, cfg, pr=2)
    reused = steps(store, second)
    assert reused["a"].state == "succeeded" and reused["a"].reused_from == a.id
    assert reused["a"].reason == f"reused the artifact of job {a.id} (PR #1)"
    assert reused["b"].needs == {"a": a.id}
    assert reused["b"].facts["step"]["shared"] == [a.id]  # read from the store only
    assert a.id not in me.claim()


def test_a_step_being_built_is_waited_for_not_built_again(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, first = start(store, cfg)
    a = steps(store, first)["a"]
    _, second = start(store, cfg, pr=2)
    waiting = steps(store, second)["a"]
    assert (waiting.state, waiting.reused_from) == ("queued", a.id)
    assert waiting.id not in me.claim()  # never leased: it ends as job a ends
    me.run(a.id, JobState.SUCCEEDED)
    assert steps(store, second)["a"].state == "succeeded"


def test_a_failed_shared_step_fails_its_waiters_and_their_dependents(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    me, first = start(store, cfg)
    _, second = start(store, cfg, pr=2)
    me.claim()
    me.run(steps(store, first)["a"].id, JobState.FAILED)
    other = steps(store, second)
    assert other["a"].state == "failed"
    assert (other["b"].state, other["d"].state, other["e"].state) == (
        "cancelled", "cancelled", "queued")


def test_two_plans_at_once_build_a_shared_step_once(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"])
    ids = queue_jobs(store, cfg, 2)
    me = Agent(store, cfg, "alpha")
    me.claim()
    for job_id in ids:
        facts = {**jobs(store, [job_id])[0].facts, "role": "plan"}
        me.report(job_id, "submitted", backend_id=f"b{job_id}", job_dir="/j", facts=facts)
    gate = threading.Barrier(2)
    errors: list[BaseException] = []

    def finish(job_id: int) -> None:
        try:
            gate.wait()
            me.report(job_id, "outcome", state="succeeded",
                      result={"status": "success", "plan": DIAMOND})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a_steps = [steps(store, i)["a"] for i in ids]
    assert sorted(j.reused_from is None for j in a_steps) == [False, True]


# --- cached steps shared between agents through the staging area -------------------------

def staged_result(job_id: int) -> dict[str, Any]:
    return {"status": "success", "staged": {
        "key": f"cache/org/layer/eessi/x86_64/amd/zen2/abc/{job_id}.tar", "sha256": "5" * 64,
        "size": 10240, "signed": True}}


def built_on_alpha(store: Store, cfg: Config, result: dict[str, Any] | None,
                   state: JobState = JobState.SUCCEEDED) -> Job:
    """PR 1's pipeline on agent alpha, its cached step ``a`` ended so; then agent beta,
    preferred, comes."""
    add_agent(store, cfg, "alpha", ["zen2"])
    alpha, first = start(store, cfg)
    a = steps(store, first)["a"]
    alpha.claim()
    if state is JobState.SUCCEEDED:
        alpha.run(a.id, state, result=result)
    add_agent(store, cfg, "beta", ["zen2"], priority=10)
    return a


def test_a_cached_step_staged_by_another_agent_is_reused_and_fetched_by_its_dependents(
        store: Store) -> None:
    cfg = config()
    a = built_on_alpha(store, cfg, staged_result(0))
    beta, second = start(store, cfg, agent="beta", pr=2)
    reused = steps(store, second)
    assert (reused["a"].state, reused["a"].reused_from) == ("succeeded", a.id)
    assert reused["a"].reason == f"reused the artifact of job {a.id} (PR #1)"
    assert reused["b"].pinned_agent == "beta"  # not moved to where the artifact was built
    assert reused["b"].needs == {"a": a.id}
    assert reused["b"].facts["step"]["shared"] == [a.id]
    assert reused["b"].facts["step"]["staged"] == {str(a.id): staged_result(0)["staged"]}
    assert reused["e"].facts["step"]["staged"] == {}
    assert sorted(beta.claim()) == sorted(reused[s].id for s in "bcde")  # a ran nowhere


def test_a_cached_step_another_agent_did_not_stage_is_built_again(store: Store) -> None:
    cfg = config()
    a = built_on_alpha(store, cfg, {"status": "success"})
    _, second = start(store, cfg, agent="beta", pr=2)
    got = steps(store, second)["a"]
    assert (got.state, got.reused_from, got.pinned_agent) == ("queued", None, "beta")
    assert got.id != a.id


def test_a_cached_step_under_way_on_another_agent_is_not_waited_for(store: Store) -> None:
    cfg = config()
    built_on_alpha(store, cfg, None, state=JobState.RUNNING)
    _, second = start(store, cfg, agent="beta", pr=2)
    got = steps(store, second)["a"]
    assert (got.state, got.reused_from) == ("queued", None)


@pytest.mark.parametrize("bad", [
    {"key": "org/layer/pr-1/a.tar", "sha256": "5" * 64, "size": 10},
    {"key": "cache/../x.tar", "sha256": "5" * 64, "size": 10},
    {"key": "cache/a/1.tar", "sha256": "nope", "size": 10},
    {"key": "cache/a/1.tar", "sha256": "5" * 64, "size": -1},
    "cache/a/1.tar"])
def test_a_staged_record_that_is_not_one_is_not_reused(store: Store, bad: Any) -> None:
    cfg = config()
    built_on_alpha(store, cfg, {"status": "success", "staged": bad})
    _, second = start(store, cfg, agent="beta", pr=2)
    assert steps(store, second)["a"].reused_from is None


def test_rebuild_failed_builds_here_a_step_whose_staged_artifact_could_not_be_fetched(
        store: Store) -> None:
    from layerbot.core.pipeline import UNFETCHED

    cfg = config()
    a = built_on_alpha(store, cfg, staged_result(0))
    beta, second = start(store, cfg, agent="beta", pr=2)
    first = steps(store, second)
    beta.claim()
    for sid in "bc":  # what the agent reports when the fetch fails
        beta.report(first[sid].id, "failed",
                    reason=f"{UNFETCHED}{a.id}: sha256 differs; `bot: rebuild failed` ...")
    with store.transaction() as s:
        created = pipelines.rebuild_failed(s, cfg, second, clock.now())
        assert sorted(j.step_id or "" for j in created) == ["a", "b", "c", "d"]
    again = steps(store, second)
    assert (again["a"].reused_from, again["a"].state, again["a"].redo_of) == (
        None, "queued", first["a"].id)
    assert again["b"].needs == {"a": again["a"].id}
    assert again["b"].facts["step"]["staged"] == {}
    # Built here, not staged for the others to fetch again: claimed by beta.
    assert again["a"].id in beta.claim()
