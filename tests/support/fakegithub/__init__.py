"""A fake GitHub REST API server, validated against GitHub's OpenAPI description.

See :class:`FakeGitHub`; tests normally get one from the ``fake_github`` fixture in
:mod:`tests.support.fixtures`.
"""

from tests.support.fakegithub.auth import generate_app_key
from tests.support.fakegithub.server import FakeGitHub, RecordedRequest, Violation
from tests.support.fakegithub.state import CheckRun, Comment, CommitStatus, Issue
from tests.support.fakegithub.store import DEFAULT_PERMISSIONS

__all__ = [
    "DEFAULT_PERMISSIONS",
    "CheckRun",
    "Comment",
    "CommitStatus",
    "FakeGitHub",
    "Issue",
    "RecordedRequest",
    "Violation",
    "generate_app_key",
]
