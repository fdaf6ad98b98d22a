"""Who may act: every action endpoint, for every kind of caller.

People are decided by the same policy as PR commands, through the (fake) GitHub App:
alice has write access (may build and cancel), mona maintains (may also deploy and pause),
bob only reads. Tokens are decided by their scopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from layerbot import clock
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, planned_from_job, record_build
from layerbot.store import jobs as jobstore
from layerbot.store import repos
from layerbot.store.models import Artifact, Instance, Job
from layerbot.web.auth import create_token
from tests.support.fakegithub import FakeGitHub
from tests.support.fakeoauth import FakeOAuth
from tests.support.webhooks import DEFAULT_INSTALLATION_ID
from tests.web.conftest import INSTANCE, REPO, Web

OWNER, NAME = REPO.split("/")
HEAD = "c0ffee" * 6 + "beef"


@dataclass
class Setup:
    web: Web
    failed: int
    running: int
    succeeded: int


@pytest.fixture
def setup(web_factory: Any, fake_github: FakeGitHub, github_app_key: tuple[str, str]
          ) -> Setup:
    for login, role in (("alice", "write"), ("mona", "maintain"), ("bob", "read")):
        fake_github.set_permission(OWNER, NAME, login, role)
    fake_github.add_pull(OWNER, NAME, 1, head_sha=HEAD)
    web: Web = web_factory(github=fake_github, private_key=github_app_key[0])
    now = clock.now()
    request = BuildRequest(repo=REPO, pr=1, installation_id=DEFAULT_INSTALLATION_ID,
                           head_sha=HEAD, base_ref="main", clone_url="https://x.invalid/r",
                           command="bot: build", requested_by="alice")
    cfg = web.config
    with web.store.transaction() as s:
        planned = planned_from_job(cfg, Job(node_type="zen2", repo_target="eessi-2023.06",
                                            facts={}))
        assert planned is not None
        _, jobs = record_build(s, cfg, request, [planned] * 3, now)
        failed, running, succeeded = jobs
        for job, end in ((failed, JobState.FAILED), (running, JobState.RUNNING),
                         (succeeded, JobState.SUCCEEDED)):
            jobstore.transition(s, job, JobState.SUBMITTED, now, backend_id=f"b{job.id}")
            jobstore.transition(s, job, JobState.RUNNING, now)
            if end.terminal:
                jobstore.transition(s, job, end, now)
        s.add(Artifact(job_id=succeeded.id, name="a.tar.gz", path="/x/a.tar.gz", size=1,
                       sha256="0" * 64))
        s.add(Instance(name=INSTANCE, version="0", backend="local", started_at=now,
                       heartbeat_at=now, paused=False))
        # What the repository's events told the bot: it is public (private ones are in
        # tests/adversarial/test_private_repos.py).
        repos.record(s, REPO, False, DEFAULT_INSTALLATION_ID, now)
        s.flush()
        ids = failed.id, running.id, succeeded.id
    return Setup(web, *ids)


#: endpoint name -> (access action, the user who may, path for a setup)
ENDPOINTS: dict[str, tuple[str, str, Any]] = {
    "redo": ("build", "alice", lambda s: f"/api/jobs/{s.failed}/redo"),
    "cancel": ("cancel", "alice", lambda s: f"/api/jobs/{s.running}/cancel"),
    "deploy": ("deploy", "mona", lambda s: f"/api/jobs/{s.succeeded}/deploy"),
    "pause": ("pause", "mona", lambda s: f"/api/instances/{INSTANCE}/pause"),
    "resume": ("pause", "mona", lambda s: f"/api/instances/{INSTANCE}/resume"),
}


def _token(setup: Setup, scopes: list[str]) -> str:
    return create_token(setup.web.store, "ci", scopes, "ci-bot", clock.now())[1]


def _post(setup: Setup, endpoint: str, **client: Any) -> httpx.Response:
    c, csrf = setup.web.client(**client)
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    return c.post(ENDPOINTS[endpoint][2](setup), headers=headers)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_callers_are_refused(setup: Setup, endpoint: str) -> None:
    response = _post(setup, endpoint)
    assert response.status_code == 401, response.text
    assert "log in" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_people_without_permission_are_refused(setup: Setup, endpoint: str) -> None:
    response = _post(setup, endpoint, login="bob")
    assert response.status_code == 403, response.text
    assert "bob" in response.json()["detail"] and "not allowed" in response.json()["detail"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tokens_without_the_scope_are_refused(setup: Setup, endpoint: str) -> None:
    action = ENDPOINTS[endpoint][0]
    others = [s for s in ("build", "cancel", "deploy", "pause") if s != action]
    response = _post(setup, endpoint, token=_token(setup, others))
    assert response.status_code == 403, response.text
    assert f"no '{action}' scope" in response.json()["detail"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_people_the_policy_allows_may(setup: Setup, endpoint: str) -> None:
    response = _post(setup, endpoint, login=ENDPOINTS[endpoint][1])
    assert response.status_code == 200, response.text
    assert response.json()["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tokens_with_the_scope_may(setup: Setup, endpoint: str) -> None:
    response = _post(setup, endpoint, token=_token(setup, [ENDPOINTS[endpoint][0]]))
    assert response.status_code == 200, response.text


def test_actions_with_a_session_need_the_csrf_token(setup: Setup) -> None:
    client, _ = setup.web.client(login="alice")
    response = client.post(f"/api/jobs/{setup.failed}/redo")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    response = client.post(f"/api/jobs/{setup.failed}/redo", headers={"X-CSRF-Token": "x"})
    assert response.status_code == 403


def test_dashboard_forms_need_a_login_and_the_csrf_token(setup: Setup) -> None:
    anonymous, _ = setup.web.client()
    response = anonymous.post(f"/jobs/{setup.failed}/redo", data={"csrf": ""})
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    alice, csrf = setup.web.client(login="alice")
    assert alice.post(f"/jobs/{setup.failed}/redo", data={"csrf": "forged"}).status_code == 403
    bob, bob_csrf = setup.web.client(login="bob")
    refused = bob.post(f"/jobs/{setup.failed}/redo", data={"csrf": bob_csrf})
    assert refused.status_code == 403 and "not allowed" in refused.text
    done = alice.post(f"/jobs/{setup.failed}/redo", data={"csrf": csrf})
    assert done.status_code == 303, done.text[:2000]
    new = int(done.headers["location"].rsplit("/", 1)[1])
    page = alice.get(done.headers["location"])
    assert f"redone as job {new}" in page.text  # the flash message


def test_revoked_and_expired_tokens_are_refused(setup: Setup) -> None:
    store = setup.web.store
    secret = _token(setup, ["build"])
    from layerbot.web.auth import revoke_token

    assert revoke_token(store, "ci", clock.now()) == 1
    client, _ = setup.web.client(token=secret)
    assert client.get("/api/jobs").status_code == 401
    _, expired = create_token(store, "old", ["build"], "ci", clock.now() - timedelta(days=2),
                              clock.now() - timedelta(days=1))
    client, _ = setup.web.client(token=expired)
    assert client.post(f"/api/jobs/{setup.failed}/redo").status_code == 401


def test_tokens_are_stored_hashed(setup: Setup) -> None:
    from layerbot.store.models import ApiToken

    secret = _token(setup, ["cancel"])
    with setup.web.store.read() as s:
        [row] = s.scalars(select(ApiToken)).all()
    assert secret not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
    assert secret.startswith(row.prefix)


def test_reads_need_a_login_when_not_public(web_factory: Any) -> None:
    web: Web = web_factory(web={"public_read": False})
    anonymous, _ = web.client()
    assert anonymous.get("/api/jobs").status_code == 401
    page = anonymous.get("/jobs")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/jobs"
    assert anonymous.get("/healthz").status_code == 200  # probes stay open
    reader, _ = web.client(login="someone")
    assert reader.get("/api/jobs").status_code == 200
    assert reader.get("/jobs").status_code == 200


def test_responses_carry_security_headers(web_factory: Any) -> None:
    web: Web = web_factory(web={"base_url": "https://bot.example.org"})
    client, _ = web.client()
    for path in ("/", "/api/jobs", "/static/style.css"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["strict-transport-security"].startswith("max-age=")
    plain: Web = web_factory()
    assert "strict-transport-security" not in plain.client()[0].get("/").headers


def test_login_with_github_oauth(web_factory: Any, tmp_path: Path) -> None:
    oauth = FakeOAuth(login="mona").start()
    try:
        (tmp_path / "oauth-secret").write_text(oauth.client_secret)
        web: Web = web_factory(web={**oauth.web_config(),
                                    "oauth_client_secret_file": str(tmp_path / "oauth-secret")})
        client, _ = web.client()
        start = client.get("/login", params={"next": "/costs"})
        assert start.status_code == 303
        consent = httpx.get(start.headers["location"], follow_redirects=False)
        callback = consent.headers["location"]
        assert callback.startswith("http://testserver/auth/callback?")
        done = client.get(callback.removeprefix("http://testserver"))
        assert done.status_code == 303 and done.headers["location"] == "/costs"
        assert client.get("/api/me").json()["login"] == "mona"
        replayed = client.get(callback.removeprefix("http://testserver"))
        assert replayed.status_code in (400, 502)  # codes and states are single-use
        # After logging in, only paths of this site: never off to another host.
        evil = client.get("/login", params={"next": "//evil.example/x"})
        consent = httpx.get(evil.headers["location"], follow_redirects=False)
        back = client.get(consent.headers["location"].removeprefix("http://testserver"))
        assert back.status_code == 303 and back.headers["location"] == "/"
    finally:
        oauth.stop()


def test_a_callback_without_the_state_cookie_is_refused(web_factory: Any) -> None:
    web: Web = web_factory()
    client, _ = web.client()
    response = client.get("/auth/callback", params={"code": "x", "state": "y"})
    assert response.status_code == 400
