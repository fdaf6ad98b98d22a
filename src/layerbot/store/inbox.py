"""The inbox: accepted webhook deliveries, durable before they are answered.

Keyed by (hook id, delivery id): GitHub sends some deliveries twice and a redelivery keeps
its delivery id, so the key makes a second copy a no-op. Those headers are not signed, so
each event is also unique by its own identity, read from the signed body
(``core/events.py``): a captured body sent again under a fresh delivery id is refused.
Events of one ordering key (one pull request) are handed out one at a time in arrival
order; other keys go in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from layerbot.store.db import Store
from layerbot.store.models import InboxEvent

UNFINISHED = ("pending", "processing")

_INSERT = ("INSERT INTO inbox_events (instance, hook_id, delivery_id, event, action, "
           "ordering_key, installation_id, payload, identity, received_at, status, attempts, "
           "next_attempt_at) VALUES ")


@dataclass(frozen=True)
class Delivery:
    """A verified delivery, as the receiver hands it to the inbox."""

    hook_id: str
    delivery_id: str
    event: str
    action: str | None
    ordering_key: str
    installation_id: int | None
    payload: str  # the raw body, kept as sent
    #: What happened, from the signed body (``core/events.event_identity``); None: no such.
    identity: str | None = None


class Stored(StrEnum):
    """What the inbox did with a delivery."""

    NEW = "new"
    DUPLICATE = "duplicate"  # the same delivery id again: a redelivery
    REPLAYED = "replayed"  # a new delivery id for an event already received


@dataclass(frozen=True)
class ClaimedEvent:
    id: int
    delivery_id: str
    event: str
    action: str | None
    payload: str
    attempts: int
    installation_id: int | None


class Inbox:
    def __init__(self, store: Store, instance: str) -> None:
        self.store = store
        self.instance = instance

    def accept(self, deliveries: Sequence[Delivery], now: datetime) -> list[bool]:
        """Store deliveries in one transaction; True for each one that is new."""
        return [s is Stored.NEW for s in self.store_all(deliveries, now)]

    def store_all(self, deliveries: Sequence[Delivery], now: datetime) -> list[Stored]:
        """Store deliveries in one transaction; for each, whether it was new.

        One commit (one fsync) for a whole batch is what keeps answers fast under bursts.
        ``ON CONFLICT DO NOTHING`` without a target covers both unique keys (delivery and
        identity) in SQLite and PostgreSQL alike; telling a redelivery from a replay takes a
        second query, made only when something was turned away (rare).
        """
        if not deliveries:
            return []
        # One multi-row statement for the batch, written out rather than compiled: this is
        # the receiver's hot path. The rows the database kept come back.
        # SQLite: the text form SQLAlchemy itself writes (UTC, microseconds always present).
        stamp: object = (now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                         if self.store.is_sqlite else now)
        params: list[object] = []
        for d in deliveries:
            params += [self.instance, d.hook_id, d.delivery_id, d.event, d.action,
                       d.ordering_key, d.installation_id, d.payload, d.identity, stamp, stamp]
        mark = "?" if self.store.is_sqlite else "%s"
        row = "(" + ", ".join([mark] * 9) + f", {mark}, 'pending', 0, {mark})"
        sql = (_INSERT + ", ".join([row] * len(deliveries))
               + " ON CONFLICT DO NOTHING RETURNING hook_id, delivery_id")
        with self.store.transaction() as session:
            cursor = session.connection().exec_driver_sql(sql, tuple(params))
            kept = {(h, d) for h, d in cursor}
            known = (self._known(session, deliveries, kept)
                     if len(kept) < len(deliveries) else set())
        results: list[Stored] = []
        for d in deliveries:  # the same delivery twice in one batch: only the first is new
            key = (d.hook_id, d.delivery_id)
            if key in kept:
                results.append(Stored.NEW)
                kept.discard(key)
                known.add(key)
            else:
                results.append(Stored.DUPLICATE if key in known else Stored.REPLAYED)
        return results

    def _known(self, session: Session, deliveries: Sequence[Delivery],
               kept: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Deliveries turned away that are stored under their own key: redeliveries."""
        ids = [d.delivery_id for d in deliveries if (d.hook_id, d.delivery_id) not in kept]
        rows = session.execute(select(InboxEvent.hook_id, InboxEvent.delivery_id)
                               .where(InboxEvent.delivery_id.in_(ids))).all()
        return {(h, d) for h, d in rows} - kept

    def recover(self, owner: str, now: datetime) -> int:
        """Give back events claimed by an earlier run of this instance (it crashed)."""
        with self.store.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.instance == self.instance, InboxEvent.status == "processing",
                       or_(InboxEvent.claimed_by != owner, InboxEvent.claimed_until < now))
                .values(status="pending", claimed_by=None, claimed_until=None,
                        next_attempt_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def claim(self, owner: str, now: datetime, lease: timedelta, limit: int = 1
              ) -> list[ClaimedEvent]:
        """Claim up to ``limit`` events that are due and first in line for their key."""
        with self.store.transaction() as session:
            candidates = session.scalars(
                select(InboxEvent)
                .where(InboxEvent.instance == self.instance, InboxEvent.status == "pending",
                       InboxEvent.next_attempt_at <= now)
                .order_by(InboxEvent.id)
                .limit(max(limit * 8, 32))
            ).all()
            if not candidates:
                return []
            heads = self._heads(session, {c.ordering_key for c in candidates})
            claimed: list[ClaimedEvent] = []
            for event in candidates:
                if heads.get(event.ordering_key) != event.id:
                    continue  # an earlier event of the same PR is not finished yet
                event.status = "processing"
                event.claimed_by = owner
                event.claimed_until = now + lease
                event.attempts += 1
                claimed.append(ClaimedEvent(event.id, event.delivery_id, event.event,
                                            event.action, event.payload, event.attempts,
                                            event.installation_id))
                if len(claimed) >= limit:
                    break
            return claimed

    def _heads(self, session: Session, keys: set[str]) -> dict[str, int]:
        rows = session.execute(
            select(InboxEvent.ordering_key, func.min(InboxEvent.id))
            .where(InboxEvent.instance == self.instance, InboxEvent.ordering_key.in_(keys),
                   InboxEvent.status.in_(UNFINISHED))
            .group_by(InboxEvent.ordering_key)
        ).all()
        return {key: int(first) for key, first in rows}

    def finish(self, session: Session, event_id: int, status: str, outcome: str | None,
               now: datetime) -> None:
        """Record the outcome, in the same transaction as the handler's own writes."""
        session.execute(
            update(InboxEvent).where(InboxEvent.id == event_id)
            .values(status=status, outcome=outcome, finished_at=now, claimed_by=None,
                    claimed_until=None, error=None)
        )

    def fail(self, event_id: int, error: str, now: datetime, retry_at: datetime | None) -> None:
        """A failed attempt: retry at ``retry_at``, or keep as failed when it is None."""
        with self.store.transaction() as session:
            values: dict[str, object] = {"error": error, "claimed_by": None,
                                         "claimed_until": None}
            if retry_at is None:
                values.update(status="failed", finished_at=now)
            else:
                values.update(status="pending", next_attempt_at=retry_at)
            session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(**values))

    def replay(self, delivery_id: str, now: datetime) -> int:
        """Queue a delivery again (any status): `layerbot replay DELIVERY_ID`."""
        with self.store.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.instance == self.instance,
                       InboxEvent.delivery_id == delivery_id,
                       InboxEvent.status != "processing")
                .values(status="pending", attempts=0, next_attempt_at=now, error=None,
                        finished_at=None, outcome=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def known_deliveries(self, delivery_ids: Sequence[str]) -> set[str]:
        if not delivery_ids:
            return set()
        with self.store.read() as session:
            return set(session.scalars(
                select(InboxEvent.delivery_id).where(InboxEvent.delivery_id.in_(delivery_ids))
            ))

    def lag_seconds(self, now: datetime) -> float:
        """How long the oldest unfinished event has waited (0 when none waits)."""
        with self.store.read() as session:
            oldest = session.scalar(
                select(InboxEvent.received_at)
                .where(InboxEvent.instance == self.instance,
                       InboxEvent.status.in_(UNFINISHED))
                .order_by(InboxEvent.id).limit(1)
            )
        if oldest is None:
            return 0.0
        return max(0.0, (now - oldest).total_seconds())

    def counts(self) -> dict[str, int]:
        with self.store.read() as session:
            rows = session.execute(
                select(InboxEvent.status, func.count()).where(
                    InboxEvent.instance == self.instance).group_by(InboxEvent.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def get(self, delivery_id: str) -> InboxEvent | None:
        with self.store.read() as session:
            return session.scalars(
                select(InboxEvent).where(InboxEvent.delivery_id == delivery_id)
            ).first()
