"""POST /webhook: verify, store durably, answer. No handling happens here.

The order is the point: size limit, then the signature (in constant time) before the body
is even parsed, then parsing, then the inbox. Nothing unverified reaches the store, and
GitHub gets its answer in milliseconds, long before its 10-second limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from layerbot import clock, log, metrics
from layerbot.core.events import event_identity
from layerbot.store.inbox import Delivery, Inbox, Stored

_log = log.get("webhook")


def signature_of(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(signature_of(body, secret), header)


def installation_id_of(payload: dict[str, Any]) -> int | None:
    """``installation.id`` when it is one: an integer a 64-bit column holds.

    Anything else (a string, a float, ``true``, 2**64 - 1) is None: stored as it was, it
    failed the whole batch's INSERT (every delivery written with it answered 503) or
    stored a string where the workers expect an id (found by the webhook fuzzing)."""
    installation = payload.get("installation")
    value = installation.get("id") if isinstance(installation, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def _at(payload: dict[str, Any], *path: str | int) -> object:
    """The value at ``path``, or None where a step is missing or of another type."""
    node: object = payload
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


#: What the inbox's columns hold (``store/models.InboxEvent``): longer values failed the
#: whole batch's INSERT on PostgreSQL (503 for every delivery written with them).
MAX_EVENT, MAX_ACTION, MAX_DELIVERY, MAX_HOOK, MAX_KEY = 60, 60, 80, 40, 300


def ordering_key(event: str, payload: dict[str, Any], delivery_id: str) -> str:
    """Events of one pull request share a key; anything else is alone in its line.

    Read defensively (a signed body may have any shape: a ``repository`` that is a string
    crashed the receiver with a 500); a key longer than its column is hashed."""
    repo = _at(payload, "repository", "full_name")
    number = None
    if isinstance(payload.get("issue"), dict):
        number = _at(payload, "issue", "number")
    elif isinstance(payload.get("pull_request"), dict):
        number = _at(payload, "pull_request", "number")
    elif event in ("check_run", "check_suite"):
        number = _at(payload, event, "pull_requests", 0, "number")
        head = _at(payload, event, "head_sha")
        if number is None and head:
            return _fitted(f"{repo}@{head}")
    if repo and number is not None:
        return _fitted(f"{repo}#{number}")
    return _fitted(f"delivery:{delivery_id}")


def _storable(value: str, limit: int) -> bool:
    """Whether a text column takes ``value``: PostgreSQL refuses NUL in text, and longer
    than its column (both failed the batch's INSERT: 503; found by the webhook fuzzing)."""
    return len(value) <= limit and "\x00" not in value


def _fitted(key: str) -> str:
    """The key as it fits its column (a hash of it when it does not)."""
    if _storable(key, MAX_KEY):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class InboxWriter:
    """Writes accepted deliveries in batches: one transaction, one fsync, many answers."""

    def __init__(self, inbox: Inbox, on_accept: Callable[[], None], max_batch: int = 256) -> None:
        self.inbox = inbox
        self.on_accept = on_accept
        #: Called as each delivery is handed in: `serve` tells its worker process to hold
        #: its database work back meanwhile (app/answers_first.py).
        self.on_write: Callable[[], None] = lambda: None
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Delivery, asyncio.Future[Stored]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Its own thread: answers to GitHub never queue behind workers' database calls.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-writer")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self._thread.shutdown(wait=False)

    async def write(self, delivery: Delivery) -> Stored:
        self.on_write()
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        await self._queue.put((delivery, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self.inbox.store_all, [d for d, _ in batch], clock.now())
            except Exception as exc:
                _log.exception("inbox write failed", size=len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), new in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(new)
            if Stored.NEW in results:
                self.on_accept()


_ACCEPTED = b'{"message": "accepted"}'
_DUPLICATE = b'{"message": "already received"}'
_REPLAYED = b'{"message": "already received under another delivery id; ignored"}'
_ACCEPTED_COUNT = metrics.DELIVERIES.labels(outcome="accepted")
_DUPLICATE_COUNT = metrics.DELIVERIES.labels(outcome="duplicate")
_REPLAYED_COUNT = metrics.DELIVERIES.labels(outcome="replayed")
_SECONDS = metrics.WEBHOOK_SECONDS


def _refuse(status: int, reason: str, message: str, delivery: str | None) -> tuple[int, bytes]:
    metrics.DELIVERIES.labels(outcome=f"rejected_{reason}").inc()
    _log.warning("delivery refused", reason=reason, status=status, delivery_id=delivery)
    return status, orjson.dumps({"message": message})


class WebhookReceiver:
    """The receiver as a bare ASGI app: the hot path is the signature, the parse, the inbox.

    No request or response objects, no middleware: per delivery it costs little more than
    the HTTP parsing that uvicorn does anyway.
    """

    def __init__(self, secret: bytes | None, writer: InboxWriter, max_body: int) -> None:
        self.secret = secret
        self.writer = writer
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            status, body = 405, b'{"message": "POST only"}'
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            status, body = await self.handle(headers, await self._body(receive, headers))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The body, or None when it is over the limit (checked before and while reading)."""
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def handle(self, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        started = time.perf_counter()
        delivery_id = headers.get("x-github-delivery")
        if body is None:
            return _refuse(413, "too_large", f"body over {self.max_body} bytes", delivery_id)
        if self.secret is None:
            return _refuse(401, "no_secret", "this bot has no webhook secret configured",
                           delivery_id)
        if not verify_signature(body, self.secret, headers.get("x-hub-signature-256")):
            return _refuse(401, "signature", "missing or wrong X-Hub-Signature-256", delivery_id)
        event = headers.get("x-github-event")
        hook_id = headers.get("x-github-hook-id", "")
        if not event or not delivery_id:
            return _refuse(400, "headers", "X-GitHub-Event and X-GitHub-Delivery are required",
                           delivery_id)
        if not (_storable(event, MAX_EVENT) and _storable(delivery_id, MAX_DELIVERY)
                and _storable(hook_id, MAX_HOOK)):
            return _refuse(400, "headers", "X-GitHub-Event, X-GitHub-Delivery or "
                           "X-GitHub-Hook-ID is longer than GitHub's or has a NUL",
                           delivery_id[:MAX_DELIVERY].replace("\x00", ""))
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _refuse(400, "malformed", "the body is not JSON", delivery_id)
        if not isinstance(payload, dict):
            return _refuse(400, "malformed", "the body is not a JSON object", delivery_id)
        if event == "ping":
            metrics.DELIVERIES.labels(outcome="ping").inc()
            return 200, b'{"message": "pong"}'
        action = payload.get("action")
        action = action if isinstance(action, str) else None
        if action is not None and not _storable(action, MAX_ACTION):
            return _refuse(400, "malformed", f"the action is over {MAX_ACTION} characters "
                           "or has a NUL", delivery_id)
        try:
            stored = await self.writer.write(Delivery(
                hook_id=hook_id, delivery_id=delivery_id,
                event=event, action=action,
                ordering_key=ordering_key(event, payload, delivery_id),
                installation_id=installation_id_of(payload),
                payload=body.decode("utf-8"),
                identity=event_identity(event, action, payload),
            ))
        except Exception as exc:  # the store is down: say so; recovery asks for a redelivery
            _log.error("delivery not stored", delivery_id=delivery_id, error=str(exc))
            return _refuse(503, "store", "the delivery could not be stored; it will be "
                           "asked for again", delivery_id)
        _SECONDS.observe(time.perf_counter() - started)
        if stored is Stored.NEW:
            _ACCEPTED_COUNT.inc()
            return 202, _ACCEPTED
        if stored is Stored.DUPLICATE:
            _DUPLICATE_COUNT.inc()
            return 200, _DUPLICATE
        # Signed, but an event already received: someone re-sent a captured body.
        _REPLAYED_COUNT.inc()
        _log.warning("replayed event ignored", delivery_id=delivery_id, github_event=event,
                     action=action)
        return 200, _REPLAYED


def webhook_route(secret: bytes | None, writer: InboxWriter, max_body: int) -> Route:
    """POST /webhook as a route of the app (the receiver is a bare ASGI app)."""
    return Route("/webhook", WebhookReceiver(secret, writer, max_body), methods=["POST"],
                 include_in_schema=False)


class WebhookFirst:
    """An ASGI front for `serve`: /webhook goes straight to its route, the rest to the app.

    The webhook's answers carry no HTML, cookies or CORS, so they need none of the app's
    middleware (security headers, sessions, error pages); skipping it keeps the hot path
    to the signature, the parse and the inbox.
    """

    def __init__(self, app: ASGIApp, route: Route) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/webhook":
            await self.route.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)
