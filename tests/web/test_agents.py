"""The fleet in the control center over HTTP: GET /api/agents, pause/resume/drain of an agent
from the API and the dashboard (decided like pausing the instance), the agents page, the
fleet on the overview, each job's cluster in the lists, costs per cluster.

People are decided through the (fake) GitHub App: mona maintains the repository (may pause),
bob only reads. Tokens are decided by their scopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from layerbot import clock
from layerbot.core.jobs import JobState
from layerbot.store import repos
from layerbot.store.models import Agent, Job
from layerbot.web.auth import create_token
from tests.support.agents import add_agent, lease
from tests.support.fakegithub import FakeGitHub
from tests.support.webhooks import DEFAULT_INSTALLATION_ID
from tests.web.conftest import INSTANCE, REPO, Web
from tests.web.seed import seed

OWNER, NAME = REPO.split("/")
VERBS = ("pause", "resume", "drain", "revoke")


@dataclass
class Fleet:
    web: Web
    leased: int  # a succeeded job cluster-a built
    running: int  # a job cluster-a builds now


@pytest.fixture
def fleet(web_factory: Any, fake_github: FakeGitHub, github_app_key: tuple[str, str]
          ) -> Fleet:
    for login, role in (("mona", "maintain"), ("bob", "read")):
        fake_github.set_permission(OWNER, NAME, login, role)
    web: Web = web_factory(github=fake_github, private_key=github_app_key[0])
    now = clock.now()
    seed(web.store, now=now, prs=2, jobs=8, repo=REPO, instance=INSTANCE)
    add_agent(web.store, web.config, "hpc-a1", now, cluster="cluster-a")
    add_agent(web.store, web.config, "hpc-b1", now, cluster="cluster-b", paused=True)
    with web.store.transaction() as s:
        repos.record(s, REPO, False, DEFAULT_INSTALLATION_ID, now)
        jobs = s.query(Job).order_by(Job.id).all()
        leased = next(j.id for j in jobs if j.state == JobState.SUCCEEDED.value)
        running = next(j.id for j in jobs if j.state == JobState.RUNNING.value)
    lease(web.store, [leased, running], "hpc-a1", now)
    return Fleet(web, leased, running)


def _post(fleet: Fleet, path: str, **client: Any) -> httpx.Response:
    c, csrf = fleet.web.client(**client)
    return c.post(path, headers={"X-CSRF-Token": csrf} if csrf else {})


def _flags(fleet: Fleet, name: str) -> tuple[bool, bool]:
    with fleet.web.store.read() as s:
        agent = s.get(Agent, name)
        assert agent is not None
        return agent.paused, agent.draining


def test_the_api_lists_agents_without_their_tokens(fleet: Fleet) -> None:
    client, _ = fleet.web.client()
    answer = client.get("/api/agents")
    assert answer.status_code == 200, answer.text
    rows = {a["name"]: a for a in answer.json()}
    # The agent inside `serve` is one of the fleet.
    assert set(rows) == {"hpc-a1", "hpc-b1", fleet.web.config.agent_name}
    assert rows[fleet.web.config.agent_name]["builtin"]
    a = rows["hpc-a1"]
    assert (a["cluster"], a["state"], a["version"], a["holding"]) == (
        "cluster-a", "connected", "1.2.3", 1)
    assert a["node_types"] == [{"name": "zen2", "cpu_target": "x86_64/amd/zen2",
                                "accelerator": None, "repo_targets": []}]
    assert a["heartbeat_at"] and a["concurrency"] == 2 and not a["builtin"]
    assert rows["hpc-b1"]["state"] == "paused"
    assert "token" not in answer.text and "lba_" not in answer.text


def test_reads_need_a_login_when_not_public(web_factory: Any) -> None:
    web: Web = web_factory(web={"public_read": False})
    anonymous, _ = web.client()
    assert anonymous.get("/api/agents").status_code == 401
    assert anonymous.get("/agents").status_code == 303


@pytest.mark.parametrize("verb", VERBS)
def test_anonymous_callers_and_people_without_pause_are_refused(fleet: Fleet,
                                                                verb: str) -> None:
    path = f"/api/agents/hpc-a1/{verb}"
    assert _post(fleet, path).status_code == 401
    refused = _post(fleet, path, login="bob")
    assert refused.status_code == 403, refused.text
    assert "not allowed" in refused.json()["detail"] and "bob" in refused.json()["detail"]
    _, secret = create_token(fleet.web.store, "ci", ["build", "cancel", "deploy"], "ci",
                             clock.now())
    token = _post(fleet, path, token=secret)
    assert token.status_code == 403 and "no 'pause' scope" in token.json()["detail"]
    assert _flags(fleet, "hpc-a1") == (False, False)


def test_a_session_needs_the_csrf_token(fleet: Fleet) -> None:
    client, _ = fleet.web.client(login="mona")
    answer = client.post("/api/agents/hpc-a1/pause")
    assert answer.status_code == 403 and "CSRF" in answer.json()["detail"]
    assert _flags(fleet, "hpc-a1") == (False, False)


def test_people_with_pause_pause_drain_and_resume_an_agent(fleet: Fleet) -> None:
    paused = _post(fleet, "/api/agents/hpc-a1/pause", login="mona")
    assert paused.status_code == 200, paused.text
    assert paused.json()["message"] == ("agent hpc-a1 paused: it gets no new jobs; "
                                        "the 1 it holds go on")
    assert _flags(fleet, "hpc-a1") == (True, False)
    _, secret = create_token(fleet.web.store, "ops", ["pause"], "ops", clock.now())
    drained = _post(fleet, "/api/agents/hpc-a1/drain", token=secret)
    assert drained.status_code == 200 and "the 1 it holds finish" in drained.json()["message"]
    assert _flags(fleet, "hpc-a1") == (True, True)
    resumed = _post(fleet, "/api/agents/hpc-a1/resume", token=secret)
    assert resumed.status_code == 200 and "resumed" in resumed.json()["message"]
    assert _flags(fleet, "hpc-a1") == (False, False)
    client, _ = fleet.web.client()
    [a1] = [a for a in client.get("/api/agents").json() if a["name"] == "hpc-a1"]
    assert a1["state"] == "connected"


def test_a_revoked_agents_token_is_refused_from_its_next_request(fleet: Fleet) -> None:
    from layerbot.operations import agents as agentops

    secret = agentops.add(fleet.web.store, "hpc-c1", "operator", clock.now())
    client, _ = fleet.web.client()
    beat = {"Authorization": f"Bearer {secret}", "Layerbot-Agent-Protocol": "1"}
    assert client.post("/agent/v1/heartbeat", json={"free_slots": 1},
                       headers=beat).status_code == 200
    assert _post(fleet, "/api/agents/hpc-c1/revoke", login="bob").status_code == 403
    revoked = _post(fleet, "/api/agents/hpc-c1/revoke", login="mona")
    assert revoked.status_code == 200 and "token revoked" in revoked.json()["message"]
    assert client.post("/agent/v1/heartbeat", json={"free_slots": 1},
                       headers=beat).status_code == 401
    # The claim authenticates in its own transaction: refused all the same, and a wrong
    # protocol is still told before the token.
    claim = client.post("/agent/v1/claim", json={"slots": 1}, headers=beat)
    assert claim.status_code == 401 and claim.headers["www-authenticate"] == "Bearer"
    assert client.post("/agent/v1/claim", json={"slots": 1},
                       headers={**beat, "Layerbot-Agent-Protocol": "0"}).status_code == 426
    [c1] = [a for a in client.get("/api/agents").json() if a["name"] == "hpc-c1"]
    assert c1["state"] == "revoked"
    again = _post(fleet, "/api/agents/hpc-c1/revoke", login="mona")
    assert again.status_code == 409
    mona, _ = fleet.web.client(login="mona")
    assert 'action="/agents/hpc-a1/revoke"' in mona.get("/agents").text


@pytest.mark.parametrize("verb", VERBS)
def test_an_unknown_agent_is_a_404_that_says_so(fleet: Fleet, verb: str) -> None:
    answer = _post(fleet, f"/api/agents/nobody/{verb}", login="mona")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("there is no agent nobody")


def test_the_agents_page_shows_the_fleet_and_buttons_only_to_those_allowed(fleet: Fleet
                                                                           ) -> None:
    anonymous, _ = fleet.web.client()
    page = anonymous.get("/agents")
    assert page.status_code == 200
    for text in ("hpc-a1", "cluster-a", "connected", "hpc-b1", "paused", "1.2.3", "zen2",
                 "1/2", 'href="/agents"'):
        assert text in page.text, text
    assert "<form" not in page.text.split("<main>")[1]
    bob, _ = fleet.web.client(login="bob")
    assert "/agents/hpc-a1/pause" not in bob.get("/agents").text
    mona, csrf = fleet.web.client(login="mona")
    page = mona.get("/agents").text
    assert 'action="/agents/hpc-a1/pause"' in page and 'action="/agents/hpc-a1/drain"' in page
    assert 'action="/agents/hpc-b1/resume"' in page  # paused: resume, not pause
    assert 'action="/agents/hpc-b1/pause"' not in page
    assert f'value="{csrf}"' in page
    assert 'href="/jobs?agent=hpc-a1"' in page


def test_the_dashboards_forms_act_with_the_csrf_token(fleet: Fleet) -> None:
    mona, csrf = fleet.web.client(login="mona")
    assert mona.post("/agents/hpc-a1/drain", data={"csrf": "forged"}).status_code == 403
    done = mona.post("/agents/hpc-a1/drain", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/agents"
    assert _flags(fleet, "hpc-a1") == (False, True)
    assert "agent hpc-a1 drains" in mona.get("/agents").text  # the flash message
    bob, bob_csrf = fleet.web.client(login="bob")
    refused = bob.post("/agents/hpc-a1/resume", data={"csrf": bob_csrf})
    assert refused.status_code == 403 and "not allowed" in refused.text
    anonymous, _ = fleet.web.client()
    login = anonymous.post("/agents/hpc-a1/resume", data={"csrf": ""})
    assert login.status_code == 303 and login.headers["location"].startswith("/login")
    assert mona.post("/agents/hpc-a1/explode", data={"csrf": csrf}).status_code == 404
    missing = mona.post("/agents/nobody/pause", data={"csrf": csrf})
    assert missing.status_code == 404 and "there is no agent nobody" in missing.text


def test_the_overview_shows_the_fleet_by_state(fleet: Fleet) -> None:
    client, _ = fleet.web.client()
    fleet_section = client.get("/").text.split('id="fleet"')[1].split("</section>")[0]
    # hpc-a1 and the agent inside `serve`; hpc-b1
    assert "connected 2" in fleet_section and "paused 1" in fleet_section
    counts = client.get("/api/overview").json()["agents"]
    assert counts == [{"state": "connected", "agents": 2}, {"state": "paused", "agents": 1}]


def test_jobs_show_their_agent_and_cluster(fleet: Fleet) -> None:
    client, _ = fleet.web.client()
    page = client.get("/api/jobs", params={"limit": 200}).json()
    mine = {j["id"]: (j["agent"], j["cluster"]) for j in page["jobs"]}
    assert mine[fleet.leased] == ("hpc-a1", "cluster-a")
    only = client.get("/api/jobs", params={"agent": "hpc-a1"}).json()
    assert sorted(j["id"] for j in only["jobs"]) == sorted([fleet.leased, fleet.running])
    detail = client.get(f"/api/jobs/{fleet.leased}").json()["job"]
    assert (detail["agent"], detail["cluster"]) == ("hpc-a1", "cluster-a")
    listed = client.get("/jobs", params={"agent": "hpc-a1"}).text
    assert "cluster-a" in listed and f"#{fleet.leased}" in listed
    page_of_job = client.get(f"/jobs/{fleet.leased}").text
    assert 'id="cluster">cluster-a' in page_of_job and 'href="/agents#agent-hpc-a1"' in page_of_job


def test_a_queued_job_without_an_agent_is_waiting_for_one(fleet: Fleet) -> None:
    with fleet.web.store.transaction() as s:
        queued = next(j for j in s.query(Job).order_by(Job.id) if j.state == "queued")
        queued_id = queued.id
    client, _ = fleet.web.client()
    assert "waiting for an agent" in client.get(f"/jobs/{queued_id}").text
    assert "waiting for an agent" in client.get("/jobs", params={"state": "queued"}).text


def test_costs_per_cluster_in_the_api_and_the_page(fleet: Fleet) -> None:
    client, _ = fleet.web.client()
    costs = client.get("/api/costs", params={"weeks": 52}).json()
    clusters = {r["key"]: r for r in costs["by_cluster"]}
    with fleet.web.store.read() as s:
        job = s.get(Job, fleet.leased)
        assert job is not None and job.core_hours is not None
        hours = job.core_hours
    assert clusters["cluster-a"]["jobs"] == 1
    assert clusters["cluster-a"]["core_hours"] == pytest.approx(hours)
    assert round(sum(r["core_hours"] for r in costs["by_cluster"]), 6) == pytest.approx(
        costs["total_core_hours"])
    page = client.get("/costs", params={"weeks": 52}).text
    assert "Per cluster" in page and "cluster-a" in page


def test_a_revoked_agent_cannot_be_resumed(fleet: Fleet) -> None:
    from layerbot.operations import agents

    agents.revoke(fleet.web.store, "hpc-b1", clock.now())
    answer = _post(fleet, "/api/agents/hpc-b1/resume", login="mona")
    assert answer.status_code == 409 and "revoked" in answer.json()["detail"]


@pytest.mark.parametrize(("path", "body"), [
    ("/agent/v1/register", {"protocol": True, "version": "1", "cluster": "c",
                            "capabilities": {"backend": "local", "concurrency": 1}}),
    ("/agent/v1/register", {"protocol": 1, "version": "1", "cluster": "c",
                            "capabilities": {"backend": "local", "concurrency": True}}),
    ("/agent/v1/heartbeat", {"free_slots": True}),
    ("/agent/v1/claim", {"slots": True}),
    ("/agent/v1/claim", {"slots": 1, "wait_seconds": False}),
    ("/agent/v1/uploads/claim", {"slots": True}),
    ("/agent/v1/uploads/claim", {"holding": [True]}),
])
def test_a_boolean_where_the_protocol_wants_a_number_is_refused(
        fleet: Fleet, path: str, body: dict[str, Any]) -> None:
    """Found by fuzzing: ``"protocol": true`` registered an agent of protocol 1."""
    from layerbot.operations import agents as agentops

    secret = agentops.add(fleet.web.store, "hpc-d1", "operator", clock.now())
    client, _ = fleet.web.client()
    answer = client.post(path, json=body, headers={"Authorization": f"Bearer {secret}",
                                                   "Layerbot-Agent-Protocol": "1"})
    assert answer.status_code == 422, answer.text
    assert "not true or false" in answer.text


def test_a_whole_number_written_with_a_fraction_is_still_a_number(fleet: Fleet) -> None:
    """JSON Schema calls 2.0 an integer: refusing it would refuse a valid request (the
    fuzzing found that of pydantic's strict mode, tried first against booleans)."""
    from layerbot.operations import agents as agentops

    secret = agentops.add(fleet.web.store, "hpc-d1", "operator", clock.now())
    client, _ = fleet.web.client()
    answer = client.post("/agent/v1/register", json={
        "protocol": 1.0, "version": "1", "cluster": "c",
        "capabilities": {"backend": "local", "concurrency": 2.0}},
        headers={"Authorization": f"Bearer {secret}", "Layerbot-Agent-Protocol": "1"})
    assert answer.status_code == 200, answer.text


def test_a_claim_waiting_for_work_does_not_hold_a_turn(web_factory: Any) -> None:
    """With one claim at a time (``fleet.claims_at_once``), a claim that long-polls for
    work waits outside its turn: another agent's claim is answered at once, not after it."""
    import threading
    import time

    from fastapi.testclient import TestClient

    from layerbot.operations import agents as agentops

    web: Web = web_factory(fleet={"claims_at_once": 1, "claim_wait_seconds": 3})
    headers = {}
    for name in ("waits", "asks"):
        secret = agentops.add(web.store, name, "operator", clock.now())
        headers[name] = {"Authorization": f"Bearer {secret}", "Layerbot-Agent-Protocol": "1"}
    answered: dict[str, float] = {}
    with TestClient(web.app, base_url="http://testserver") as client:  # one event loop
        def claim(name: str, wait: float) -> None:
            started = time.monotonic()
            answer = client.post("/agent/v1/claim", json={"slots": 1, "wait_seconds": wait},
                                 headers=headers[name])
            assert answer.status_code == 200 and answer.json() == {"jobs": []}
            answered[name] = time.monotonic() - started

        waiting = threading.Thread(target=claim, args=("waits", 3.0))
        waiting.start()
        time.sleep(0.5)  # "waits" is polling now
        claim("asks", 0.0)
        assert "waits" not in answered
        waiting.join()
    assert answered["asks"] < 1.0 and answered["waits"] >= 2.5
