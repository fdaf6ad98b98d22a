"""A fleet on this machine: control-plane replicas (`layerbot serve`) sharing one database,
and agents (`layerbot agent`) as separate processes, each with its own data directory,
backend and node types, talking to the replicas over HTTP only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from layerbot import clock
from layerbot.operations import agents as agentops
from layerbot.store.db import Store
from tests.support.botproc import BotProcess, free_port, merged, to_toml, write_config
from tests.support.e2e import BASE_CONFIG, Session
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")

#: Short leases, so that a lost agent shows within seconds.
FLEET_TIMING = {"heartbeat_seconds": 0.5, "lease_seconds": 4.0, "grace_seconds": 3.0,
                "claim_wait_seconds": 2.0}


@dataclass
class AgentProcess:
    """`layerbot agent` in a subprocess with its log in a file."""

    name: str
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    #: Where the Slurm of scripts/slurm.sh keeps its configuration ("" without one).
    slurm_conf: str = ""

    def __post_init__(self) -> None:
        self.log_path = self.config.parent / "agent.log"

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "layerbot", "agent", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("LAYERBOT_")}
            | {"SLURM_CONF": self.slurm_conf})
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL of the agent process alone (its jobs' processes live on, as on a
        login node whose agent crashed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """Cut off: the process stops answering and sending (SIGSTOP)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def unpause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Fleet(Session):
    """A session whose bot is the first replica; ``replicas`` and ``agents`` are all."""

    def __init__(self, fake: FakeGitHub, origin: Origin, replicas: list[BotProcess],
                 agents: dict[str, AgentProcess], store_url: str, root: Path) -> None:
        super().__init__(fake, origin, replicas[0])
        self.replicas = replicas
        self.agents = agents
        self.store_url = store_url
        self.root = root
        self.runs_file = root / "runs.log"

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(self.store_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params).mappings())
        finally:
            engine.dispose()

    def jobs(self, number: int) -> list[Any]:  # type: ignore[override]
        return self.sql("SELECT * FROM jobs WHERE pr = :pr ORDER BY id", pr=number)

    def runs(self) -> list[str]:
        """One line per job script that ran: '<job dir> <agent>'."""
        if not self.runs_file.exists():
            return []
        return [ln for ln in self.runs_file.read_text().splitlines() if ln.strip()]

    def logs(self) -> str:
        parts = [f"== replica {r.port}\n{r.log()[-4000:]}" for r in self.replicas]
        parts += [f"== agent {a.name}\n{a.log()[-4000:]}" for a in self.agents.values()]
        return "\n".join(parts)


def agent_config(directory: Path, name: str, servers: str, token: str, *,
                 backend: Mapping[str, Any], node_types: list[dict[str, Any]],
                 origin_root: Path, runs_file: Path, concurrency: int = 8,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """The agent's layerbot.toml; ``extra`` is merged in (e.g. its ``[deploy]``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "token").chmod(0o600)
    data: dict[str, Any] = {
        "instance": {"name": name, "data_dir": str(directory / "data")},
        "logging": {"format": "json", "level": "info"},
        "agent": {"name": name, "cluster": f"cluster-{name}", "server_url": servers,
                  "token_file": "token", "concurrency": concurrency,
                  "log_tail_seconds": 0.5},
        "build": {"time_limit_minutes": 2, "clone_url": str(origin_root / "{repo}"),
                  "env": {"RUNS_FILE": str(runs_file), "AGENT_NAME": name},
                  "env_allowlist": ["PATH", "LANG"], "allowed_exportvars": ["SLEEP"]},
        "backend": {"poll_seconds": 0.3, **backend},
        "node_types": node_types,
        "repo_targets": BASE_CONFIG["repo_targets"],
    }
    path = directory / "layerbot.toml"
    path.write_text(to_toml(merged(data, extra or {})))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class AgentSpec:
    name: str
    backend: Mapping[str, Any]
    node_types: list[dict[str, Any]]
    priority: int = 0
    #: More of the agent's layerbot.toml (its ``[deploy]``, say).
    config: Mapping[str, Any] = field(default_factory=dict)


@contextmanager
def start_fleet(tmp: Path, store_url: str, agents: list[AgentSpec], *, replicas: int = 2,
                extra: Mapping[str, Any] | None = None) -> Iterator[Fleet]:
    """A fake GitHub, an origin, ``replicas`` control planes on ``store_url`` (no built-in
    agent) and the agents, each with its own token."""
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    runs = tmp / "runs.log"
    runs.touch()
    runs.chmod(0o666)  # the job user appends to it
    tmp.chmod(0o755)
    settings = merged(merged(BASE_CONFIG, {
        "fleet": {**FLEET_TIMING, "builtin_agent": False},
        "node_types": [], "server": {"worker_process": True}}), extra or {})
    procs: list[BotProcess] = []
    started: dict[str, AgentProcess] = {}
    try:
        for i in range(replicas):
            port = free_port()
            config = write_config(tmp / f"replica-{i}", api_url=fake.url,
                                  app_id=DEFAULT_APP_ID, private_key_pem=private, port=port,
                                  store_url=store_url, instance="fleet", extra=settings)
            procs.append(BotProcess(config, port).start())
        servers = ",".join(p.url for p in procs)
        store = Store(store_url)
        for spec in agents:
            token = agentops.add(store, spec.name, "test", clock.now(),
                                 cluster=f"cluster-{spec.name}", priority=spec.priority)
            config = agent_config(tmp / f"agent-{spec.name}", spec.name, servers, token,
                                  backend=spec.backend, node_types=spec.node_types,
                                  origin_root=tmp / "origin", runs_file=runs,
                                  extra=spec.config)
            started[spec.name] = AgentProcess(spec.name, config,
                                              slurm_conf=slurm_conf()).start()
        store.close()
        fleet = Fleet(fake, origin, procs, started, store_url, tmp)
        fleet.fake.wait_for(lambda: len([r for r in fleet.sql(
            "SELECT name FROM agents WHERE registered_at IS NOT NULL")]) == len(agents),
            timeout=30, message=f"agents did not register:\n{fleet.logs()}")
        yield fleet
    finally:
        for agent in started.values():
            agent.stop()
        for proc in procs:
            proc.stop()
        fake.stop()


def slurm_conf() -> str:
    from tests.backends.conftest import discover

    return discover().conf if os.environ.get("SLURM_CONF") is None else os.environ["SLURM_CONF"]


def wait(predicate: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError(message)
