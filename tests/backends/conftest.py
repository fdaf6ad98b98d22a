"""The real Slurm cluster of scripts/slurm.sh, for tests marked ``slurm``.

Skips (FAILS under CI) when it does not answer. Also used by tests/e2e/test_slurm_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, need_service

BASE = Path(os.environ.get("LAYERBOT_SLURM_DIR", "/var/tmp/layerbot-slurm"))


class SlurmCluster:
    """Commands against the local cluster, and its daemons for robustness tests."""

    def __init__(self, base: Path, conf: str) -> None:
        self.base = base
        self.conf = conf

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "SLURM_CONF": self.conf})
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> dict[int, dict[str, Any]]:
        """Every job slurmctld knows, by id (squeue --json ignores filters in 22.05)."""
        data = json.loads(self.run("squeue", "--json"))
        return {j["job_id"]: j for j in data["jobs"]}

    def job(self, job_id: str | int) -> dict[str, Any]:
        return self.jobs()[int(str(job_id).split(";")[0].split("/")[0])]

    def tagged(self, instance: str) -> list[dict[str, Any]]:
        return [j for j in self.jobs().values()
                if str(j.get("comment", "")).startswith(f"layerbot:{instance}:")]

    def cancel_tagged(self, instance: str) -> None:
        """Clean up after a test: only jobs whose tag names this test's instance."""
        ids = [str(j["job_id"]) for j in self.tagged(instance)
               if j["job_state"] in ("PENDING", "RUNNING", "SUSPENDED")]
        if ids:
            self.run("scancel", *ids, check=False)

    # --- daemons ----------------------------------------------------------------------------

    def ctld_pid(self) -> int:
        return int((self.base / "run" / "slurmctld.pid").read_text().strip())

    def wait_saved(self, since: float, settle: float = 8.0) -> None:
        """Wait until slurmctld has most likely saved the jobs it knew at ``since``
        (time.time(), at whole-second precision like Slurm's own times).

        It saves at most every ~5 s; killed before that, it loses the jobs submitted since
        (docs/slurm.md §6). Done when its job_state file is written a second after
        ``since``, or, as nothing may change to make it save again, ``settle`` s after it.
        """
        state = self.base / "state" / "job_state"
        while time.time() < since + settle:
            with contextlib.suppress(OSError):
                if state.stat().st_mtime > since + 1:
                    return
            time.sleep(0.2)

    def kill_ctld(self) -> None:
        """SIGKILL slurmctld by its pid and wait until it is really gone (it lingers as a
        zombie for seconds here, so ``kill -0`` is not enough)."""
        pid = self.ctld_pid()
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)

    def start(self) -> None:
        subprocess.run([str(REPO_ROOT / "scripts" / "slurm.sh"), "start"], check=True,
                       capture_output=True, timeout=180)

    def ping(self) -> bool:
        try:
            return "is UP" in self.run("scontrol", "ping", check=False, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return False


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def discover() -> SlurmCluster:
    """The running cluster, or skip (fail under CI) with how to start it."""
    env_file = BASE / "env"
    conf = None
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export SLURM_CONF="):
                conf = line.split("=", 1)[1].strip().strip("'\"")
    cluster = SlurmCluster(BASE, conf) if conf else None
    if cluster is not None and not cluster.ping():
        cluster = None
    need_service("Slurm", "up" if cluster else None, "scripts/slurm.sh start")
    assert cluster is not None
    os.environ["SLURM_CONF"] = cluster.conf  # for the commands the code under test runs
    return cluster


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    cluster = discover()
    yield cluster
    if not cluster.ping():  # a test that stopped slurmctld failed before restarting it
        cluster.start()
