"""Pytest fixtures for the fake GitHub (imported by ``tests/conftest.py`` with ``*``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
)

#: The account the default installation is on (owner of :data:`DEFAULT_REPO`).
DEFAULT_ORG = DEFAULT_REPO.split("/")[0]
#: Webhook secret for tests that sign deliveries.
WEBHOOK_SECRET = "It's a Secret to Everybody"

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_INSTALLATION_ID",
    "DEFAULT_ORG",
    "DEFAULT_REPO",
    "WEBHOOK_SECRET",
    "fake_github",
    "github_app_key",
    "webhook_secret",
]


@pytest.fixture(scope="session")
def github_app_key() -> tuple[str, str]:
    """``(private_pem, public_pem)`` of the test GitHub App (generated once per session)."""
    return generate_app_key()


@pytest.fixture
def fake_github(github_app_key: tuple[str, str]) -> Iterator[FakeGitHub]:
    """A running :class:`FakeGitHub` for app :data:`DEFAULT_APP_ID`.

    It has installation :data:`DEFAULT_INSTALLATION_ID` on :data:`DEFAULT_ORG` with
    access to all its repositories. The test fails at teardown if any request violated
    the OpenAPI description (call ``fake_github.take_violations()`` to consume expected
    ones).
    """
    fake = FakeGitHub(DEFAULT_APP_ID, github_app_key[0])
    fake.add_installation(DEFAULT_INSTALLATION_ID, DEFAULT_ORG)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop(wait=False)  # uvicorn winds down in the background (saves ~0.2 s)
    fake.assert_no_violations()


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET
