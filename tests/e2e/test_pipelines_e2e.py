"""Pipelines from a PR comment to finished steps: a real `layerbot serve` (its built-in
agent on the local executor), real git, a fake GitHub.

The PRs carry their own plan script (bot/plan.sh), which writes a plan with the steps' own
commands; a step that must fail the first time reads a flag file the test removes before
`bot: rebuild failed`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import Session, start_session

Env = Session


def plan_script(steps: list[dict[str, Any]]) -> str:
    plan = json.dumps({"version": 1, "steps": steps})
    return f"#!/bin/bash\ncat > \"$LAYERBOT_PLAN_FILE\" <<'PLAN'\n{plan}\nPLAN\n"


def step(id: str, command: str, *needs: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "command": command, "needs": list(needs), **extra}


def write(name: str, text: str) -> str:
    return f"echo {text} > $LAYERBOT_STEP_OUTPUT/{name}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with start_session(
        tmp_path_factory.mktemp("pipelines-e2e"),
        extra={"backend": {"local": {"max_concurrent": 4}},
               "pipelines": {"max_steps": 20, "max_active_per_pr": 4}}) as session:
        yield session


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    """A directory the job user can read (for the flag a failing step looks at)."""
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path("/tmp") or str(parent) == os.path.dirname(str(parent)):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    return tmp_path


def steps_of(env: Env, number: int) -> dict[str, Any]:
    """The latest attempt of each step of the PR's pipeline, by step id."""
    latest: dict[str, Any] = {}
    for job in env.jobs(number):
        if job["step_id"]:
            latest[job["step_id"]] = job
    return latest


def wait_steps(env: Env, number: int, states: dict[str, str], timeout: float = 90
               ) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        got = steps_of(env, number)
        return got if {k: got[k]["state"] for k in got} == states else None
    try:
        return env.fake.wait_for(ready, timeout=timeout, message=f"PR {number}: steps")
    except AssertionError as exc:
        now = [(j["step_id"], j["state"], j["reason"]) for j in env.jobs(number)]
        raise AssertionError(f"not {states}: {now}; replies: "
                             f"{[c.body for c in env.replies(number)]}") from exc


def test_a_failed_step_cancels_its_dependents_and_rebuild_failed_redoes_only_those(
        env: Env, flags: Path) -> None:
    flag = flags / "fail-b"
    flag.write_text("fail\n")
    flag.chmod(0o644)
    env.pr(1, files={"bot/plan.sh": plan_script([
        step("a", write("a.txt", "A")),
        step("b", f"test ! -e {flag} && cat $LAYERBOT_NEED_A/a.txt > "
                  "$LAYERBOT_STEP_OUTPUT/b.txt", "a"),
        step("c", "cat $LAYERBOT_NEED_B/b.txt && " + write("c.txt", "C"), "b"),
        step("d", write("d.txt", "D"))])})
    env.comment(1, "bot: build")
    first = wait_steps(env, 1, {"a": "succeeded", "b": "failed", "c": "cancelled",
                                "d": "succeeded"})
    assert first["c"]["reason"] == "not run: it needs step b, which failed"
    plan_job = next(j for j in env.jobs(1) if j["step_id"] is None)
    assert plan_job["state"] == "succeeded"
    assert json.loads(plan_job["facts"])["role"] == "plan"

    flag.unlink()
    env.comment(1, "bot: rebuild failed")
    again = wait_steps(env, 1, {"a": "succeeded", "b": "succeeded", "c": "succeeded",
                                "d": "succeeded"})
    assert again["a"]["id"] == first["a"]["id"] and again["d"]["id"] == first["d"]["id"]
    assert again["b"]["redo_of"] == first["b"]["id"]
    assert again["b"]["head_sha"] == first["b"]["head_sha"]
    # b read the artifact of the first run's a; c read the rebuilt b's.
    assert json.loads(again["b"]["needs"]) == {"a": first["a"]["id"]}
    assert len(env.jobs(1)) == 1 + 4 + 2  # the plan, four steps, two of them again
    reply = env.fake.wait_for(lambda: next((c for c in env.replies(1)
                                            if "rebuilding the failed" in c.body), None))
    assert "at the commit they were built at" in reply.body


def test_an_invalid_plan_fails_the_target_with_what_is_wrong(env: Env) -> None:
    env.pr(2, files={"bot/plan.sh": plan_script([
        step("x", "true", "y"), step("y", "true", "x")])})
    env.comment(2, "bot: build")
    (job,) = env.wait_jobs(2, "failed", 1)
    assert job["reason"] == "invalid plan: the steps' needs form a cycle: x -> y -> x"
    reply = env.fake.wait_for(lambda: next((c for c in env.replies(2)
                                            if "cycle" in c.body), None))
    assert "x -> y -> x" in reply.body


def test_a_plan_over_the_sites_limits_is_refused(env: Env) -> None:
    env.pr(3, files={"bot/plan.sh": plan_script([step(f"s{i}", "true") for i in range(21)])})
    env.comment(3, "bot: build")
    (job,) = env.wait_jobs(3, "failed", 1)
    assert "the plan has 21 steps; at most 20 are allowed" in job["reason"]


def test_a_cached_step_is_reused_by_a_second_pr(env: Env) -> None:
    shared = step("toolchain", write("tc.txt", "built-once"), cache_key="toolchain-1")
    env.pr(4, files={"bot/plan.sh": plan_script([
        shared, step("app", "cat $LAYERBOT_NEED_TOOLCHAIN/tc.txt", "toolchain")])})
    env.comment(4, "bot: build")
    first = wait_steps(env, 4, {"toolchain": "succeeded", "app": "succeeded"})
    env.pr(5, files={"bot/plan.sh": plan_script([
        shared, step("tool", "grep built-once $LAYERBOT_NEED_TOOLCHAIN/tc.txt",
                     "toolchain")])})
    env.comment(5, "bot: build")
    second = wait_steps(env, 5, {"toolchain": "succeeded", "tool": "succeeded"})
    reused = second["toolchain"]
    assert reused["reused_from"] == first["toolchain"]["id"]
    assert reused["reason"] == f"reused the artifact of job {first['toolchain']['id']} (PR #4)"
    assert reused["backend_id"] is None  # it never ran


def test_a_pr_of_20_steps_delays_a_one_job_pr_by_at_most_one_slot(env: Env) -> None:
    env.pr(6, files={"bot/plan.sh": plan_script([step(f"s{i}", "sleep 2")
                                                 for i in range(20)])})
    env.comment(6, "bot: build")
    env.fake.wait_for(lambda: sum(j["state"] == "running" for j in env.jobs(6)) == 4,
                      timeout=60, message="PR 6: four steps running")
    env.pr(7, files={"bot/build.sh": "#!/bin/bash\necho '{\"status\": \"success\"}' "
                                     "> result.json\n"})
    env.comment(7, "bot: build")
    (small,) = env.wait_jobs(7, "succeeded", 1, timeout=60)
    big = [j for j in env.jobs(6) if j["step_id"]]
    # Only the step whose slot it took ended before it started; no other step of the big
    # PR started in between.
    started_between = [j for j in big if j["started_at"] and
                       small["created_at"] < j["started_at"] < small["started_at"]]
    assert started_between == [], (small["started_at"], started_between)
    wait_steps(env, 6, {f"s{i}": "succeeded" for i in range(20)}, timeout=120)


def test_cancel_stops_the_whole_pipeline_and_every_step_ends(env: Env) -> None:
    env.pr(8, files={"bot/plan.sh": plan_script([
        step("a", "sleep 60"), step("b", "true", "a"), step("c", "sleep 60")])})
    env.comment(8, "bot: build")
    env.fake.wait_for(lambda: sum(j["state"] == "running" for j in env.jobs(8)) == 2,
                      timeout=60, message="PR 8: a and c running")
    env.comment(8, "bot: cancel")
    wait_steps(env, 8, {"a": "cancelled", "b": "cancelled", "c": "cancelled"})
