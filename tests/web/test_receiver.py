"""The receiver in-process: a store that cannot take the delivery gets a clear 503; only
signed deliveries tell the worker to hold back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from layerbot.store.db import Store
from layerbot.store.inbox import Inbox
from layerbot.web.webhook import InboxWriter, WebhookReceiver, signature_of

SECRET = b"s3cret"


def test_a_delivery_the_store_cannot_take_is_answered_503(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    body = b'{"action": "created", "repository": {"full_name": "o/r"}}'
    headers = {"x-hub-signature-256": signature_of(body, SECRET), "x-github-event": "push",
               "x-github-delivery": "d-1", "x-github-hook-id": "1"}

    async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        writer = InboxWriter(Inbox(store, "a"), on_accept=lambda: None)
        writer.start()
        receiver = WebhookReceiver(SECRET, writer, 1_000_000)
        stored = await receiver.handle(headers, body)
        with store.transaction() as s:  # the store breaks
            s.execute(text("DROP TABLE inbox_events"))
        refused = await receiver.handle({**headers, "x-github-delivery": "d-2"}, body)
        await writer.stop()
        return stored, refused

    stored, refused = asyncio.run(scenario())
    assert stored[0] == 202
    assert refused[0] == 503 and b"could not be stored" in refused[1]


def test_only_a_signed_delivery_tells_the_worker_to_hold_back(tmp_path: Path) -> None:
    """The worker's database work waits while deliveries come in (app/answers_first.py):
    unsigned requests must not be a way to stall handling."""
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    body = b'{"action": "created", "repository": {"full_name": "o/r"}}'
    signed = {"x-hub-signature-256": signature_of(body, SECRET), "x-github-event": "push",
              "x-github-delivery": "d-1", "x-github-hook-id": "1"}
    forged = {**signed, "x-github-delivery": "d-2",
              "x-hub-signature-256": signature_of(body, b"not the secret")}
    marks: list[str] = []

    async def scenario() -> list[int]:
        writer = InboxWriter(Inbox(store, "a"), on_accept=lambda: None)
        writer.on_write = lambda: marks.append("busy")
        writer.start()
        receiver = WebhookReceiver(SECRET, writer, 1_000_000)
        answers = [(await receiver.handle(h, body))[0] for h in (forged, signed, forged)]
        await writer.stop()
        return answers

    assert asyncio.run(scenario()) == [401, 202, 401]
    assert marks == ["busy"]
