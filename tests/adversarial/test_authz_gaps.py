"""Authorization gaps (issue 9, item 12), each attempted for real.

* Someone installs the (public) App on a repository of their own and comments
  ``bot: build``: the bot must not build, and must count the event as not allowed.
* A check run's Re-run names the job by its number only: pressing Re-run in a repository
  where one has write access must not rebuild a job of another repository.
* Pause used to be decided on the repository built last: whoever gets a build recorded in
  a repository of their own (where they are admin) could pause the whole instance.

Without the fixes, the first test finds a build of ``mallory-org/evil``, the second a
build recorded for ``octo-org/other`` as a redo of stack's job, the third a 200 and a
paused instance (each was checked by running it before the fix).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from layerbot import clock
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, planned_from_job, record_build
from layerbot.store.db import Store
from layerbot.store.models import Instance, Job
from tests.adversarial.authz_env import (
    EVIL,
    EVIL_INSTALLATION,
    OTHER,
    metric,
    session,
    wait_finished,
)
from tests.support.fakegithub import FakeGitHub
from tests.support.webhooks import (
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    check_run_rerequested,
    issue_comment_created,
)
from tests.web.conftest import INSTANCE, Web, make_config


def test_an_event_of_a_repository_not_served_builds_nothing_and_is_counted(
        tmp_path: Path) -> None:
    with session(tmp_path) as env:
        env.fake.add_pull("mallory-org", "evil", 1, head_sha="e" * 40)
        comment = env.fake.add_comment("mallory-org", "evil", 1, "bot: build",
                                       login="mallory")
        env.send("issue_comment", issue_comment_created(
            "bot: build", "mallory", repo=EVIL, pr_number=1, comment_id=comment,
            installation_id=EVIL_INSTALLATION))
        [(status, outcome)] = wait_finished(env, "issue_comment", 1)
        assert status == "ignored"
        assert f"{EVIL} is not in github.repositories" in outcome
        assert metric(env, "layerbot_events_not_allowed_total", event="issue_comment") == 1
        with env.db() as conn:
            assert conn.execute("SELECT count(*) FROM builds").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM repositories").fetchone()[0] == 0
        assert not [c for c in env.fake.comments("mallory-org", "evil", 1)
                    if c.user != "mallory"]
        # The repositories it serves still build.
        env.pr(1)
        env.comment(1, "bot: build")
        assert env.wait_jobs(1, JobState.SUCCEEDED.value, 1, timeout=90)


def test_a_rerun_pressed_in_another_repository_does_not_rebuild_the_job(
        tmp_path: Path) -> None:
    with session(tmp_path) as env:
        sha = env.pr(1)
        env.comment(1, "bot: build")
        [job] = env.fake.wait_for(lambda: env.jobs(1), timeout=30, message="no job")
        # mallory may press Re-run in octo-org/other; its PR 1 is hers.
        env.fake.add_pull("octo-org", "other", 1, head_sha="d" * 40)
        env.send("check_run", check_run_rerequested(
            777, sha, repo=OTHER, external_id=str(job["id"]), sender="mallory",
            pull_number=1))
        [(status, outcome)] = wait_finished(env, "check_run", 1)
        assert f"belongs to {DEFAULT_REPO}, not {OTHER}" in outcome, (status, outcome)
        with env.db() as conn:
            builds = conn.execute("SELECT repo FROM builds").fetchall()
            redone = conn.execute("SELECT count(*) FROM jobs WHERE redo_of IS NOT NULL")
            assert [b["repo"] for b in builds] == [DEFAULT_REPO]
            assert redone.fetchone()[0] == 0
        assert not env.fake.comments("octo-org", "other", 1)


def _record(web: Web, repo: str, installation: int) -> None:
    cfg = web.config
    request = BuildRequest(repo=repo, pr=1, installation_id=installation, head_sha="a" * 40,
                           base_ref="main", clone_url="https://x.invalid/r",
                           command="bot: build", requested_by="mallory")
    with web.store.transaction() as s:
        planned = planned_from_job(cfg, Job(node_type="zen2", repo_target="eessi-2023.06",
                                            facts={}))
        assert planned is not None
        record_build(s, cfg, request, [planned], clock.now())


def _paused(web: Web, name: str) -> bool:
    with web.store.read() as s:
        inst = s.get(Instance, name)
        return bool(inst and inst.paused)


def test_pause_is_decided_by_the_configured_repositories_and_this_instance(
        tmp_path: Path, fake_github: FakeGitHub, github_app_key: tuple[str, str]) -> None:
    fake_github.add_installation(EVIL_INSTALLATION, "mallory-org")
    fake_github.set_permission("mallory-org", "evil", "mallory", "admin")
    fake_github.set_permission(*DEFAULT_REPO.split("/"), "mona", "maintain")
    cfg = make_config(tmp_path, github=fake_github, private_key=github_app_key[0])
    web = Web(cfg, Store(cfg.store_url))
    try:
        _record(web, DEFAULT_REPO, DEFAULT_INSTALLATION_ID)
        _record(web, EVIL, EVIL_INSTALLATION)  # the latest build is mallory's
        now = clock.now()
        with web.store.transaction() as s:
            s.add(Instance(name="test-b", version="0", backend="local", started_at=now,
                           heartbeat_at=now, paused=False))
        mallory, csrf = web.client("mallory")
        refused = mallory.post(f"/api/instances/{INSTANCE}/pause",
                               headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 403, refused.text
        form = mallory.post(f"/instances/{INSTANCE}/pause", data={"csrf": csrf})
        assert form.status_code == 403
        drained = mallory.post(f"/api/instances/{INSTANCE}/drain",
                               headers={"X-CSRF-Token": csrf})
        assert drained.status_code == 403
        assert not _paused(web, INSTANCE)
        mona, csrf = web.client("mona")
        for verb in ("pause", "drain"):
            elsewhere = mona.post(f"/api/instances/test-b/{verb}",
                                  headers={"X-CSRF-Token": csrf})
            assert elsewhere.status_code == 409 and "act on it there" in elsewhere.text
        assert not _paused(web, "test-b")
        done = mona.post(f"/api/instances/{INSTANCE}/drain", headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        assert "2 queued job(s) wait for resume" in done.json()["message"]
        assert _paused(web, INSTANCE)
        with web.store.read() as s:
            assert len(s.scalars(select(Job)).all()) == 2
    finally:
        web.store.close()


def test_serve_refuses_to_start_without_an_allow_list(tmp_path: Path) -> None:
    from tests.support.botproc import free_port, write_config
    from tests.support.fakegithub import generate_app_key

    private, _ = generate_app_key()
    config = write_config(tmp_path, api_url="http://127.0.0.1:9", app_id=1,
                          private_key_pem=private, port=free_port(),
                          extra={"github": {"repositories": []}})
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "layerbot", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "github.repositories is empty" in done.stderr
