"""A bot process's children told apart: its worker, the resource tracker, anything else."""

from __future__ import annotations

import multiprocessing
import subprocess
import time
from multiprocessing import resource_tracker

from tests.support.botproc import child_role


def test_a_spawned_worker_and_the_resource_tracker_are_told_apart() -> None:
    worker = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(30,))
    worker.start()
    resource_tracker.ensure_running()
    other = subprocess.Popen(["sleep", "30"])
    try:
        tracker_pid = resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
        assert worker.pid is not None and tracker_pid is not None
        assert child_role(worker.pid) == "worker"
        assert child_role(tracker_pid) == "resource-tracker"
        assert child_role(other.pid) == f"child-{other.pid}"
    finally:
        worker.kill()
        other.kill()
        worker.join()
        other.wait()
