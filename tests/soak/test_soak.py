"""The short soak of CI (issue 13): the whole fleet for five minutes under seeded activity,
with every kind of fault at least once, and not one invariant violated.

The long one is a benchmark: ``benchmarks/soak.py --minutes 60``. ``LAYERBOT_SOAK_MINUTES``
shortens this one on a developer's machine.
"""

from __future__ import annotations

import os

import pytest

from tests.deploy.conftest import _require_s3
from tests.support.soak.faults import Fault
from tests.support.soak.run import run_soak

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

SEED = 11


@pytest.mark.timeout(1200)  # five minutes of activity, then settling: up to four more
def test_a_short_soak_with_every_fault_keeps_every_invariant(
        tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the soak runs its own PostgreSQL (as the postgres user) and mounts a "
                    "small disk: it needs root, as CI has")
    _require_s3()  # the S3 server's binary; the soak runs a private one
    minutes = float(os.environ.get("LAYERBOT_SOAK_MINUTES", "5"))
    report = run_soak(tmp_path_factory.mktemp("soak") / "system", minutes, SEED)
    text = "\n".join(report.lines())
    print(text)
    assert set(report.faults) == {f.value for f in Fault}, text
    assert report.settled, text
    assert report.violations == [], text
