"""`layerbot jobs|redo|cancel|pause|resume|costs|token|agents`, on the local store and remotely."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from layerbot import clock, log
from layerbot.cli.main import app
from layerbot.store.db import Store
from layerbot.store.models import Instance, Job
from tests.support.botproc import free_port, to_toml
from tests.web.conftest import INSTANCE, REPO, REPO_TARGETS, Web
from tests.web.seed import TARGETS, seed

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures logging onto the runner's stderr, which closes after each run:
    point it back at the real one, so later tests can log."""
    yield
    log.configure()


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    config = tmp_path / "layerbot.toml"
    config.write_text(to_toml({
        "instance": {"name": INSTANCE, "data_dir": str(tmp_path / "data")},
        "store": {"url": f"sqlite:///{tmp_path / 'layerbot.db'}"},
        "logging": {"level": "warning"},
        # The seed's targets, so that its jobs can be redone.
        "node_types": [{"name": n, "cpu_target": c} for n, c in TARGETS],
        "repo_targets": REPO_TARGETS}))
    monkeypatch.setenv("LAYERBOT_CONFIG", str(config))
    monkeypatch.delenv("LAYERBOT_API_URL", raising=False)
    monkeypatch.delenv("LAYERBOT_API_TOKEN", raising=False)
    store = Store(f"sqlite:///{tmp_path / 'layerbot.db'}")
    seed(store, now=clock.now(), prs=3, jobs=24, repo=REPO, instance=INSTANCE)
    return store


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def _job_in(store: Store, *states: str) -> int:
    with store.read() as s:
        return next(j.id for j in s.query(Job).order_by(Job.id) if j.state in states)


def test_jobs_lists_and_filters_the_local_store(local: Store) -> None:
    result = run("jobs", "--json", "--limit", "5")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert page["total"] == 24 and len(page["jobs"]) == 5
    failed = json.loads(run("jobs", "--json", "--state", "failed").stdout)
    assert all(j["state"] == "failed" for j in failed["jobs"])
    table = run("jobs", "--pr", "2")
    assert table.exit_code == 0 and "test-a" in table.stdout
    bad = run("jobs", "--state", "exploded")
    assert bad.exit_code == 2 and "unknown state" in bad.output


def test_redo_cancel_pause_resume_on_the_local_store(local: Store) -> None:
    done = _job_in(local, "succeeded", "failed")
    result = run("redo", str(done), "--as", "carol", "--json")
    assert result.exit_code == 0, result.output
    [new] = json.loads(result.stdout)["jobs"]
    cancelled = run("cancel", str(new), "--as", "carol")
    assert cancelled.exit_code == 0 and f"job {new} cancelled" in cancelled.stdout
    again = run("cancel", str(new))
    assert again.exit_code == 1 and "already ended" in again.output
    assert run("pause").exit_code == 0
    with local.read() as s:
        assert s.get(Instance, INSTANCE).paused
    assert "resumed" in run("resume").stdout
    missing = run("redo", "999999")
    assert missing.exit_code == 1 and "no job 999999" in missing.output


def test_costs(local: Store) -> None:
    result = run("costs", "--json", "--weeks", "52")
    data = json.loads(result.stdout)
    assert data["jobs"] > 0 and data["estimates"]
    assert "estimate of the next build" in run("costs").stdout


def test_tokens_are_created_listed_and_revoked(local: Store) -> None:
    created = run("token", "create", "ci", "--scope", "build", "--login", "ci-bot")
    assert created.exit_code == 0
    secret = created.stdout.strip()
    assert secret.startswith("lbt_")
    listed = json.loads(run("token", "list", "--json").stdout)
    assert [(t["name"], t["scopes"], t["revoked"]) for t in listed] == [("ci", ["build"], False)]
    assert secret not in run("token", "list").stdout
    assert run("token", "create", "x", "--scope", "root").exit_code == 2
    assert run("token", "revoke", "ci").exit_code == 0
    assert run("token", "revoke", "ci").exit_code == 1


@pytest.fixture
def server(web_factory: Any) -> Iterator[tuple[str, Web]]:
    web: Web = web_factory()
    seed(web.store, now=clock.now(), prs=2, jobs=16, repo=REPO, instance=INSTANCE)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(web.asgi_without_loops(), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", web
    srv.should_exit = True
    thread.join(5)


def test_remote_commands_go_through_the_api_with_a_token(server: tuple[str, Web],
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    url, web = server
    from layerbot.web.auth import create_token

    _, reader = create_token(web.store, "reader", [], "rita", clock.now())
    _, builder = create_token(web.store, "builder", ["build", "pause"], "bill", clock.now())
    listed = run("jobs", "--remote", url, "--token", reader, "--json", "--limit", "3")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["total"] == 16
    done = _job_in(web.store, "succeeded", "failed")
    refused = run("redo", str(done), "--remote", url, "--token", reader)
    assert refused.exit_code == 1 and "no 'build' scope" in refused.output
    monkeypatch.setenv("LAYERBOT_API_URL", url)
    monkeypatch.setenv("LAYERBOT_API_TOKEN", builder)
    redone = run("redo", str(done), "--json")
    assert redone.exit_code == 0, redone.output
    [new] = json.loads(redone.stdout)["jobs"]
    with web.store.read() as s:
        assert s.get(Job, new).redo_of == done
    assert run("pause", INSTANCE).exit_code == 0
    assert "name the instance" in run("resume").output
    assert run("costs", "--json").exit_code == 0


def test_an_unreachable_remote_is_a_clear_error(local: Store) -> None:
    result = run("jobs", "--remote", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert result.exit_code == 2 and "cannot reach" in result.output
    assert run("jobs", "--remote", "http://127.0.0.1:1").exit_code == 2  # no token



def _fleet(store: Store) -> int:
    """Two agents; the first job leased to the first. Returns that job's id."""
    from layerbot.cli.main import load_config
    from tests.support.agents import add_agent, lease

    cfg = load_config(None)
    now = clock.now()
    add_agent(store, cfg, "hpc-a1", now, cluster="cluster-a")
    add_agent(store, cfg, "hpc-b1", now, cluster="cluster-b")
    job = _job_in(store, "succeeded")
    lease(store, [job], "hpc-a1", now)
    return job


def test_jobs_and_costs_name_the_cluster(local: Store, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    from layerbot.cli import ops

    # A console as wide as the table (rich reads COLUMNS when the console is made).
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(ops.console, "_console", None)
    job = _fleet(local)
    page = json.loads(run("jobs", "--json", "--agent", "hpc-a1").stdout)
    assert [(j["id"], j["agent"], j["cluster"]) for j in page["jobs"]] == [
        (job, "hpc-a1", "cluster-a")]
    table = run("jobs", "--agent", "hpc-a1")
    assert table.exit_code == 0 and "cluster" in table.stdout, table.output
    assert "cluster-a (hpc-a1)" in table.stdout
    costs = json.loads(run("costs", "--json", "--weeks", "52").stdout)
    assert [r["jobs"] for r in costs["by_cluster"] if r["key"] == "cluster-a"] == [1]
    assert "per cluster" in run("costs", "--weeks", "52").stdout


def test_agents_are_listed_paused_drained_and_resumed_on_the_local_store(local: Store
                                                                         ) -> None:
    _fleet(local)
    listed = json.loads(run("agents", "list", "--json").stdout)
    assert [(a["name"], a["cluster"], a["state"], a["holding"]) for a in listed] == [
        ("hpc-a1", "cluster-a", "connected", 0), ("hpc-b1", "cluster-b", "connected", 0)]
    assert all(a["token_prefix"].startswith("lba_") for a in listed)  # this machine only
    assert "hpc-a1" in run("agents", "list").stdout
    paused = run("agents", "pause", "hpc-a1")
    assert paused.exit_code == 0 and "agent hpc-a1 paused" in paused.stdout
    drained = json.loads(run("agents", "drain", "hpc-b1", "--json").stdout)
    assert "is drained" in drained["message"]
    states = {a["name"]: a["state"] for a in json.loads(run("agents", "list", "--json").stdout)}
    assert states == {"hpc-a1": "paused", "hpc-b1": "draining"}
    assert "resumed" in run("agents", "resume", "hpc-a1").stdout
    missing = run("agents", "pause", "nobody")
    assert missing.exit_code == 2 and "there is no agent nobody" in missing.output


def test_agents_through_the_api_with_a_token(server: tuple[str, Web]) -> None:
    url, web = server
    from layerbot.store.models import Agent
    from layerbot.web.auth import create_token
    from tests.support.agents import add_agent

    add_agent(web.store, web.config, "hpc-a1", clock.now(), cluster="cluster-a")
    _, reader = create_token(web.store, "reader", [], "rita", clock.now())
    _, operator = create_token(web.store, "ops", ["pause"], "otto", clock.now())
    listed = run("agents", "list", "--remote", url, "--token", reader, "--json")
    assert listed.exit_code == 0, listed.output
    rows = {a["name"]: a for a in json.loads(listed.stdout)}
    assert rows["hpc-a1"]["cluster"] == "cluster-a" and "token_prefix" not in rows["hpc-a1"]
    assert "hpc-a1" in run("agents", "list", "--remote", url, "--token", reader).stdout
    refused = run("agents", "drain", "hpc-a1", "--remote", url, "--token", reader)
    assert refused.exit_code == 1 and "no 'pause' scope" in refused.output
    drained = run("agents", "drain", "hpc-a1", "--remote", url, "--token", operator)
    assert drained.exit_code == 0 and "agent hpc-a1" in drained.stdout
    with web.store.read() as s:
        agent = s.get(Agent, "hpc-a1")
        assert agent is not None and agent.draining
    missing = run("agents", "resume", "nobody", "--remote", url, "--token", operator)
    assert missing.exit_code == 1 and "404" in missing.output
    assert run("agents", "list", "--remote", url).exit_code == 2  # no token
