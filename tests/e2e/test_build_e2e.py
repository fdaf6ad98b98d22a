"""`bot: build` to finished, reported jobs: a real `layerbot serve`, local backend, real git.

One bot process serves the module (starting one costs seconds); each test uses its own PR.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.botproc import SECRET
from tests.support.e2e import Session, start_session
from tests.support.webhooks import (
    DEFAULT_REPO,
    check_run_rerequested,
    pull_request_event,
)

OWNER, NAME = DEFAULT_REPO.split("/")
JOB_SECRET_PROBE = "do-not-leak-this-value"

SLOW_BUILD = """#!/usr/bin/env bash
# A build that takes a while, for tests that act while it runs.
echo started
sleep ${SLEEP:-30}
echo '{"status": "success", "summary": "slow build done", "artifacts": []}' > result.json
"""

ENV_BUILD = """#!/usr/bin/env bash
env | sort
echo '{"status": "success", "summary": "env printed", "artifacts": []}' > result.json
"""

VERSION_BUILD = """#!/usr/bin/env bash
sleep 1
v=$(cat VERSION)
echo "{\\"status\\": \\"success\\", \\"summary\\": \\"built version $v\\"}" > result.json
"""


Env = Session


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with start_session(
        tmp_path_factory.mktemp("build-e2e"),
        permissions={"alice": "write", "mallory": "read"},
        bot_env={"LAYERBOT_TEST_SECRET_PROBE": JOB_SECRET_PROBE},
        extra={"build": {"allowed_exportvars": ["SLEEP"]},
               "reporting": {"check_runs": "live", "min_edit_interval_seconds": 0.2},
               "backend": {"local": {"max_concurrent": 4}},
               "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
                              {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}],
               "repo_targets": [{"id": "eessi-2023.06", "name": "software.eessi.io",
                                 "version": "2023.06"},
                                {"id": "eessi-2025.06", "name": "software.eessi.io",
                                 "version": "2025.06"}]}) as session:
        yield session


def test_build_of_four_targets_is_reported_in_one_reply_and_check_runs(env: Env) -> None:
    head = env.pr(1)
    comment_id = env.comment(1, "bot: build")
    reply = env.build_reply(1)
    assert env.fake.reactions(comment_id) == ["eyes"]
    assert len(env.replies(1)) == 1  # one reply, edited in place
    assert "4/4 done, 4 succeeded" in reply.body
    for target in ("x86_64/amd/zen2", "x86_64/amd/zen3"):
        assert reply.body.count(f"`{target}`") == 2
    assert reply.body.count("hello-1.0-eessi-") == 4  # artifacts listed
    assert len(reply.history) >= 2  # edited as the jobs moved
    # The agent inside `serve` built them: each row names its cluster.
    [agent] = httpx.get(env.bot.url + "/api/agents", timeout=10).json()
    assert agent["builtin"] and "| repository | cluster | job |" in reply.body
    assert reply.body.count(f"| {agent['cluster']} |") == 4
    def runs() -> list[Any]:
        return [r for r in env.fake.check_runs(OWNER, NAME) if r.head_sha == head]

    env.fake.wait_for(lambda: all(r.status == "completed" for r in runs()), timeout=30)
    assert len(runs()) == 4
    assert {(r.status, r.conclusion) for r in runs()} == {("completed", "success")}
    assert all(r.history[0]["status"] == "queued" for r in runs())
    jobs = env.jobs(1)
    assert {j["head_sha"] for j in jobs} == {head}
    assert all(j["base_sha"] for j in jobs)
    facts = json.loads(Path(jobs[0]["job_dir"], "cfg", "job.json").read_text())
    assert facts["head_sha"] == head


def test_status_reports_latest_results_for_current_head(env: Env) -> None:
    env.pr(2)
    env.comment(2, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.build_reply(2)
    env.comment(2, "bot: status")
    status = env.fake.wait_for(
        lambda: next((c for c in env.replies(2) if "latest result per target" in c.body), None),
        timeout=30)
    assert "x86_64/amd/zen2" in status.body and "succeeded" in status.body


def test_a_commenter_who_may_not_build_is_refused_and_nothing_runs(env: Env) -> None:
    env.pr(3)
    env.comment(3, "bot: build", login="mallory")
    refusal = env.fake.wait_for(lambda: next(iter(env.replies(3)), None), timeout=30)
    assert "not allowed" in refusal.body and "mallory" in refusal.body
    assert "write access" in refusal.body
    assert env.jobs(3) == []


def test_batch_options_are_refused_where_the_backend_allows_none(env: Env) -> None:
    env.pr(15)
    env.comment(15, "bot: build batch:time=08:00:00")
    reply = env.fake.wait_for(lambda: next(iter(env.replies(15)), None), timeout=30)
    assert "batch option `time` may not be set" in reply.body and "local backend" in reply.body
    assert env.jobs(15) == []


def test_a_push_after_the_command_does_not_change_what_is_built(env: Env) -> None:
    first = env.pr(4, files={"VERSION": "1\n", "bot/build.sh": VERSION_BUILD})
    env.comment(4, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.fake.wait_for(lambda: env.jobs(4) and env.jobs(4)[0]["job_dir"], timeout=30)
    second = env.origin.push_pr(4, {"VERSION": "2\n"})
    env.fake.update_pull(OWNER, NAME, 4, head_sha=second)
    reply = env.build_reply(4)
    assert "built version 1" in reply.body
    assert env.jobs(4)[0]["head_sha"] == first


def test_a_job_never_sees_the_bots_secrets(env: Env) -> None:
    env.pr(5, files={"bot/build.sh": ENV_BUILD})
    env.comment(5, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.build_reply(5)
    job = env.jobs(5)[0]
    log = Path(job["job_dir"], f"slurm-{job['id']}.out").read_text()  # EESSI's name
    assert "PATH=" in log  # the job did print its environment
    assert JOB_SECRET_PROBE not in log
    assert SECRET not in log and "LAYERBOT" not in log
    assert "PRIVATE KEY" not in log


def test_a_pr_ref_that_does_not_exist_fails_clearly(env: Env) -> None:
    env.fake.add_pull(OWNER, NAME, 6, head_sha="ab" * 20)  # GitHub knows it; git does not
    env.comment(6, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    reply = env.build_reply(6)
    assert "failed" in reply.body and "git" in reply.body


def test_a_merge_conflict_is_reported_with_the_files(env: Env) -> None:
    env.pr(7, files={"docs/NOTES.md": "the PR's notes\n"})
    env.origin.advance_base({"docs/NOTES.md": "the base's notes\n"})
    env.comment(7, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    reply = env.build_reply(7)
    assert "merge conflict" in reply.body and "docs/NOTES.md" in reply.body


def test_a_missing_job_script_fails_with_a_reason(env: Env) -> None:
    env.pr(8, remove=("bot/build.sh",))
    env.comment(8, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    reply = env.build_reply(8)
    assert "not found" in reply.body and "bot/build.sh" in reply.body
    sha = env.jobs(8)[0]["head_sha"]
    run = env.fake.wait_for(lambda: next((r for r in env.fake.check_runs(OWNER, NAME)
                                          if r.head_sha == sha and r.conclusion), None))
    assert run.conclusion == "failure"


def test_a_job_killed_from_outside_ends_failed_with_its_log(env: Env) -> None:
    env.pr(9, files={"bot/build.sh": SLOW_BUILD})
    env.comment(9, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    job = env.fake.wait_for(
        lambda: next((j for j in env.jobs(9) if j["state"] == "running"), None), timeout=30)
    state = json.loads(Path(job["job_dir"], ".layerbot", "local.json").read_text())
    os.killpg(state["job"]["pgid"], signal.SIGKILL)
    reply = env.build_reply(9)
    assert "failed" in reply.body and "signal" in reply.body
    run = env.fake.wait_for(lambda: next((r for r in env.fake.check_runs(OWNER, NAME)
                                          if r.external_id == str(job["id"]) and r.conclusion),
                                         None))
    assert run.conclusion == "failure" and "started" in (run.output or {}).get("text", "")


def test_cancel_ends_running_jobs(env: Env) -> None:
    env.pr(10, files={"bot/build.sh": SLOW_BUILD})
    env.comment(10, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.fake.wait_for(lambda: any(j["state"] == "running" for j in env.jobs(10)), timeout=30)
    env.comment(10, "bot: cancel")
    reply = env.build_reply(10)
    assert "cancelled" in reply.body and "alice" in reply.body
    # The command itself is answered too, not only the build's reply far up the PR.
    [answer] = [c for c in env.replies(10) if c.body.startswith("> bot: cancel")]
    assert "cancelling 1 job(s)" in answer.body


def test_new_commits_cancel_waiting_jobs_of_older_ones(env: Env) -> None:
    env.pr(11, files={"bot/build.sh": SLOW_BUILD})
    # more jobs than free slots, so some wait
    for _ in range(2):
        env.comment(11, "bot: build exportvariable:SLEEP=20")
    env.fake.wait_for(lambda: len(env.jobs(11)) == 8, timeout=30)
    new = env.origin.push_pr(11, {"x": "y"})
    env.fake.update_pull(OWNER, NAME, 11, head_sha=new)
    env.send("pull_request", pull_request_event("synchronize", 11, new))
    env.fake.wait_for(lambda: any("older commits were cancelled" in c.body
                                  for c in env.replies(11)), timeout=30)
    env.fake.wait_for(lambda: any(j["state"] == "cancelled" for j in env.jobs(11)), timeout=30)
    env.comment(11, "bot: cancel all")


def test_rerun_from_a_check_run_rebuilds_its_commit_only_while_it_is_the_head(env: Env) -> None:
    env.pr(12)
    env.comment(12, "bot: build for:arch=x86_64/amd/zen3 repo:eessi-2025.06")
    env.build_reply(12)
    old_job = env.jobs(12)[0]
    run = next(r for r in env.fake.check_runs(OWNER, NAME) if r.external_id == str(old_job["id"]))

    def rerun(completed_at: str) -> None:
        payload = check_run_rerequested(run.id, old_job["head_sha"], name=run.name,
                                        pull_number=12, external_id=str(old_job["id"]),
                                        sender="alice")
        # As on GitHub: a re-run rewrote the check run, so a second request shows new times.
        payload["check_run"]["completed_at"] = completed_at
        env.send("check_run", payload)

    rerun("2026-12-04T10:00:00Z")
    env.fake.wait_for(lambda: len(env.jobs(12)) == 2 and env.jobs(12)[1]["state"] == "succeeded",
                      timeout=60, message=f"{[dict(j) for j in env.jobs(12)]}")
    assert env.jobs(12)[1]["head_sha"] == old_job["head_sha"]
    assert env.jobs(12)[1]["redo_of"] == old_job["id"]
    # A push after the check run: what the re-runner saw is not the head any more.
    new_head = env.origin.push_pr(12, {"NEWS": "more\n"})
    env.fake.update_pull(OWNER, NAME, 12, head_sha=new_head)
    rerun("2026-12-04T10:05:00Z")
    refusal = env.fake.wait_for(lambda: next((c for c in env.replies(12)
                                              if "builds nothing" in c.body), None), timeout=30)
    assert f"head is now `{new_head[:12]}`" in refusal.body
    assert f"bot: build sha:{new_head[:12]}" in refusal.body
    assert len(env.jobs(12)) == 2  # nothing was built at the new head


def test_the_bot_killed_while_jobs_run_picks_them_up(env: Env) -> None:
    env.pr(13, files={"bot/build.sh": SLOW_BUILD})
    env.comment(13, "bot: build for:arch=x86_64/amd/zen2 exportvariable:SLEEP=4")
    env.fake.wait_for(lambda: len(env.jobs(13)) == 2
                      and all(j["state"] == "running" for j in env.jobs(13)), timeout=30)
    env.bot.kill()
    time.sleep(0.5)
    env.bot.start()
    reply = env.build_reply(13, timeout=60)
    assert "2/2 done, 2 succeeded" in reply.body


def test_closing_a_pr_cancels_its_waiting_jobs(env: Env) -> None:
    head = env.pr(14, files={"bot/build.sh": SLOW_BUILD})
    env.comment(14, "bot: build exportvariable:SLEEP=30")
    env.comment(14, "bot: build exportvariable:SLEEP=30")  # 8 jobs: more than the 4 slots
    env.fake.wait_for(lambda: len(env.jobs(14)) == 8
                      and all(j["backend_id"] for j in env.jobs(14)), timeout=30)
    env.send("pull_request", pull_request_event("closed", 14, head))
    env.fake.wait_for(lambda: any("pull request was closed" in c.body for c in env.replies(14)),
                      timeout=30)
    # waiting jobs in the backend are cancelled there by the next reconcile cycle
    env.fake.wait_for(lambda: any(j["state"] == "cancelled" for j in env.jobs(14)), timeout=30)
    env.comment(14, "bot: cancel all")  # the running ones of both builds, to free the slots
    env.fake.wait_for(lambda: all(j["state"] == "cancelled" for j in env.jobs(14)), timeout=30)


def test_status_last_build_shows_the_jobs_of_the_latest_build_only(env: Env) -> None:
    env.pr(15)
    env.comment(15, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.wait_jobs(15, "succeeded", 1)
    env.comment(15, "bot: build for:arch=x86_64/amd/zen3 repo:eessi-2025.06")
    env.wait_jobs(15, "succeeded", 2)
    first, second = (job["id"] for job in env.jobs(15))
    env.comment(15, "bot: status last_build")
    last = env.fake.wait_for(
        lambda: next((c for c in env.replies(15) if "the latest build" in c.body), None),
        timeout=30)
    assert f"| {second} |" in last.body and f"| {first} |" not in last.body
    env.comment(15, "bot: status")
    every = env.fake.wait_for(
        lambda: next((c for c in env.replies(15) if "latest result per target" in c.body), None),
        timeout=30)
    assert f"| {second} |" in every.body and f"| {first} |" in every.body


def test_cancel_by_default_cancels_the_jobs_of_the_latest_build(env: Env) -> None:
    env.pr(16, files={"bot/build.sh": SLOW_BUILD})
    env.comment(16, "bot: build for:arch=x86_64/amd/zen2 repo:eessi-2023.06")
    env.wait_jobs(16, "running", 1, timeout=30)
    env.comment(16, "bot: build for:arch=x86_64/amd/zen3 repo:eessi-2025.06")
    env.fake.wait_for(lambda: [j["state"] for j in env.jobs(16)] == ["running", "running"],
                      timeout=30)
    env.comment(16, "bot: cancel")
    env.fake.wait_for(lambda: env.jobs(16)[1]["state"] == "cancelled", timeout=30)
    earlier = env.jobs(16)[0]
    assert earlier["state"] == "running" and not earlier["cancel_requested"]
    env.comment(16, "bot: cancel")  # the latest build has nothing left: the reply says so
    env.fake.wait_for(lambda: any("1 job(s) of earlier builds have not ended" in c.body
                                  for c in env.replies(16)), timeout=30)
    env.comment(16, "bot: cancel all")
    env.wait_jobs(16, "cancelled", 2, timeout=30)
