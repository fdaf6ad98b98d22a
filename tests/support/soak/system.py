"""The whole system on this machine, for the soak: every part real except GitHub.

- a PostgreSQL cluster of the soak's own (``scripts/postgres.sh`` in a private directory and
  port, so restarting it disturbs nothing else);
- an S3 server of its own (``scripts/s3.sh``, private directory and ports), to kill;
- the fake GitHub, checking every request against the API description; a delivery the
  harness "lost" is sent when the bot asks GitHub to redeliver it;
- two control-plane replicas (`layerbot serve`, each with its worker process) on that
  PostgreSQL, without a built-in agent;
- three agents: ``local-a`` (zen2) and ``local-b`` (haswell, its job directories on a small
  disk of their own when this runs as root) on the local executor, ``slurm-c`` (zen4) on
  the Slurm of ``scripts/slurm.sh``; each stages its artifacts to S3, signed with its key;
- ``layerbot ingest`` every few seconds into a directory standing in for the repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.conftest import S3Server, _free_port_block
from tests.support.botproc import child_role, free_port, write_config
from tests.support.fleet import AgentSpec, Fleet, start_fleet

from layerbot.deploy.signing import allowed_signers_line, generate_keypair
from layerbot.deploy.staging import S3Staging

REPO_ROOT = Path(__file__).resolve().parents[3]
INSTANCE = "fleet"
REPO_TARGET = "eessi-2023.06"
REPOSITORY = "software.eessi.io"
BUCKET = "soak-staging"
#: The small disk of local-b's job directories.
SMALL_DISK_MB = 96

NODE_TYPES: dict[str, dict[str, Any]] = {
    "local-a": {"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
    "local-b": {"name": "haswell", "cpu_target": "x86_64/intel/haswell"},
    "slurm-c": {"name": "zen4", "cpu_target": "x86_64/amd/zen4",
                "options": {"partition": "debug", "memory": "200M"}},
}


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster in ``base`` on ``port``, started and stopped by the repo's script."""

    base: Path
    port: int

    def _script(self, action: str) -> None:
        env = {**os.environ, "LAYERBOT_PG_DIR": str(self.base),
               "LAYERBOT_PG_PORT": str(self.port)}
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / "postgres.sh"), action], env=env,
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://layerbot:layerbot@127.0.0.1:{self.port}/layerbot"


def start_s3(base: Path) -> S3Server:
    port = _free_port_block()
    server = S3Server(f"http://127.0.0.1:{port}", "", "", base, port)
    server.start()
    env = dict(line.removeprefix("export ").split("=", 1)
               for line in (base / "env").read_text().splitlines() if "=" in line)
    return S3Server(server.endpoint, env["LAYERBOT_TEST_S3_KEY"].strip("'\""),
                    env["LAYERBOT_TEST_S3_SECRET"].strip("'\""), base, port)


def s3_settings(s3: S3Server) -> dict[str, Any]:
    return {"endpoint_url": s3.endpoint, "access_key_id": s3.key,
            "secret_access_key": s3.secret, "buckets": {"*": BUCKET}}


class Ingest:
    """`layerbot ingest --once` every ``interval`` seconds, in a thread, until stopped."""

    def __init__(self, config: Path, interval: float = 5.0) -> None:
        self.config = config
        self.interval = interval
        self.log_path = config.parent / "ingest.log"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ingest")
        self.runs = 0

    def start(self) -> Ingest:
        self._thread.start()
        return self

    def once(self) -> None:
        with self.log_path.open("ab") as log:
            subprocess.run([sys.executable, "-m", "layerbot", "ingest", "--once", "--config",
                            str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                           timeout=300, check=False)
        self.runs += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.once()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(320)


@dataclass
class System:
    """Everything the soak drives, faults and checks."""

    root: Path
    fleet: Fleet
    postgres: PrivatePostgres
    s3: S3Server
    staging: S3Staging
    ingest: Ingest
    repository_dir: Path
    signers: Path
    #: local-b's job directories (a small disk when mounted; see ``small_disk``).
    small_disk: Path | None
    #: Strings no report may contain.
    secrets: list[str]

    def processes(self) -> dict[str, int]:
        """The pids of the bot's own processes: replicas, their workers, agents."""
        out: dict[str, int] = {}
        for i, replica in enumerate(self.fleet.replicas):
            if replica.proc and replica.proc.poll() is None:
                out[f"replica-{i}"] = replica.proc.pid
                for child in children(replica.proc.pid):
                    out[f"replica-{i}-{child_role(child)}"] = child
        for name, agent in self.fleet.agents.items():
            if agent.proc and agent.proc.poll() is None:
                out[f"agent-{name}"] = agent.proc.pid
        return out


def children(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                           text=True, check=False).stdout.split()
    return [int(p) for p in found]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def mounted_small_disk(path: Path) -> Iterator[Path | None]:
    """A tmpfs of SMALL_DISK_MB at ``path`` (root only; None elsewhere: the fault is then
    the job's own full write, on the machine's disk)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_MB}m,mode=0711", "soak",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _agents(root: Path, s3: S3Server, keys: dict[str, Path], small_disk: Path) -> list[AgentSpec]:
    def deploy(name: str) -> dict[str, Any]:
        return {"deploy": {"staging": "s3", "signing_key_file": str(keys[name]),
                           "s3": s3_settings(s3), "upload_retry_deadline_seconds": 60}}
    slow_time = {"build": {"time_limit_minutes": 1}}
    return [
        AgentSpec("local-a", {"kind": "local", "local": {"max_concurrent": 3}},
                  [NODE_TYPES["local-a"]], config={**deploy("local-a"), **slow_time}),
        AgentSpec("local-b", {"kind": "local", "local": {"max_concurrent": 3}},
                  [NODE_TYPES["local-b"]],
                  config={**deploy("local-b"),
                          "build": {"time_limit_minutes": 1, "jobs_dir": str(small_disk)}}),
        AgentSpec("slurm-c", {"kind": "slurm"}, [NODE_TYPES["slurm-c"]],
                  config={**deploy("slurm-c"), **slow_time}),
    ]


@contextlib.contextmanager
def start_system(root: Path, *, ingest_interval: float = 5.0) -> Iterator[System]:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    postgres = PrivatePostgres(root / "pg", free_port())
    postgres.start()
    s3 = start_s3(root / "s3")
    try:
        staging = S3Staging(s3.settings(), BUCKET, state_dir=root / "s3-client")
        staging.ensure_bucket()
        keys: dict[str, Path] = {}
        lines = []
        for name in NODE_TYPES:
            pair = generate_keypair(root / "keys" / f"{name}_key", comment=f"layerbot@{name}")
            keys[name] = pair.private
            lines.append(allowed_signers_line(name, pair.public_key(), [INSTANCE]))
        signers = root / "keys" / "allowed_signers"
        signers.write_text("".join(lines))
        extra = {"deploy": {"staging": "s3", "s3": s3_settings(s3), "policy": "latest"},
                 "deliveries": {"recover_interval_seconds": 20, "lookback_hours": 1},
                 "reporting": {"check_runs": "final", "min_edit_interval_seconds": 1},
                 "build": {"time_limit_minutes": 1},
                 "pipelines": {"max_active_per_pr": 4}}
        with mounted_small_disk(root / "agent-local-b-jobs") as small, start_fleet(
                root, postgres.url, _agents(root, s3, keys, root / "agent-local-b-jobs"),
                replicas=2, extra=extra) as fleet:
            repository = root / "cvmfs"
            ingest_config = _ingest_config(root, fleet, s3, signers, repository)
            ingest = Ingest(ingest_config, ingest_interval).start()
            secrets = _secrets(fleet, s3)
            try:
                yield System(root, fleet, postgres, s3, staging, ingest, repository, signers,
                             small, secrets)
            finally:
                ingest.stop()
    finally:
        s3.stop()
        postgres.stop()


def _ingest_config(root: Path, fleet: Fleet, s3: S3Server, signers: Path,
                   repository: Path) -> Path:
    """The ingest server's layerbot.toml: the App's key (it reports on the PR), the
    staging area, the allowed signers and a tar-extracting command into ``repository``."""
    replica = fleet.replicas[0].config
    private = (replica.parent / "app.pem").read_text()
    return write_config(root / "ingest", api_url=fleet.fake.url, app_id=_app_id(replica),
                        private_key_pem=private, port=free_port(), instance=INSTANCE, extra={
        "deploy": {"staging": "s3", "s3": s3_settings(s3)},
        "ingest": {"allowed_signers_file": str(signers), "state_dir": str(root / "ingest-state"),
                   "repositories": {REPO_TARGET: REPOSITORY},
                   "base_dir": f"{repository}/{{repository}}",
                   "command": ["sh", "-c", 'mkdir -p "$1" && tar -xf "$2" -C "$1"', "ingest",
                               "{base_dir}", "{tarball}"]},
    })


def _app_id(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("app_id"):
            return int(line.split("=", 1)[1])
    raise AssertionError(f"no app_id in {config}")


def _secrets(fleet: Fleet, s3: S3Server) -> list[str]:
    """What must never appear in a report: the webhook secret, the App's key, the agents'
    tokens, the S3 secret."""
    replica = fleet.replicas[0].config.parent
    pem_lines = [ln for ln in (replica / "app.pem").read_text().splitlines()
                 if ln and not ln.startswith("-----")]
    tokens = [(a.config.parent / "token").read_text().strip() for a in fleet.agents.values()]
    return [(replica / "secret").read_text().strip(), *pem_lines[1:3], *tokens, s3.secret]


def wait_until(predicate: Any, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
