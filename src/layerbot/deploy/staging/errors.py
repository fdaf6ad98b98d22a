"""What goes wrong with a staging area: errors whose message says what to fix."""

from __future__ import annotations


class StagingError(Exception):
    """The staging area refused or could not be reached; the message says what to fix."""


class ObjectNotFound(StagingError):
    pass


class AccessDenied(StagingError):
    """A bare 403: wrong credentials or missing permission (``check`` tells which)."""
