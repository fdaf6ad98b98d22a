"""Private repositories (issue 9, item 11): their PRs, jobs and logs are not public.

The attack: anyone who can reach the control center reads a private repository's job
facts, log tails and PR activity, without login, or logged in with an account that cannot
read that repository, through every route of the API and the dashboard (lists, counts,
charts, costs, details, logs). Without the fix every assertion on the anonymous and
``eve`` answers below fails: the private jobs were listed, counted and shown (checked by
running the module before the fix).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from layerbot import clock
from layerbot.agent.submitter import LOG_NAME
from layerbot.store.db import Store
from layerbot.store.models import Job
from layerbot.web.auth import create_token
from tests.adversarial.authz_env import session
from tests.support.fakegithub import FakeGitHub
from tests.support.webhooks import DEFAULT_INSTALLATION_ID, DEFAULT_REPO, issue_comment_created
from tests.web.conftest import Web, make_config
from tests.web.seed import seed

PUBLIC = DEFAULT_REPO
PRIVATE = "octo-org/secret-stack"
MARKER = "PRIVATE-LOG-7d1f"  # in the private job's log, summary and facts
SESSION_SECRET = "a-session-secret-for-tests-only"  # make_config writes it


@dataclass
class Env:
    web: Web
    private_job: int
    public_jobs: int
    key_lines: list[str]


@pytest.fixture
def env(tmp_path: Path, fake_github: FakeGitHub, github_app_key: tuple[str, str]
        ) -> Iterator[Env]:
    fake_github.add_repo("octo-org", "secret-stack", private=True)
    fake_github.set_permission("octo-org", "secret-stack", "alice", "read")
    cfg = make_config(tmp_path, github=fake_github, private_key=github_app_key[0])
    web = Web(cfg, Store(cfg.store_url))
    now = clock.now()
    public = seed(web.store, now=now, prs=2, jobs=8, repo=PUBLIC,
                  installation_id=DEFAULT_INSTALLATION_ID)
    seed(web.store, now=now, prs=2, jobs=8, repo=PRIVATE, private=True,
         installation_id=DEFAULT_INSTALLATION_ID)
    job_dir = tmp_path / "private-job"
    job_dir.mkdir()
    (job_dir / LOG_NAME).write_text(f"building {MARKER}\n")
    with web.store.transaction() as s:
        job = s.scalars(select(Job).where(Job.repo == PRIVATE).order_by(Job.id)).first()
        assert job is not None
        job.job_dir = str(job_dir)
        job.facts = {"note": MARKER}
        job.result = {"status": "failure", "summary": MARKER, "log_tail": MARKER}
        private_job = job.id
    key_lines = [line for line in github_app_key[0].splitlines() if "-----" not in line]
    yield Env(web, private_job, public.jobs, key_lines)
    web.store.close()


def _lists(client: TestClient) -> list[httpx.Response]:
    return [client.get(path) for path in (
        "/api/overview", "/api/jobs?limit=200", f"/api/jobs?repo={PRIVATE}", "/api/pulls",
        "/api/costs", "/api/instances", "/api/resources", "/api/health", "/api/me",
        "/", "/jobs", f"/jobs?repo={PRIVATE}", "/pulls", "/costs", "/resources")]


def _details(env: Env, client: TestClient) -> list[httpx.Response]:
    job = env.private_job
    return [client.get(path) for path in (
        f"/api/jobs/{job}", f"/api/jobs/{job}/log", f"/api/pulls/{PRIVATE}/1",
        f"/jobs/{job}", f"/jobs/{job}/live", f"/pulls/{PRIVATE}/1")]


def _assert_hidden(env: Env, client: TestClient) -> None:
    for answer in _lists(client):
        assert answer.status_code == 200, (answer.url, answer.status_code)
        assert MARKER not in answer.text, answer.url
        if "repo=" not in str(answer.url):  # a filter echoes what the reader typed
            assert PRIVATE not in answer.text, answer.url
    assert client.get(f"/api/jobs?repo={PRIVATE}").json()["total"] == 0
    assert client.get("/api/jobs").json()["total"] == env.public_jobs
    counts = client.get("/api/overview").json()["counts"]
    assert sum(c["jobs"] for c in counts) == env.public_jobs
    assert client.get("/api/costs").json()["jobs"] <= env.public_jobs
    nowhere = client.get("/api/jobs/999999")
    for answer in _details(env, client):
        # 404 as for a job that does not exist: the private one's existence is not told.
        assert answer.status_code == 404, (answer.url, answer.status_code)
        assert MARKER not in answer.text
        if answer.url.path.startswith("/api/jobs/"):
            assert answer.json()["detail"].replace(str(env.private_job), "N") == \
                nowhere.json()["detail"].replace("999999", "N")


def test_anonymous_readers_see_only_public_repositories(env: Env) -> None:
    client, _ = env.web.client()
    _assert_hidden(env, client)


def test_a_person_who_cannot_read_the_repository_sees_only_public_ones(env: Env) -> None:
    client, _ = env.web.client("eve")
    _assert_hidden(env, client)


def test_acting_on_a_private_job_without_read_access_is_as_if_it_did_not_exist(
        env: Env, fake_github: FakeGitHub) -> None:
    # eve could cancel in the policy's eyes if she could see the repository: she cannot.
    fake_github.set_permission("octo-org", "secret-stack", "eve", "none")
    client, csrf = env.web.client("eve")
    for verb in ("redo", "cancel", "deploy"):
        answer = client.post(f"/api/jobs/{env.private_job}/{verb}",
                             headers={"X-CSRF-Token": csrf})
        nowhere = client.post(f"/api/jobs/999999/{verb}", headers={"X-CSRF-Token": csrf})
        assert answer.status_code == nowhere.status_code == 404, answer.text
        assert answer.json()["detail"] == f"there is no job {env.private_job}"
    form = client.post(f"/jobs/{env.private_job}/cancel", data={"csrf": csrf})
    assert form.status_code == 404 and MARKER not in form.text


def test_a_token_without_read_private_sees_only_public_ones(env: Env) -> None:
    _, secret = create_token(env.web.store, "ci", ["build"], "ops", clock.now())
    client, _ = env.web.client(token=secret)
    _assert_hidden(env, client)


def test_readers_of_the_repository_see_it_and_no_answer_holds_a_secret(env: Env) -> None:
    _, secret = create_token(env.web.store, "ops", ["read_private"], "ops", clock.now())
    for client, _ in (env.web.client("alice"), env.web.client(token=secret)):
        assert client.get("/api/jobs").json()["total"] == env.public_jobs + 8
        detail = client.get(f"/api/jobs/{env.private_job}")
        assert detail.status_code == 200 and MARKER in detail.json()["log_tail"]
        assert MARKER in client.get(f"/api/jobs/{env.private_job}/log").json()["log"]
        assert client.get(f"/api/pulls/{PRIVATE}/1").status_code == 200
        assert MARKER in client.get(f"/jobs/{env.private_job}").text
        for answer in _lists(client) + _details(env, client):
            assert answer.status_code == 200, (answer.url, answer.status_code)
            assert SESSION_SECRET not in answer.text
            assert not [line for line in env.key_lines if line in answer.text]


def test_a_private_repository_learned_from_its_events_is_hidden_from_anonymous(
        tmp_path: Path) -> None:
    with session(tmp_path) as bot:
        bot.pr(1)
        comment = bot.fake.add_comment("octo-org", "stack", 1, "bot: build", login="alice")
        payload = issue_comment_created("bot: build", "alice", pr_number=1,
                                        comment_id=comment)
        payload["repository"]["private"] = True
        bot.send("issue_comment", payload)
        [job] = bot.fake.wait_for(lambda: bot.jobs(1), timeout=30, message="no job")
        with bot.db() as conn:
            assert conn.execute("SELECT private FROM repositories WHERE name = ?",
                                (DEFAULT_REPO,)).fetchone()[0] == 1
        listed = httpx.get(bot.bot.url + "/api/jobs", timeout=10).json()
        assert listed["total"] == 0 and listed["jobs"] == []
        for path in (f"/api/jobs/{job['id']}", f"/api/jobs/{job['id']}/log",
                     f"/api/pulls/{DEFAULT_REPO}/1"):
            assert httpx.get(bot.bot.url + path, timeout=10).status_code == 404
        page = httpx.get(bot.bot.url + "/pulls", timeout=10)
        assert page.status_code == 200 and DEFAULT_REPO not in page.text
