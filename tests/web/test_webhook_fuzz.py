"""Webhook bodies generated from the webhook schemas and mutated from real examples, sent
to the real receiver and handled by the real handlers (in-process ASGI app, fake GitHub).

Properties, for every body, event name and signature:

* the receiver never answers 5xx;
* a refusal (bad or missing signature, body too big, not JSON, not an object, missing
  headers) stores nothing: no inbox row, no outbox row;
* an accepted delivery is handled to a clear outcome (``handled`` or ``ignored``) at its
  first attempt: a handler that raises on bad input is a bug (it would be retried and
  finally kept as ``failed``, and the person who wrote the comment hears nothing).

Examples are bounded and derandomized (``derandomize=True``: the same examples on every
run, in CI too), so a failure reproduces; found cases are pinned with ``@example``.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import func, select

from layerbot.app import Bot
from layerbot.store.db import Store
from layerbot.store.models import InboxEvent, OutboxMessage
from layerbot.web.webhook import _REPLAYED
from tests.support.databases import fresh_database
from tests.support.fakegithub import FakeGitHub
from tests.support.fixtures import DEFAULT_ORG
from tests.support.webhook_strategies import (
    anchor,
    any_json,
    generated_bodies,
    mutated_bodies,
)
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    issue_comment_created,
    load_payload,
)
from tests.web.conftest import make_config

SECRET = "fuzz-secret"
MAX_BODY = 64 * 1024
#: Events the bot handles, and some it has no handler for (they must be ignored cleanly).
HANDLED = ["issue_comment", "pull_request", "check_run", "check_suite", "push",
           "installation", "installation_repositories", "ping"]
UNHANDLED = ["issues", "release", "workflow_run", "", "x" * 300, "pull_request_review",
             "ISSUE_COMMENT", "ping\x00"]
FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@dataclass
class Receiver:
    """The bot's app with its inbox writer running (lifespan entered, no loops) and the
    processor driven by the test, in the app's own event loop."""

    bot: Bot
    client: TestClient
    store: Store

    def post(self, event: str, body: bytes, *, signature: str = "good",
             delivery: str | None = None) -> tuple[int, bytes]:
        headers = delivery_headers(event, body, SECRET, delivery_id=delivery)
        if signature == "bad":
            headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
        elif signature == "missing":
            del headers["X-Hub-Signature-256"]
        elif signature == "other-secret":
            headers = delivery_headers(event, body, "not-the-secret", delivery_id=delivery)
        response = self.client.post("/webhook", content=body, headers=headers)
        return response.status_code, response.content

    def counts(self) -> tuple[int, int]:
        with self.store.read() as s:
            return (int(s.scalar(select(func.count(InboxEvent.id))) or 0),
                    int(s.scalar(select(func.count(OutboxMessage.id))) or 0))

    def last_id(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.max(InboxEvent.id))) or 0)

    def handle_all(self, after: int = 0) -> list[tuple[object, ...]]:
        """Claim and handle every pending event once, as a worker does; those stored
        after event ``after`` that did not end handled or ignored (removed, so that one
        failing example does not leak into the next)."""
        processor = self.bot.processor
        inbox = self.bot.inbox

        async def drain() -> None:
            from datetime import timedelta

            from layerbot import clock

            while claimed := inbox.claim(processor.owner, clock.now(), timedelta(seconds=60),
                                         limit=8):
                for item in claimed:
                    await processor.process(item)

        self.client.portal.call(drain)  # type: ignore[union-attr]
        with self.store.transaction() as s:
            rows = list(s.scalars(select(InboxEvent).where(
                InboxEvent.id > after, InboxEvent.status.not_in(["handled", "ignored"]))))
            found = [(r.event, r.action, r.status, r.error) for r in rows]
            for row in rows:
                s.delete(row)
            return found


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def receiver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             github_app_key: tuple[str, str]) -> Iterator[Receiver]:
    """On both stores: PostgreSQL holds columns to their lengths, SQLite does not."""
    tmp: Path = tmp_path_factory.mktemp("webhook-fuzz")
    with ExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = stack.enter_context(fresh_database(request.getfixturevalue("pg_admin_url")))
        yield from _receiver(tmp, github_app_key[0], url)


def _receiver(tmp: Path, private_key: str, store_url: str | None) -> Iterator[Receiver]:
    fake = FakeGitHub(DEFAULT_APP_ID, private_key)
    fake.add_installation(DEFAULT_INSTALLATION_ID, DEFAULT_ORG)
    for login in ("Codertocat", "alice", "octocat"):  # the examples' senders may act
        fake.set_permission(DEFAULT_ORG, DEFAULT_REPO.split("/")[1], login, "write")
    fake.start()
    cfg = make_config(tmp, store_url, github=fake, private_key=private_key,
                      server={"max_body_bytes": MAX_BODY})
    cfg = cfg.model_copy(update={"github": cfg.github.model_copy(
        update={"webhook_secret": SecretStr(SECRET)})})
    store = Store(cfg.store_url)
    bot = Bot(cfg, store)
    with TestClient(bot.app(run_loops=False)) as client:
        yield Receiver(bot, client, store)
    store.close()
    fake.stop(wait=False)
    fake.take_violations()  # fuzzed bodies make the bot ask odd things; not the point here


def _event_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HANDLED), st.sampled_from(UNHANDLED))


_fresh = itertools.count(3_000_000_000)


def _fresh_identity(payload: Any) -> Any:
    """Give the body a new identity (``core/events.py``) where it has one: examples share
    comment ids and timestamps, and the inbox rightly drops a second body with the same
    identity as a replay, which would leave the handlers untested."""
    if not isinstance(payload, dict):
        return payload
    n = next(_fresh)
    for key, field in (("comment", "id"), ("check_run", "id")):
        if isinstance(payload.get(key), dict) and isinstance(payload[key].get(field), int):
            payload[key][field] = n
    if isinstance(payload.get("pull_request"), dict):
        payload["pull_request"]["updated_at"] = f"2026-01-01T00:00:00.{n}Z"
    return payload


def _accepted_and_handled(receiver: Receiver, event: str, payload: Any) -> None:
    payload = _fresh_identity(payload)
    before, last = receiver.counts(), receiver.last_id()
    body = json.dumps(payload).encode()
    status, answer = receiver.post(event, body)
    assert status < 500, (status, answer)
    if status >= 400:  # refused (not an object, ...): nothing stored
        assert receiver.counts() == before, answer
        return
    assert status != 200 or answer != _REPLAYED, "the harness sent a replay"
    unfinished = receiver.handle_all(after=last)
    assert not unfinished, unfinished


@FUZZ
@given(generated=generated_bodies())
def test_bodies_generated_from_the_schemas_are_handled_to_a_clear_outcome(
        receiver: Receiver, generated: tuple[str, Any]) -> None:
    event, payload = generated
    _accepted_and_handled(receiver, event, payload)


def _example(event: str, name: str, **changes: Any) -> tuple[str, Any]:
    """A retargeted example payload with top-level keys changed (None: removed)."""
    payload = anchor(load_payload(event, name))
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return event, payload


@FUZZ
@given(mutated=mutated_bodies(), event=st.one_of(st.none(), _event_names()))
# Found: a handler indexed body["comment"] / ["issue"] / ["pull_request"]["number"] and
# raised; the event was retried and kept as failed (fixed by core/payloads.py).
@example(mutated=_example("issue_comment", "created.with-installation", comment=None),
         event=None)
@example(mutated=_example("pull_request", "opened", pull_request={"number": "1"}), event=None)
@example(mutated=_example("issue_comment", "created.with-installation"), event="pull_request")
# Found: a repository that is a string crashed ordering_key: 500 (fixed in web/webhook.py).
@example(mutated=_example("issue_comment", "created.with-installation", repository="x"),
         event=None)
# Found: a NUL in the action (PostgreSQL's text refuses it) failed the INSERT: 503.
@example(mutated=_example("pull_request", "opened", action="opened\x00"), event=None)
@example(mutated=_example("issue_comment", "created.with-installation",
                          repository={"full_name": "o/\x00"}), event=None)
# Found: an installation id past 64 bits failed the inbox's INSERT: 503 (web/webhook.py).
@example(mutated=_example("pull_request", "opened", installation={"id": 2**64 - 1}),
         event=None)
def test_mutated_examples_are_handled_to_a_clear_outcome(
        receiver: Receiver, mutated: tuple[str, Any], event: str | None) -> None:
    """The example's own event name, or another one: a body under the wrong event."""
    own_event, payload = mutated
    _accepted_and_handled(receiver, event or own_event, payload)


def _refused_bodies() -> st.SearchStrategy[tuple[str, bytes]]:
    """Bodies paired with a way of refusing them: ``(signature, body)``."""
    comment = json.dumps(issue_comment_created("bot: build", "alice")).encode()
    bodies = st.one_of(st.just(comment), st.binary(max_size=64),
                       any_json().map(lambda v: json.dumps(v).encode()))
    return st.one_of(
        st.tuples(st.sampled_from(["bad", "missing", "other-secret"]), bodies),
        st.tuples(st.just("good"), st.one_of(  # signed, but not a JSON object
            st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")),
            st.sampled_from([b"", b"[]", b"null", b"1", b'"x"', b"{", b"\xff\xfe{}",
                             b'{"a": NaN}', b'{"action": "' + b"a" * 61 + b'"}']))),
        st.tuples(st.just("good"), st.just(b" " * (MAX_BODY + 1))),  # too big
    )


@FUZZ
@given(refused=_refused_bodies(), event=_event_names())
@example(refused=("good", b'{"action": "' + b"a" * 61 + b'"}'), event="issue_comment")
def test_refused_deliveries_store_nothing(receiver: Receiver, refused: tuple[str, bytes],
                                          event: str) -> None:
    signature, body = refused
    before = receiver.counts()
    status, answer = receiver.post(event, body, signature=signature)
    assert 400 <= status < 500, (status, answer)
    assert receiver.counts() == before


_LATIN1 = st.characters(min_codepoint=32, max_codepoint=255, exclude_characters=["\x7f"])


@FUZZ
@given(event=_event_names(), delivery=st.one_of(st.none(), st.text(_LATIN1, max_size=100)))
# Found: a delivery id or event name longer than its column failed the INSERT on
# PostgreSQL: 503 (fixed: refused with 400 in web/webhook.py).
@example(event="x" * 61, delivery="d")
@example(event="push", delivery="d" * 81)
@example(event="ping\x00", delivery="d")  # NUL: PostgreSQL's text refuses it
def test_missing_or_odd_headers_never_5xx(receiver: Receiver, event: str,
                                          delivery: str | None) -> None:
    """Delivery ids and event names as anyone could send them (still signed)."""
    body = json.dumps({"zen": "fuzz", "hook_id": 1}).encode()
    headers = delivery_headers(event, body, SECRET)
    if delivery is None:
        del headers["X-GitHub-Delivery"]
    else:
        headers["X-GitHub-Delivery"] = delivery.encode("latin-1")  # type: ignore[assignment]
    last = receiver.last_id()
    response = receiver.client.post("/webhook", content=body, headers=headers)
    assert response.status_code < 500, response.content
    assert not receiver.handle_all(after=last)


def test_a_delivery_id_is_stored_once(receiver: Receiver) -> None:
    """Sanity of the harness: an accepted comment is stored and handled."""
    body = json.dumps(issue_comment_created("bot: help", "alice")).encode()
    delivery = str(uuid.uuid4())
    before = receiver.counts()
    assert receiver.post("issue_comment", body, delivery=delivery)[0] == 202
    assert receiver.post("issue_comment", body, delivery=delivery)[0] == 200
    assert receiver.counts()[0] == before[0] + 1
    assert not receiver.handle_all()
    assert DEFAULT_REPO  # the served repository the strategies anchor bodies to
