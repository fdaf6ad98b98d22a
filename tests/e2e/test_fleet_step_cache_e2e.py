"""A cached step built on one agent is reused by another through the staging area: a control
plane (PostgreSQL, one replica, no built-in agent) and two `layerbot agent` processes on the
local executor with the same node type, sharing one staging area (a directory standing in
for the bucket; each agent signs with its own key, and each accepts only the fleet's keys).

PR 1's pipeline runs on alpha (``inst:``): its cached step ``toolchain`` runs and is staged.
PR 2's runs on beta: ``toolchain`` is reused from PR 1's job (the report says which), beta
fetches its artifact into its own store, and the step that needs it reads what alpha built;
the toolchain's command ran once, on alpha. Then the staged object is tampered with, and a
third PR on beta fails the step that needs it with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from layerbot.core.pipeline import UNFETCHED
from layerbot.deploy.signing import allowed_signers_line, generate_keypair
from tests.e2e.test_pipelines_e2e import plan_script, step, write
from tests.support.databases import fresh_database
from tests.support.fleet import AgentSpec, Fleet, start_fleet, wait

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

INSTANCE = "fleet"
LOCAL = {"kind": "local", "local": {"max_concurrent": 2}}
ZEN2 = [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-step-cache")
    staging = tmp / "shared-staging"
    keys = tmp / "keys"
    signers = keys / "allowed_signers"
    lines = []
    specs = []
    for name, priority in (("alpha", 10), ("beta", 0)):
        pair = generate_keypair(keys / name, comment=f"layerbot@{name}")
        lines.append(allowed_signers_line(name, pair.public_key(), [INSTANCE]))
        specs.append(AgentSpec(name, LOCAL, ZEN2, priority=priority, config={
            "deploy": {"staging": "dir", "staging_dir": str(staging),
                       "signing_key_file": str(pair.private)},
            "pipelines": {"allowed_signers_file": str(signers)}}))
    signers.write_text("".join(lines))
    with fresh_database(pg_admin_url, "stepcache") as url, start_fleet(
            tmp, url, specs, replicas=1) as f:
        yield f
        f.fake.assert_no_violations()


def steps_of(fleet: Fleet, number: int) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for job in fleet.jobs(number):
        if job["step_id"]:
            latest[job["step_id"]] = job
    return latest


def wait_steps(fleet: Fleet, number: int, states: dict[str, str], timeout: float = 90
               ) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        got = steps_of(fleet, number)
        return got if {k: got[k]["state"] for k in got} == states else None
    try:
        return wait(ready, timeout, f"PR {number}: steps")
    except AssertionError as exc:
        now = [(j["step_id"], j["state"], j["agent"], j["reason"]) for j in fleet.jobs(number)]
        raise AssertionError(f"not {states}: {now}\n{fleet.logs()}") from exc


def toolchain() -> dict[str, Any]:
    """The cached step: it says where it ran (in the runs file) and leaves its artifact."""
    return step("toolchain", 'echo "toolchain $AGENT_NAME" >> "$RUNS_FILE"; mkdir -p '
                '$LAYERBOT_STEP_OUTPUT/bin && ' + write("bin/tc.txt", "built-on-$AGENT_NAME"),
                cache_key="toolchain-1")


def app(command: str) -> dict[str, Any]:
    return step("app", f'{command} > "$LAYERBOT_STEP_OUTPUT/seen.txt"', "toolchain")


def test_a_cached_step_built_on_one_agent_is_reused_by_another_through_the_staging_area(
        fleet: Fleet) -> None:
    fleet.pr(1, files={"bot/plan.sh": plan_script([
        toolchain(), app("cat $LAYERBOT_NEED_TOOLCHAIN/bin/tc.txt")])})
    fleet.comment(1, "bot: build inst:cluster-alpha")
    first = wait_steps(fleet, 1, {"toolchain": "succeeded", "app": "succeeded"})
    built = first["toolchain"]
    assert built["agent"] == "alpha" and built["reused_from"] is None
    staged = built["result"]["staged"]
    assert staged["signed"] is True and staged["key"].endswith(f"/{built['id']}.tar")
    shared = fleet.root / "shared-staging"
    assert (shared / staged["key"]).stat().st_size == staged["size"]
    assert (shared / (staged["key"] + ".sig")).is_file()

    fleet.pr(2, files={"bot/plan.sh": plan_script([
        toolchain(), app("grep built-on-alpha $LAYERBOT_NEED_TOOLCHAIN/bin/tc.txt")])})
    fleet.comment(2, "bot: build inst:cluster-beta")
    second = wait_steps(fleet, 2, {"toolchain": "succeeded", "app": "succeeded"})
    reused = second["toolchain"]
    assert reused["reused_from"] == built["id"]
    assert reused["reason"] == f"reused the artifact of job {built['id']} (PR #1)"
    assert reused["backend_id"] is None  # it never ran
    assert second["app"]["agent"] == "beta"
    # The toolchain's command ran once, on alpha; beta fetched its artifact into its store.
    assert [r for r in fleet.runs() if r.startswith("toolchain")] == ["toolchain alpha"]
    beta_store = fleet.root / "agent-beta" / "data" / "jobs" / ".step-artifacts"
    assert (beta_store / str(built["id"]) / "bin" / "tc.txt").read_text() == "built-on-alpha\n"
    # Nothing was staged twice: the one object (and its signature) of PR 1's job.
    assert sorted(p.name for p in (shared / staged["key"]).parent.iterdir()) == [
        f"{built['id']}.tar", f"{built['id']}.tar.sig"]


def test_a_tampered_staged_artifact_fails_the_step_that_needs_it(fleet: Fleet) -> None:
    built = steps_of(fleet, 1)["toolchain"]
    obj = fleet.root / "shared-staging" / built["result"]["staged"]["key"]
    beta_store = fleet.root / "agent-beta" / "data" / "jobs" / ".step-artifacts"
    # beta has it already (PR 2): a third agent's view is what a fresh store sees.
    for path in sorted((beta_store / str(built["id"])).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (beta_store / str(built["id"])).rmdir()
    data = bytearray(obj.read_bytes())
    data[700] ^= 0xFF
    obj.write_bytes(bytes(data))
    fleet.pr(3, files={"bot/plan.sh": plan_script([
        toolchain(), app("cat $LAYERBOT_NEED_TOOLCHAIN/bin/tc.txt")])})
    fleet.comment(3, "bot: build inst:cluster-beta")
    third = wait_steps(fleet, 3, {"toolchain": "succeeded", "app": "failed"})
    assert third["app"]["reason"].startswith(f"{UNFETCHED}{built['id']}: ")
    assert "not what its agent staged" in third["app"]["reason"]
    assert not (beta_store / str(built["id"])).exists()
    assert [r for r in fleet.runs() if r.startswith("toolchain")] == ["toolchain alpha"]
