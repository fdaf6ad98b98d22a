"""Who a job runs as: never the bot's own uid (issue 9, item 1).

The decision is pure given the bot's euid and the user database, so it is made once when the
backend is built and reported clearly when it refuses:

- the bot runs as root: it drops privileges itself (the local launcher) to ``build.run_as``,
  else the dedicated ``layerbot-job`` user when it exists (``scripts/jobuser.sh``), else
  ``nobody`` — so even the embedded default isolates;
- the bot is not root and ``build.run_as`` names a user: the switch goes through ``sudo -n
  -u <user>``, which the site allows with one sudoers rule (docs/security.md);
- the bot is not root and nothing isolates: PR job scripts would run with the bot's uid and
  could read its secrets, so the bot refuses to run them unless the operator set
  ``build.allow_unisolated = true`` (then :func:`resolve` returns None: no isolation).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from enum import StrEnum

DEDICATED_USER = "layerbot-job"
FALLBACK_USER = "nobody"


class Switch(StrEnum):
    """How the bot becomes the job user."""

    DROP = "drop"  # the bot is root: set groups, gid and uid in the child itself
    SUDO = "sudo"  # the bot is not root: ``sudo -n -u <user> --`` (a sudoers rule allows it)


@dataclass(frozen=True)
class JobUser:
    """The unprivileged identity of jobs."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    switch: Switch = Switch.DROP

    def sudo_prefix(self) -> list[str]:
        """The argv prefix that runs a command as this user (empty when the bot drops
        privileges itself: the child is started with ``user=``/``group=`` instead).
        ``-n``: never wait for a password; a missing rule is an immediate, clear error."""
        return ["sudo", "-n", "-u", self.name, "--"] if self.switch is Switch.SUDO else []


class IsolationRefused(Exception):
    """Jobs cannot be isolated from the bot, and the operator did not allow that."""


def lookup(name: str) -> JobUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != entry.pw_gid)
    return JobUser(name, entry.pw_uid, entry.pw_gid, groups)


def resolve(run_as: str, allow_unisolated: bool, euid: int | None = None) -> JobUser | None:
    """The job user, None for "unisolated (allowed)", or :class:`IsolationRefused`."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return _without_root(run_as, allow_unisolated, euid)
    for name in ([run_as] if run_as else [DEDICATED_USER, FALLBACK_USER]):
        user = lookup(name)
        if user is not None:
            if user.uid == 0:
                raise IsolationRefused(f"build.run_as = {name!r} is root; name an "
                                       "unprivileged user")
            return user
    raise IsolationRefused(f"build.run_as: no user {run_as or FALLBACK_USER!r} on this machine "
                           "(create it with scripts/jobuser.sh)")


def _without_root(run_as: str, allow_unisolated: bool, euid: int) -> JobUser | None:
    if run_as:
        user = lookup(run_as)
        if user is None:
            raise IsolationRefused(f"build.run_as: no user {run_as!r} on this machine")
        if user.uid in (0, euid):
            raise IsolationRefused(f"build.run_as = {run_as!r} is root or the bot's own user; "
                                   "name an unprivileged user of its own")
        return JobUser(user.name, user.uid, user.gid, user.groups, Switch.SUDO)
    if allow_unisolated:
        return None
    raise IsolationRefused(
        "the bot does not run as root and build.run_as names no job user: a PR's job script "
        "would run as the bot's own user and could read its secrets. Set build.run_as and "
        "allow the switch with a sudoers rule (docs/security.md), or set "
        "build.allow_unisolated = true only for trusted single-user setups")
