"""Fetches the facts an access decision needs from GitHub, through a TTL cache.

The decision itself is pure (``core.access.decide``); this adapter only asks GitHub what it
must: nothing when the login is listed by name, the repository permission when a role is
listed, and the membership of each listed team.
"""

from __future__ import annotations

import time

from layerbot.config import AccessConfig
from layerbot.core.access import AccessCache, Decision, decide, facts_needed
from layerbot.github.client import GitHubApp, GitHubError


class AccessChecker:
    def __init__(self, github: GitHubApp | None, config: AccessConfig) -> None:
        self.github = github
        self.config = config
        self.cache = AccessCache(config.cache_ttl_seconds)

    async def check(self, action: str, repo: str, login: str,
                    installation_id: int | None) -> Decision:
        subjects: list[str] = list(getattr(self.config, action))
        need_permission, teams = facts_needed(subjects, login)
        now = time.monotonic()
        need_permission, missing_teams = self.cache.missing(repo, login, need_permission, teams,
                                                            now)
        if (need_permission or missing_teams) and self.github and installation_id:
            if need_permission:
                self.cache.put_permission(repo, login,
                                          await self._permission(installation_id, repo, login),
                                          now)
            for team in missing_teams:
                self.cache.put_membership(
                    team, login, await self._member(installation_id, team, login), now)
        return decide(action, subjects, self.cache.facts(repo, login, teams, now))

    async def permission(self, repo: str, login: str, installation_id: int | None
                         ) -> str | None:
        """The person's permission on the repository (none, read, ..., admin), through the
        same cache as decisions; None when it cannot be asked (no App, no installation)."""
        now = time.monotonic()
        known = self.cache.permission(repo, login, now)
        if known is not None:
            return known
        if not (self.github and installation_id):
            return None
        value = await self._permission(installation_id, repo, login)
        self.cache.put_permission(repo, login, value, now)
        return value

    async def _permission(self, installation_id: int, repo: str, login: str) -> str:
        assert self.github is not None
        try:
            data = await self.github.json(
                installation_id, "GET", f"/repos/{repo}/collaborators/{login}/permission")
        except GitHubError as exc:
            if exc.status == 404:  # not a collaborator at all
                return "none"
            raise
        # role_name knows maintain and triage; permission folds them into write and read.
        return str(data.get("role_name") or data.get("permission") or "none")

    async def _member(self, installation_id: int, team: str, login: str) -> bool:
        assert self.github is not None
        org, _, slug = team.lstrip("@").partition("/")
        try:
            data = await self.github.json(
                installation_id, "GET", f"/orgs/{org}/teams/{slug}/memberships/{login}")
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return bool(data and data.get("state") == "active")
