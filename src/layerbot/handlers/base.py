"""What a handler receives: the event, and a context to read through and write into.

Handlers read (GitHub, the store, the backend) while they decide, and *record* their
writes in the context; the processor applies every recorded write in one transaction
together with the event's outcome. So a handler that fails half-way leaves nothing behind,
and a retried event does its writes exactly once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy.orm import Session

from layerbot.backends.base import Backend
from layerbot.config import Config
from layerbot.core.access import Decision
from layerbot.github import writes
from layerbot.operations.fleet import FleetSnapshot
from layerbot.operations.fleet import snapshot as fleet_snapshot
from layerbot.operations.pulls import GitHubReader, PullHead, fetch_pull
from layerbot.store.db import Store
from layerbot.store.inbox import Inbox


@dataclass(frozen=True)
class Event:
    id: int
    delivery_id: str
    name: str
    action: str | None
    raw: str
    installation_id: int | None
    attempt: int

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The body, parsed; a NUL in any of its strings is replaced by U+FFFD.

        Why: PostgreSQL's text holds no NUL, and handlers put the body's strings (a
        repository's name, a login, a label) into rows and outcomes; one ``\u0000`` in a
        signed body made the event's commit fail at every attempt (found by the webhook
        fuzzing). GitHub's own strings never carry one."""
        data: dict[str, Any] = json.loads(self.raw)
        if "\\u0000" in self.raw:
            cleaned: dict[str, Any] = _without_nul(data)
            return cleaned
        return data

    @property
    def repo(self) -> str:
        return str((self.payload.get("repository") or {}).get("full_name", ""))

    @property
    def sender_login(self) -> str:
        return str((self.payload.get("sender") or {}).get("login", ""))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


Write = Callable[[Session], object]  # what it returns is ignored


class AccessPolicy(Protocol):
    """Who may do what (``github.access.AccessChecker``); the actions are those of
    ``config.AccessConfig``: command, build, cancel, deploy, force_deploy, ..."""

    async def check(self, action: str, repo: str, login: str,
                    installation_id: int | None) -> Decision: ...


@dataclass(frozen=True)
class Services:
    """What handlers read through while they decide (the app builds it). Ports, not
    adapters: a test can hand in its own."""

    store: Store
    inbox: Inbox
    github: GitHubReader | None
    access: AccessPolicy
    backend: Backend


@dataclass
class Context:
    """Per event: configuration, services to read through, and the writes to apply."""

    config: Config
    now: datetime
    event: Event
    services: Services
    writes: list[Write] = field(default_factory=list)

    async def fetch_pull(self, number: int) -> PullHead:
        """The event's PR as it is now: its head is what a command handled now pins."""
        return await fetch_pull(self.services.github, self.config, self.event.repo, number,
                                self.event.installation_id)

    @property
    def instance(self) -> str:
        return self.config.instance.name

    def fleet(self) -> FleetSnapshot:
        """Who can build what right now (the agents of the fleet)."""
        return fleet_snapshot(self.services.store, self.config, self.now)

    def write(self, fn: Write) -> None:
        self.writes.append(fn)

    def react(self, comment_id: int, content: str) -> None:
        e = self.event
        self.write(lambda s: writes.enqueue_reaction(
            s, instance=self.instance, repo=e.repo, installation_id=e.installation_id,
            comment_id=comment_id, content=content, now=self.now))

    def reply(self, issue_number: int, key: str, body: str) -> None:
        """Post (or edit, when ``key`` was used before) the bot's comment on a PR."""
        e = self.event
        self.write(lambda s: writes.enqueue_comment(
            s, instance=self.instance, repo=e.repo, installation_id=e.installation_id,
            issue_number=issue_number, key=key, body=body, now=self.now))


Handler = Callable[[Event, Context], Awaitable[str | None]]


class Router:
    """Maps (event, action) to handlers; routers of several concerns are merged at start."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str | None], list[Handler]] = defaultdict(list)

    def on(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self._routes[(event, action)].append(fn)
            return fn
        return register

    def include(self, other: Router) -> None:
        for key, handlers in other._routes.items():
            self._routes[key].extend(handlers)

    def handlers_for(self, event: str, action: str | None) -> list[Handler]:
        return [*self._routes.get((event, None), []), *self._routes.get((event, action), [])]
