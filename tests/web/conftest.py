"""Fixtures for the control center: a configured bot app in-process, a seeded store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from layerbot import clock
from layerbot import config as config_mod
from layerbot.app import Bot
from layerbot.config import Config
from layerbot.handlers import comments
from layerbot.handlers.base import Context, Event
from layerbot.store.db import Store
from layerbot.store.models import OutboxMessage
from layerbot.web.auth import Auth
from tests.support.fakegithub import FakeGitHub
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_REPO, encode, issue_comment_created

INSTANCE = "test-a"
NODE_TYPES = [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
              {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}]
REPO_TARGETS = [{"id": "eessi-2023.06"}, {"id": "eessi-2025.06"}]


def make_config(tmp: Path, store_url: str | None = None, github: FakeGitHub | None = None,
                private_key: str | None = None, **sections: Any) -> Config:
    (tmp / "session-secret").write_text("a-session-secret-for-tests-only")
    raw: dict[str, Any] = {
        "instance": {"name": INSTANCE, "data_dir": str(tmp / "data")},
        "store": {"url": store_url or f"sqlite:///{tmp / 'layerbot.db'}"},
        "node_types": NODE_TYPES, "repo_targets": REPO_TARGETS,
        "web": {"session_secret_file": str(tmp / "session-secret"),
                "oauth_client_id": "test-client"},
        "build": {"jobs_dir": str(tmp / "jobs")},
    }
    if github is not None and private_key is not None:
        (tmp / "app.pem").write_text(private_key)
        raw["github"] = {"app_id": DEFAULT_APP_ID, "private_key_file": str(tmp / "app.pem"),
                         "api_url": github.url, "repositories": [DEFAULT_REPO]}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config_mod.load(None, overrides=raw)


class Web:
    """An in-process bot app (no background loops) and ways to call it as someone."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.bot = Bot(config, store)
        self.app = self.bot.app()
        self.auth = Auth(config, store, self.bot.access)

    def asgi_without_loops(self) -> Any:
        """The app with its lifespan answered but not run: no background loops start
        (tests drive the store themselves; loops would start submitting seeded jobs)."""
        app = self.app

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        return asgi

    def client(self, login: str | None = None, token: str | None = None
               ) -> tuple[TestClient, str]:
        """A client logged in as ``login`` (session cookie) or with a token; its CSRF token."""
        client = TestClient(self.app, base_url="http://testserver", follow_redirects=False)
        csrf = ""
        if login:
            cookie, csrf = self.auth.issue(login)
            client.cookies.set("layerbot_session", cookie)
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return client, csrf


@pytest.fixture
def web_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Web] = []

    def make(store_url: str | None = None, **kwargs: Any) -> Web:
        cfg = make_config(tmp_path, store_url, **kwargs)
        web = Web(cfg, Store(cfg.store_url))
        made.append(web)
        return web

    yield make
    for w in made:
        w.store.close()


REPO = DEFAULT_REPO


def handle_comment(web: Web, body: str, pr: int = 3) -> tuple[str | None, list[tuple[str, str]]]:
    """One PR comment by alice handled as the inbox workers would: the outcome, and what
    the bot would send to GitHub (kind, comment body or reaction)."""
    payload = issue_comment_created(body, "alice", repo=REPO, pr_number=pr, comment_id=77)
    event = Event(id=1, delivery_id="d-1", name="issue_comment", action="created",
                  raw=encode(payload).decode(), installation_id=1, attempt=1)
    ctx = Context(web.config, clock.now(), event, web.bot.services)
    outcome = asyncio.run(comments.on_comment(event, ctx, web.bot.commands))
    with web.store.transaction() as s:
        for write in ctx.writes:
            write(s)
    with web.store.read() as s:
        sent = [(m.kind, str(m.payload.get("body") or m.payload.get("content")))
                for m in s.scalars(select(OutboxMessage))]
    return outcome, sent
