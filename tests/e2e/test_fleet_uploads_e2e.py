"""Deployments staged by the agent that built the job: a control plane with no built-in agent
(PostgreSQL, one replica) and two `layerbot agent` processes on the local executor.

``alpha`` has a ``[deploy]`` of its own (a staging directory and its own signing key);
``beta`` has none. A fleet-wide build makes one job on each; the deploy label queues both
artifacts. alpha stages its own (the control plane cannot read it: the file is in alpha's
job directory) once, signed and with its metadata, and the PR says so; beta's fails with
the reason. Neither agent can take or report the other's deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from layerbot.core.protocol import PREFIX, PROTOCOL_HEADER, UploadReport
from layerbot.deploy.metadata import file_sha256, parse_metadata
from layerbot.deploy.signing import Verifier, allowed_signers_line, generate_keypair
from layerbot.deploy.staging import DirStaging
from tests.support.databases import fresh_database
from tests.support.fleet import NAME, OWNER, AgentSpec, Fleet, start_fleet, wait
from tests.support.webhooks import pull_request_event

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

INSTANCE = "fleet"
REPO_TARGET = "eessi-2023.06"
LOCAL = {"kind": "local", "local": {"max_concurrent": 2}}


class Staged:
    """alpha's staging area and the key that signs there."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "alpha-staging"
        pair = generate_keypair(root / "keys" / "alpha_key", comment="layerbot@alpha")
        self.key = pair.private
        self.signers = root / "keys" / "allowed_signers"
        self.signers.write_text(allowed_signers_line("alpha", pair.public_key(), [INSTANCE]))


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    return Staged(tmp_path_factory.mktemp("alpha-keys"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str,
          staged: Staged) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-uploads")
    agents = [
        AgentSpec("alpha", LOCAL, [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}],
                  config={"deploy": {"staging": "dir", "staging_dir": str(staged.dir),
                                     "signing_key_file": str(staged.key)}}),
        AgentSpec("beta", LOCAL, [{"name": "haswell", "cpu_target": "x86_64/intel/haswell"}]),
    ]
    # The control plane's own [deploy] points elsewhere: nothing may land there.
    extra = {"deploy": {"staging": "dir", "staging_dir": str(tmp / "control-plane-staging")},
             "reporting": {"check_runs": "final"}}
    with fresh_database(pg_admin_url, "uploads") as url, start_fleet(
            tmp, url, agents, replicas=1, extra=extra) as f:
        f.fake.set_permission(OWNER, NAME, "maint", "maintain")
        yield f
        f.fake.assert_no_violations()


def label(fleet: Fleet, number: int, login: str) -> None:
    head = fleet.fake.pull(OWNER, NAME, number).head_sha
    assert head is not None
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fleet.send("pull_request", pull_request_event("labeled", number, head, label="bot:deploy",
                                                  sender=login, updated_at=stamp))


def deployments(fleet: Fleet, number: int) -> dict[str, dict[str, Any]]:
    """The PR's deployments by the agent of their job."""
    rows = fleet.sql("SELECT d.*, j.agent FROM deployments d JOIN jobs j ON j.id = d.job_id "
                     "WHERE d.pr = :pr ORDER BY d.id", pr=number)
    return {r["agent"]: dict(r) for r in rows}


def settled(fleet: Fleet, number: int) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        found = deployments(fleet, number)
        ok = len(found) == 2 and all(d["state"] in ("uploaded", "failed")
                                     for d in found.values())
        return found if ok else None
    result: dict[str, dict[str, Any]] = wait(
        done, 90, f"deployments not settled: {deployments(fleet, number)}\n{fleet.logs()}")
    return result


def token_of(fleet: Fleet, agent: str) -> str:
    return (fleet.agents[agent].config.parent / "token").read_text().strip()


def test_the_agent_that_built_a_job_stages_its_artifact_once(fleet: Fleet,
                                                             staged: Staged) -> None:
    head = fleet.pr(1)
    fleet.comment(1, "bot: build")
    fleet.build_reply(1, timeout=120)
    jobs = {j["agent"]: j for j in fleet.jobs(1)}
    assert set(jobs) == {"alpha", "beta"} and {j["state"] for j in jobs.values()} == {
        "succeeded"}, fleet.logs()
    label(fleet, 1, "maint")
    found = settled(fleet, 1)
    alpha, beta = found["alpha"], found["beta"]
    # alpha staged its own artifact, from its own job directory, once.
    assert (alpha["state"], alpha["attempt"]) == ("uploaded", 1), alpha
    key = alpha["key"]
    assert key.startswith(f"{OWNER}/{NAME}/pr-1/{REPO_TARGET}/x86_64/amd/zen2/hello-1.0-")
    area = DirStaging(staged.dir)
    assert sorted(o.key for o in area.list_objects("")) == sorted(
        [key, key + ".sig", key + ".meta.json", key + ".meta.json.sig"])
    [artifact] = fleet.sql("SELECT * FROM artifacts WHERE id = :id", id=alpha["artifact_id"])
    assert artifact["path"].startswith(str(fleet.agents["alpha"].config.parent / "data"))
    assert file_sha256(staged.dir / key) == artifact["sha256"]
    # Signed with alpha's key, in the control plane's namespace; the metadata names the
    # PR, the commit and the job.
    meta_bytes = area.get_bytes(key + ".meta.json")
    meta = parse_metadata(meta_bytes)
    assert meta.layerbot is not None
    assert (meta.layerbot.instance, meta.layerbot.head_sha, meta.layerbot.job_id) == (
        INSTANCE, head, str(jobs["alpha"]["id"]))
    assert (meta.link2pr.repo, meta.link2pr.pr) == (f"{OWNER}/{NAME}", 1)
    verifier = Verifier(staged.signers)
    assert verifier.verify_bytes(meta_bytes, area.get_bytes(key + ".meta.json.sig"),
                                 INSTANCE).ok
    assert verifier.verify_file(staged.dir / key, area.get_bytes(key + ".sig"), INSTANCE).ok
    log = fleet.agents["alpha"].log()
    assert log.count('"artifact uploaded"') == 1, log[-3000:]
    # beta has no [deploy]: it says so rather than staging anywhere.
    assert beta["state"] == "failed" and "agent beta has no [deploy] section" in beta["error"]
    assert not (fleet.root / "control-plane-staging").exists()
    # The PR shows both: the deploy reply, and the build reply's artifacts column.
    reply = fleet.fake.wait_for(
        lambda: next((c for c in fleet.replies(1) if "deployment of this PR" in c.body
                      and "✅ uploaded" in c.body and "❌ failed" in c.body), None),
        timeout=30, message=f"no deploy reply: {[c.body for c in fleet.replies(1)]}")
    assert "agent beta has no [deploy] section" in reply.body
    fleet.fake.wait_for(lambda: any("(uploaded)" in c.body for c in fleet.replies(1)),
                        timeout=30, message="the build reply does not show the upload")


def test_an_agent_can_neither_take_nor_report_another_agents_deployment(
        fleet: Fleet) -> None:
    found = deployments(fleet, 1)
    alpha, beta = found["alpha"], found["beta"]
    url = fleet.replicas[0].url + PREFIX

    def as_agent(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_of(fleet, name)}", PROTOCOL_HEADER: "1",
                "Content-Type": "application/json"}

    # beta's deployment failed and alpha's is settled: a claim finds nothing for either.
    for name in ("alpha", "beta"):
        claimed = httpx.post(f"{url}/uploads/claim", headers=as_agent(name), json={})
        assert claimed.status_code == 200 and claimed.json() == {"uploads": []}, claimed.text
    forged = UploadReport(attempt=alpha["attempt"], outcome="failed", error="stolen")
    for name, theirs in (("beta", alpha), ("alpha", beta)):
        sent = httpx.post(f"{url}/uploads/{theirs['id']}/reports", headers=as_agent(name),
                          content=forged.model_dump_json())
        assert sent.status_code == 404, sent.text
        assert f"not of a job of agent {name}" in sent.text
    anonymous = httpx.post(f"{url}/uploads/claim", headers={PROTOCOL_HEADER: "1"}, json={})
    assert anonymous.status_code == 401
    assert deployments(fleet, 1) == found  # nothing changed
    # A copy of alpha's own report, sent again, is taken and changes nothing.
    again = UploadReport(attempt=alpha["attempt"], outcome="uploaded", key=alpha["key"],
                         url=alpha["url"])
    sent = httpx.post(f"{url}/uploads/{alpha['id']}/reports", headers=as_agent("alpha"),
                      content=again.model_dump_json())
    assert sent.status_code == 200 and sent.json()["accepted"] is True
    assert deployments(fleet, 1) == found
