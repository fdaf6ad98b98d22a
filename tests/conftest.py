"""Shared fixtures: services started by scripts/ (PostgreSQL, Slurm, S3), configs, stores.

A test that needs a service skips when it is not running on a developer's machine, and
FAILS under CI (CI=true), where .ci/run starts every service: a green CI never hides a
suite that did not run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import fresh_database
from tests.support.fixtures import *  # noqa: F403  (fake GitHub fixtures)

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Temporary directories traversable (0711) by the job user, not listable.

    Jobs run as an unprivileged user (``build.run_as``; root's default is ``layerbot-job``
    or ``nobody``), and their job directories live under pytest's temporary directories,
    which pytest makes 0700. A job must reach its own job directory (and the mirror it
    borrows objects from), nothing more: 0711 gives exactly that, like a bot's data dir.
    """
    original = pytest.TempPathFactory.mktemp
    if getattr(original, "traversable", False):
        return

    def mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        path = original(self, basename, numbered)
        for p in (path, self.getbasetemp(), self.getbasetemp().parent):
            if p.stat().st_uid == os.getuid():
                p.chmod(0o711)
        return path

    mktemp.traversable = True  # type: ignore[attr-defined]
    pytest.TempPathFactory.mktemp = mktemp  # type: ignore[method-assign]


def service_env(script_env: str, var: str) -> str | None:
    """A service's setting from the environment, else from the env file its script wrote."""
    if os.environ.get(var):
        return os.environ[var]
    path = Path(script_env)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith(f"export {var}="):
                return line.split("=", 1)[1].strip().strip("'\"")
    return None


def need_service(name: str, value: str | None, how: str) -> str:
    if value:
        return value
    message = f"{name} is not running (start it with {how})"
    if os.environ.get("CI"):
        pytest.fail(message + "; under CI every service must run")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    base = os.environ.get("LAYERBOT_PG_DIR", "/var/tmp/layerbot-pg")
    return need_service("PostgreSQL",
                        service_env(f"{base}/env", "LAYERBOT_TEST_PG_URL"),
                        "scripts/postgres.sh start")


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a store test on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'layerbot.db'}"
    return str(request.getfixturevalue("pg_url"))
