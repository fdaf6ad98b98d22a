"""`layerbot serve`'s worker process never outlives the web process that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.botproc import free_port, write_config
from tests.support.fakegithub import generate_app_key


def spawned_worker(pid: int) -> int | None:
    """The child of ``pid`` that multiprocessing spawned (not its resource tracker)."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        argv = Path(f"/proc/{child}/cmdline").read_bytes()
                        if b"spawn_main" in argv and b"--multiprocessing-fork" in argv:
                            return int(child)
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_worker_whose_web_process_died_while_it_started_goes_too(tmp_path: Path) -> None:
    # Killed right after spawning the worker, while the worker's interpreter is still
    # starting (before it could arm its death signal): the worker must not live on.
    private, _ = generate_app_key()
    port = free_port()
    config = write_config(tmp_path / "bot", api_url="http://127.0.0.1:9", app_id=1,
                          private_key_pem=private, port=port)
    web = subprocess.Popen([sys.executable, "-m", "layerbot", "serve", "--config", str(config)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    worker: list[int] = []

    def started() -> bool:
        found = spawned_worker(web.pid)
        worker.extend([found] if found else [])
        return bool(worker)

    try:
        assert wait_until(started, 60), "serve never started its worker"
        os.kill(web.pid, signal.SIGKILL)  # the web process only, as a crash would
        web.wait(10)
        assert wait_until(lambda: not alive(worker[0]), 30), "the worker outlived serve"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.pid, signal.SIGKILL)
        web.wait(10)
