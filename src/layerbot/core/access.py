"""Who may do what: a pure decision from the configured subjects and facts about a person.

Subjects (see :class:`layerbot.config.AccessConfig`): a GitHub login (``alice``, any case),
a team (``@org/team``) or a repository role (``role:write``; a role includes the ones above
it: admin ⊃ maintain ⊃ write ⊃ triage ⊃ read). An empty list allows nobody.

The caller asks :func:`facts_needed` what to fetch from GitHub (so a listed login costs no API
call), fetches it, keeps it in an :class:`AccessCache`, then calls :func:`decide`.
Nothing here does I/O or reads the clock: the cache takes ``now`` as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PERMISSIONS",
    "AccessCache",
    "AccessFacts",
    "Action",
    "Decision",
    "decide",
    "facts_needed",
    "who_may",
]

#: Repository permissions from weakest to strongest; "none" holds no role.
PERMISSIONS: tuple[str, ...] = ("none", "read", "triage", "write", "maintain", "admin")

#: What one may be allowed to do: the lists of ``config.AccessConfig``.
Action = Literal["command", "build", "cancel", "deploy", "force_deploy", "pause"]

#: How a refusal names an action ("Only ... may <verb>.").
_VERBS = {
    "command": "send commands",
    "build": "build",
    "cancel": "cancel jobs",
    "deploy": "deploy",
    "force_deploy": "force a deploy",
    "pause": "pause the bot",
}


@dataclass(frozen=True)
class AccessFacts:
    login: str
    #: The person's permission on the repository; None when it was not fetched.
    permission: str | None = None
    #: Teams (``org/team``) the person is known to be in; others: not in, or not asked.
    teams: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Why, for the log and the reply (plain text; names the login without @).
    reason: str
    #: Who may, as a sentence for a refusal reply (markdown).
    who_may: str


@dataclass(frozen=True)
class _Subjects:
    logins: frozenset[str]  # lower case
    teams: tuple[str, ...]  # "org/team", lower case, as listed
    role: str | None  # the weakest role listed: it includes all the stronger ones


def _parse_subjects(subjects: Iterable[str]) -> _Subjects:
    logins: set[str] = set()
    teams: list[str] = []
    roles: list[str] = []
    for subject in subjects:
        s = subject.strip().lower()
        if s.startswith("role:"):
            roles.append(s[5:])
        elif s.startswith("@") and "/" in s:
            if s[1:] not in teams:
                teams.append(s[1:])
        elif s:
            logins.add(s.removeprefix("@"))  # `@alice` is a slip for `alice`
    known = [r for r in roles if r in PERMISSIONS[1:]]
    role = min(known, key=PERMISSIONS.index) if known else None
    return _Subjects(frozenset(logins), tuple(teams), role)


def _rank(permission: str | None) -> int:
    """Unknown permission names (custom roles the caller did not map) count as none."""
    p = (permission or "none").lower()
    return PERMISSIONS.index(p) if p in PERMISSIONS else 0


def facts_needed(subjects: Sequence[str], login: str) -> tuple[bool, list[str]]:
    """(whether the repository permission is needed, the teams to check membership of).

    Nothing is needed when the login is listed by name, or when nothing is listed.
    """
    parsed = _parse_subjects(subjects)
    if login.lower() in parsed.logins:
        return False, []
    return parsed.role is not None, list(parsed.teams)


def decide(action: str, subjects: Sequence[str], facts: AccessFacts) -> Decision:
    parsed = _parse_subjects(subjects)
    sentence = who_may(action, subjects)
    login = facts.login.lower()
    if login in parsed.logins:
        return Decision(True, f"{facts.login} is listed by name for {action}", sentence)
    if parsed.role is not None and _rank(facts.permission) >= _rank(parsed.role):
        reason = f"{facts.login} has {facts.permission} access (role:{parsed.role} or above)"
        return Decision(True, reason, sentence)
    member_of = {t.lower() for t in facts.teams}
    team = next((t for t in parsed.teams if t in member_of), None)
    if team is not None:
        return Decision(True, f"{facts.login} is a member of @{team}", sentence)
    return Decision(False, _refusal_reason(action, parsed, facts), sentence)


def _refusal_reason(action: str, parsed: _Subjects, facts: AccessFacts) -> str:
    if not (parsed.logins or parsed.teams or parsed.role):
        return f"nobody may {_verb(action)} on this instance (the configuration lists no one)"
    found: list[str] = []
    if parsed.logins:
        found.append("is not listed by name")
    if parsed.role is not None:
        if facts.permission is None:
            found.append("has a repository permission that was not looked up")
        else:
            found.append(f"has {facts.permission} access, below {parsed.role}")
    if parsed.teams:
        found.append("is in none of the teams " + ", ".join(f"@{t}" for t in parsed.teams))
    return f"{facts.login} " + _join(found, "and")


def who_may(action: str, subjects: Sequence[str]) -> str:
    """ "Only people with write access to the repository, `@alice`, or members of
    `@org/builders` may build." Names are code spans so that a refusal never notifies them.
    """
    parsed = _parse_subjects(subjects)
    verb = _verb(action)
    parts: list[str] = []
    if parsed.role is not None:
        parts.append(f"people with {parsed.role} access to the repository")
    parts += [f"`@{login}`" for login in sorted(parsed.logins)]
    if parsed.teams:
        teams = _join([f"`@{t}`" for t in parsed.teams], "or")
        parts.append(f"members of {teams}")
    if not parts:
        return f"Nobody is allowed to {verb} on this instance (the configuration lists no one)."
    return f"Only {_join(parts, 'or')} may {verb}."


def _verb(action: str) -> str:
    return _VERBS.get(action, action.replace("_", " "))


def _join(items: Sequence[str], word: str) -> str:
    """a; a or b; a, b, or c."""
    if len(items) <= 2:
        return f" {word} ".join(items)
    return ", ".join(items[:-1]) + f", {word} " + items[-1]


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    value: object
    stored_at: float


class AccessCache:
    """Facts fetched from GitHub, kept for ``ttl_seconds`` (0: not kept at all).

    Time comes in as ``now`` (a monotonic clock reading), so tests need no sleeping and the
    class reads no clock. A ``now`` earlier than the time an entry was stored (a clock that
    went back) counts as expired rather than as a very long life.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str, str], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # --- what the caller stores and reads ---

    def put_permission(self, repo: str, login: str, permission: str, now: float) -> None:
        self._put(("permission", repo.lower(), login.lower()), permission.lower(), now)

    def put_membership(self, team: str, login: str, member: bool, now: float) -> None:
        self._put(("team", _team_key(team), login.lower()), member, now)

    def permission(self, repo: str, login: str, now: float) -> str | None:
        """The cached permission, or None when not cached or expired."""
        value = self._get(("permission", repo.lower(), login.lower()), now)
        return value if isinstance(value, str) else None

    def membership(self, team: str, login: str, now: float) -> bool | None:
        """True/False when cached, None when not cached or expired."""
        value = self._get(("team", _team_key(team), login.lower()), now)
        return value if isinstance(value, bool) else None

    def missing(
        self, repo: str, login: str, need_permission: bool, teams: Sequence[str], now: float
    ) -> tuple[bool, list[str]]:
        """Of what :func:`facts_needed` asked for, what is not in the cache."""
        need = need_permission and self.permission(repo, login, now) is None
        return need, [t for t in teams if self.membership(t, login, now) is None]

    def facts(self, repo: str, login: str, teams: Sequence[str], now: float) -> AccessFacts:
        """The facts to decide with, from what the cache holds."""
        member = frozenset(_team_key(t) for t in teams if self.membership(t, login, now))
        return AccessFacts(login, self.permission(repo, login, now), member)

    def invalidate(self, login: str | None = None) -> None:
        """Forget one person (e.g. on a membership or collaborator event), or everyone."""
        if login is None:
            self._entries.clear()
            return
        key = login.lower()
        for k in [k for k in self._entries if k[2] == key]:
            del self._entries[k]

    def prune(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        expired = [k for k, e in self._entries.items() if not self._fresh(e, now)]
        for k in expired:
            del self._entries[k]
        return len(expired)

    # --- internals ---

    def _fresh(self, entry: _Entry, now: float) -> bool:
        return entry.stored_at <= now < entry.stored_at + self.ttl

    def _get(self, key: tuple[str, str, str], now: float) -> object:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not self._fresh(entry, now):
            del self._entries[key]
            return None
        return entry.value

    def _put(self, key: tuple[str, str, str], value: object, now: float) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)  # re-insert so that dict order stays oldest first
        if len(self._entries) >= self.max_entries:
            self.prune(now)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = _Entry(value, now)


def _team_key(team: str) -> str:
    return team.strip().lower().removeprefix("@")
