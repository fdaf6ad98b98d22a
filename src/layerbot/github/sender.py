"""The outbox sender: delivers writes to GitHub, retrying what GitHub asks to be retried.

5xx answers and network errors back off exponentially; 403/429 rate-limit answers wait
for ``retry-after`` or ``x-ratelimit-reset`` as GitHub's documentation asks; other 4xx
answers are final and kept as failed with GitHub's message.

A comment whose create got no answer (a timeout) or a 5xx may have been made all the same.
Its next attempt looks for it by its marker before creating it; after a timeout only once
``in_flight_seconds`` have passed, as the create may still land after the answer we gave
up on (the soak made one reply twice so).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from layerbot import clock, log, metrics
from layerbot.config import OutboxConfig
from layerbot.github.client import GitHubError
from layerbot.github.writes import Performer
from layerbot.loops import pause
from layerbot.store.outbox import Message, Outbox

_log = log.get("github")

#: Secondary rate limit without retry-after: GitHub says to wait at least a minute.
SECONDARY_LIMIT_WAIT = timedelta(seconds=60)


def retry_at(error: GitHubError, attempts: int, config: OutboxConfig,
             now: datetime) -> datetime | None:
    """When to try again after ``error`` on attempt ``attempts``; None when never.
    A rate limit is waited out whatever the attempt: it says nothing of the write."""
    backoff = timedelta(seconds=min(config.backoff_seconds * 2 ** (attempts - 1),
                                    config.backoff_max_seconds))
    limited = rate_limited_until(error, now, max(SECONDARY_LIMIT_WAIT, backoff))
    if limited is not None:
        return limited
    if attempts >= config.max_attempts:
        return None
    status = error.status
    if status == 0 or status >= 500 or status == 401:
        return now + backoff
    return None  # any other 4xx: the request itself is wrong; retrying will not help


def rate_limited_until(error: GitHubError, now: datetime,
                       unsaid: timedelta = SECONDARY_LIMIT_WAIT) -> datetime | None:
    """When GitHub says a rate-limited request may be made again (``unsaid`` from now when
    it names no time); None if ``error`` is no rate limit."""
    headers = error.headers
    if error.status not in (403, 429) or not _is_rate_limited(error):
        return None
    if "retry-after" in headers:
        return now + timedelta(seconds=_number(headers["retry-after"], 60))
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        reset = datetime.fromtimestamp(_number(headers["x-ratelimit-reset"], 0), now.tzinfo)
        return max(reset, now + timedelta(seconds=1))
    return now + unsaid  # a secondary limit that names no time


def _is_rate_limited(error: GitHubError) -> bool:
    h = error.headers
    return ("retry-after" in h or h.get("x-ratelimit-remaining") == "0"
            or "rate limit" in error.message.lower() or error.status == 429)


def _number(value: str, default: float) -> float:
    try:
        return float(value)
    except ValueError:
        return default


#: How often, at most, the sender stores GitHub's rate-limit headers while it sends.
RATE_LIMITS_EVERY_SECONDS = 1.0


class Sender:
    def __init__(self, outbox: Outbox, performer: Performer, config: OutboxConfig) -> None:
        self.outbox = outbox
        self.performer = performer
        self.config = config
        self.wakeup = asyncio.Event()
        #: When GitHub's rate-limit headers were last stored (monotonic), and whether
        #: newer ones are waiting to be.
        self._limits_stored_at = -RATE_LIMITS_EVERY_SECONDS
        self._limits_unstored = False

    async def run(self, stop: asyncio.Event) -> None:
        recovered = await asyncio.to_thread(self.outbox.recover)
        if recovered:
            _log.info("outbox messages recovered after a restart", count=len(recovered))
        while not stop.is_set():
            if await self.send_due() == 0:
                await pause(stop, 0.5, self.wakeup)

    async def send_due(self) -> int:
        """Send every due message once (concurrently); returns how many were tried."""
        messages = await asyncio.to_thread(self.outbox.claim, clock.now(), self.config.senders)
        if messages:
            await asyncio.gather(*(self._send(m) for m in messages))
            self._limits_unstored = True
        # At most once a second while sending, and at once when it stops: a write
        # transaction per batch sent was a quarter of the worker's writes in a burst, and
        # on SQLite each one holds up the webhook's inserts.
        if self._limits_unstored and (
                not messages
                or time.monotonic() - self._limits_stored_at >= RATE_LIMITS_EVERY_SECONDS):
            self._limits_unstored = False
            self._limits_stored_at = time.monotonic()
            await asyncio.to_thread(self._store_rate_limits)
        metrics.OUTBOX_BACKLOG.set(await asyncio.to_thread(self.outbox.backlog))
        return len(messages)

    def _store_rate_limits(self) -> None:
        """Keep GitHub's latest rate-limit headers where the control center can read them."""
        now = clock.now()
        for info in list(self.performer.github.rate_limits.values()):
            self.outbox.record_rate_limit(info.resource, info.limit, info.remaining,
                                          info.reset_at, now)

    async def _send(self, message: Message) -> None:
        with log.bound(outbox_id=message.id, kind=message.kind, repo=message.repo):
            try:
                created = await self.performer.perform(message)
            except GitHubError as exc:
                if _already_done(message, exc):
                    await asyncio.to_thread(self.outbox.sent, message.id, clock.now())
                    return
                now = clock.now()
                at = retry_at(exc, message.attempts, self.config, now)
                ambiguous = message.kind == "comment" and (exc.status == 0 or exc.status >= 500)
                if at is not None and ambiguous and exc.status == 0:
                    # No answer: the create may still be on its way. Looking for it now
                    # could miss it and make a second one; look once it has landed.
                    at = max(at, now + timedelta(seconds=self.config.in_flight_seconds))
                outcome = "retry" if at else "failed"
                metrics.GITHUB_WRITES.labels(kind=message.kind, outcome=outcome).inc()
                (_log.warning if at else _log.error)(
                    "GitHub write failed", status=exc.status, error=exc.message,
                    attempt=message.attempts, retry_at=at.isoformat() if at else None)
                await asyncio.to_thread(self.outbox.retry, message.id, str(exc), at,
                                        ambiguous)
                self.wakeup.set()
                return
            except Exception as exc:  # a bug or bad payload: keep it for inspection
                _log.exception("GitHub write crashed")
                await asyncio.to_thread(self.outbox.retry, message.id,
                                        f"{type(exc).__name__}: {exc}", None)
                metrics.GITHUB_WRITES.labels(kind=message.kind, outcome="failed").inc()
                return
            metrics.GITHUB_WRITES.labels(kind=message.kind, outcome="sent").inc()
            key, kind, github_id = created if created else (None, None, None)
            await asyncio.to_thread(self.outbox.sent, message.id, clock.now(), key, kind,
                                    github_id)


def _already_done(message: Message, error: GitHubError) -> bool:
    """Removing a label that is not there is what we wanted anyway."""
    return message.kind == "label_remove" and error.status == 404
