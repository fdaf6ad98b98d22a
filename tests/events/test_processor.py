"""Inbox workers of two replicas on one store: each event handled once; a worker whose
claim ran out applies nothing; a commit that fails is a failed attempt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from layerbot import clock
from layerbot.config import Config, InboxConfig, InstanceConfig, ServerConfig
from layerbot.events.processor import Processor
from layerbot.handlers.base import Context, Event, Router, Services
from layerbot.store import repos
from layerbot.store.db import Store
from layerbot.store.inbox import Delivery, Inbox
from layerbot.store.models import InboxEvent, Repository


def config(tmp_path: Path, replica: str, **inbox: object) -> Config:
    return Config(instance=InstanceConfig(name="a", data_dir=tmp_path),
                  server=ServerConfig(replica=replica),
                  inbox=InboxConfig(**{"workers": 3, "lease_seconds": 5, **inbox}))


def processor(cfg: Config, store: Store, router: Router) -> Processor:
    inbox = Inbox(store, cfg.instance.name)
    # The handlers here read nothing through the services' ports.
    services = Services(store, inbox, None, None, None)  # type: ignore[arg-type]
    return Processor(cfg, store, inbox, router, services)


def deliveries(count: int, keys: int) -> list[Delivery]:
    return [Delivery(hook_id="1", delivery_id=f"d-{n}", event="ping", action="created",
                     ordering_key=f"o/r#{n % keys}", installation_id=None,
                     payload=json.dumps({"n": n})) for n in range(count)]


async def until(predicate: object, timeout: float) -> None:
    for _ in range(int(timeout / 0.02)):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def statuses(store: Store) -> list[str]:
    with store.read() as session:
        return list(session.scalars(select(InboxEvent.status).order_by(InboxEvent.id)))


def test_two_replicas_handle_every_event_once(store_url: str, tmp_path: Path) -> None:
    handled: list[str] = []
    router = Router()

    @router.on("ping", "created")
    async def record(event: Event, ctx: Context) -> str:
        await asyncio.sleep(0.005)
        handled.append(event.delivery_id)
        return "ok"

    store = Store(store_url)
    Inbox(store, "a").accept(deliveries(40, keys=8), clock.now())
    replicas = [processor(config(tmp_path, f"host:{port}"), Store(store_url), router)
                for port in (8081, 8082)]

    async def scenario() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in replicas]
        await until(lambda: statuses(store) == ["handled"] * 40, 30)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert sorted(handled) == sorted(f"d-{n}" for n in range(40))  # each once


def test_a_worker_whose_claim_ran_out_applies_nothing(store_url: str, tmp_path: Path) -> None:
    release = asyncio.Event()
    router = Router()

    @router.on("ping", "created")
    async def slow(event: Event, ctx: Context) -> str:
        ctx.write(lambda s: repos.record(s, "o/late", False, None, ctx.now))
        await release.wait()
        return "ok"

    store = Store(store_url)
    inbox = Inbox(store, "a")
    inbox.accept(deliveries(1, keys=1), clock.now())
    late = processor(config(tmp_path, "host:8081"), store, router)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(late.run(stop))
        await until(lambda: statuses(store) == ["processing"], 10)
        # Its replica stalled past the lease: another replica took the event over.
        later = clock.now() + timedelta(minutes=5)
        assert inbox.recover("host:8082/x", later) == 1
        assert len(inbox.claim("host:8082/x", later, timedelta(minutes=1))) == 1
        release.set()
        await asyncio.sleep(0.3)
        stop.set()
        await task

    asyncio.run(scenario())
    event = inbox.get("d-0")
    assert event is not None and (event.status, event.claimed_by) == ("processing",
                                                                      "host:8082/x")
    with store.read() as session:
        assert session.get(Repository, "o/late") is None  # the late outcome was dropped


def one_attempt(store: Store, tmp_path: Path, router: Router,
                done: Callable[[], bool]) -> Inbox:
    """One delivery handled by a worker allowed a single attempt, until ``done``."""
    inbox = Inbox(store, "a")
    inbox.accept(deliveries(1, keys=1), clock.now())
    worker = processor(config(tmp_path, "host:8081", max_attempts=1), store, router)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(done, 10)
        stop.set()
        await task

    asyncio.run(scenario())
    return inbox


def test_a_commit_that_fails_is_a_failed_attempt(store_url: str, tmp_path: Path) -> None:
    router = Router()

    def broken(_session: object) -> None:
        raise RuntimeError("the write cannot be applied")

    @router.on("ping", "created")
    async def handler(event: Event, ctx: Context) -> str:
        ctx.write(broken)  # type: ignore[arg-type]
        return "ok"

    store = Store(store_url)
    inbox = one_attempt(store, tmp_path, router, lambda: statuses(store) == ["failed"])
    event = inbox.get("d-0")
    assert event is not None and "the write cannot be applied" in (event.error or "")


def test_an_event_out_of_github_requests_waits_for_the_reset(store_url: str,
                                                            tmp_path: Path) -> None:
    """GitHub's primary rate limit is waited out, not counted as failed attempts (found by
    the hour-long soak: past 5,000 requests every event failed for good)."""
    import httpx

    from layerbot.github.client import GitHubError

    reset = clock.now() + timedelta(minutes=20)
    router = Router()

    @router.on("ping", "created")
    async def handler(event: Event, ctx: Context) -> str:
        raise GitHubError("GET", "/repos/o/r/collaborators/alice/permission", 403,
                          "API rate limit exceeded", httpx.Headers({
                              "x-ratelimit-remaining": "0",
                              "x-ratelimit-reset": str(int(reset.timestamp()))}))

    store = Store(store_url)
    inbox = Inbox(store, "a")
    one_attempt(store, tmp_path, router,
                lambda: (e := inbox.get("d-0")) is not None and bool(e.error))
    with store.read() as session:
        row = session.scalars(select(InboxEvent)).one()
        assert row.status == "pending", row.error
        assert abs((row.next_attempt_at - reset).total_seconds()) < 1.5
