"""Which of the bot's files the job user could read or write (``layerbot doctor``).

Jobs run as an unprivileged user (build/identity.py); that only protects the bot if its
configuration, secret files, database and data directory are closed to that user. The check
evaluates the permission bits of the file *and* of every directory above it (search
permission) for the job user's uid and groups, as the kernel would (ACLs aside), so a 0644
key inside a 0700 directory is fine and a 0600 key is fine anywhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from layerbot.build.identity import JobUser

READ, WRITE, EXEC = 4, 2, 1


@dataclass(frozen=True)
class Exposure:
    path: Path
    what: str  # e.g. "App private key"
    access: str  # "read", "write" or "list"


def _bits(st: os.stat_result, user: JobUser) -> int:
    if st.st_uid == user.uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid == user.gid or st.st_gid in user.groups:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def _reachable(path: Path, user: JobUser) -> bool:
    """Every directory above ``path`` lets the user search it."""
    for parent in list(path.absolute().parents)[::-1]:
        try:
            if not _bits(os.stat(parent), user) & EXEC:
                return False
        except OSError:
            return False
    return True


def exposure(path: Path, what: str, user: JobUser, *, directory: bool = False) -> Exposure | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not _reachable(path, user):
        return None
    bits = _bits(st, user)
    if bits & WRITE:
        return Exposure(path, what, "write")
    if bits & READ and (directory or stat.S_ISREG(st.st_mode)):
        return Exposure(path, what, "list" if directory else "read")
    return None


def remedy(exp: Exposure) -> str:
    mode = "711" if exp.access == "list" or exp.what == "data directory" else "600"
    return f"chmod {mode} {exp.path}"
