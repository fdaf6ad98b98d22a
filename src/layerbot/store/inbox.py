"""The inbox: accepted webhook deliveries, durable before they are answered.

Keyed by (hook id, delivery id): GitHub sends some deliveries twice and a redelivery keeps
its delivery id, so the key makes a second copy a no-op. Those headers are not signed, so
each event is also unique by its own identity, read from the signed body
(``core/events.py``): a captured body sent again under a fresh delivery id is refused.
Events of one ordering key (one pull request) are handed out one at a time in arrival
order; other keys go in parallel. A claim is a lease its worker renews; several processes
(replicas) may claim from one inbox, and only claims that ran out are given back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

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

    def recover(self, owner: str, now: datetime, earlier_runs_of: str | None = None) -> int:
        """Give back the events whose claim ran out (their worker died, in any replica).

        ``earlier_runs_of``: an owner prefix (this replica's); the claims of its earlier
        runs are given back at once, since a replica runs one process at a time. Claims of
        ``owner`` (this run) and of other live replicas are left alone.
        """
        given_back = [InboxEvent.claimed_until < now]
        if earlier_runs_of:
            given_back.append(and_(
                InboxEvent.claimed_by.startswith(earlier_runs_of, autoescape=True),
                InboxEvent.claimed_by != owner))
        with self.store.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.instance == self.instance, InboxEvent.status == "processing",
                       or_(*given_back))
                .values(status="pending", claimed_by=None, claimed_until=None,
                        next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def renew_claims(self, owner: str, event_ids: Sequence[int], now: datetime,
                     lease: timedelta) -> int:
        """Extend the claims ``owner`` holds on ``event_ids`` (being handled): how many."""
        if not event_ids:
            return 0
        with self.store.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.id.in_(list(event_ids)), InboxEvent.status == "processing",
                       InboxEvent.claimed_by == owner)
                .values(claimed_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def claim(self, owner: str, now: datetime, lease: timedelta, limit: int = 1
              ) -> list[ClaimedEvent]:
        """Claim up to ``limit`` events that are due and first in line for their key.

        Each event is taken by a conditional UPDATE (still pending and due?), so two
        workers reading the same candidates at once never both get one: the second UPDATE
        waits for the first and then matches nothing. "Due" is checked again because
        between the read and the UPDATE another worker may have taken the event, failed it
        and put it off (until a rate limit resets): still pending, but not to be run yet.
        The heads of line are read after the candidates, so an event whose predecessor was
        taken meanwhile is not handed out ahead of it either.

        Payloads (10 kB and more each) are read only for the events taken, by the UPDATE
        itself: reading them for every candidate cost the worker and the database CPU.

        The candidates and the heads of line are read before the write transaction, not
        in it: on SQLite the write lock is the one the webhook's inserts wait for, and with
        a backlog of a thousand events those reads held it for 4 to 40 ms per claim (the
        worker held it 80 % of the time; bench_webhook). Reading first is safe because an
        event only ever leaves the unfinished set of its key: a head read at the start is
        still first in line at the UPDATE, or was taken meanwhile (the UPDATE matches
        nothing). The one way back, an operator's replay, is rare enough to accept.
        """
        with self.store.read() as session:
            candidates = session.execute(
                select(InboxEvent.id, InboxEvent.ordering_key)
                .where(InboxEvent.instance == self.instance, InboxEvent.status == "pending",
                       InboxEvent.next_attempt_at <= now)
                .order_by(InboxEvent.id)
                .limit(max(limit * 8, 32))
            ).all()
            if not candidates:
                return []
            heads = self._heads(session, {c.ordering_key for c in candidates})
        first_in_line = [c.id for c in candidates if heads.get(c.ordering_key) == c.id]
        if not first_in_line:
            return []
        claimed: list[ClaimedEvent] = []
        with self.store.transaction() as session:
            for event_id in first_in_line:
                taken = session.execute(
                    update(InboxEvent)
                    .where(InboxEvent.id == event_id, InboxEvent.status == "pending",
                           InboxEvent.next_attempt_at <= now)
                    .values(status="processing", claimed_by=owner,
                            claimed_until=now + lease, attempts=InboxEvent.attempts + 1)
                    .returning(InboxEvent.delivery_id, InboxEvent.event, InboxEvent.action,
                               InboxEvent.payload, InboxEvent.attempts,
                               InboxEvent.installation_id)
                    .execution_options(synchronize_session=False)
                ).first()
                if taken is None:
                    continue  # another worker took it first
                claimed.append(ClaimedEvent(event_id, taken.delivery_id, taken.event,
                                            taken.action, taken.payload, int(taken.attempts),
                                            taken.installation_id))
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
               now: datetime, owner: str | None = None, attempt: int | None = None) -> bool:
        """Record the outcome, in the same transaction as the handler's own writes.

        ``owner`` and ``attempt`` (of a :class:`ClaimedEvent`): only while that claim
        holds. False: it ran out and the event went to another worker (or again to this
        one); the caller rolls its writes back.
        """
        where = [InboxEvent.id == event_id, *_still_claimed(owner, attempt)]
        result = session.execute(
            update(InboxEvent).where(*where)
            .values(status=status, outcome=outcome, finished_at=now, claimed_by=None,
                    claimed_until=None, error=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def fail(self, event_id: int, error: str, now: datetime, retry_at: datetime | None,
             owner: str | None = None, attempt: int | None = None) -> bool:
        """A failed attempt: retry at ``retry_at``, or keep as failed when it is None.

        ``owner`` and ``attempt``: only while that claim holds (as for :meth:`finish`).
        """
        with self.store.transaction() as session:
            values: dict[str, object] = {"error": error, "claimed_by": None,
                                         "claimed_until": None}
            if retry_at is None:
                values.update(status="failed", finished_at=now)
            else:
                values.update(status="pending", next_attempt_at=retry_at)
            where = [InboxEvent.id == event_id, *_still_claimed(owner, attempt)]
            result = session.execute(update(InboxEvent).where(*where).values(**values)
                                     .execution_options(synchronize_session=False))
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

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


def _still_claimed(owner: str | None, attempt: int | None) -> list[ColumnElement[bool]]:
    """The claim ``owner`` made at ``attempt`` still holds (no condition without owner)."""
    if owner is None:
        return []
    where = [InboxEvent.status == "processing", InboxEvent.claimed_by == owner]
    if attempt is not None:
        where.append(InboxEvent.attempts == attempt)
    return where
