"""What people do to pull requests during the soak, drawn from a seeded random generator.

Each action goes through the same doors as on GitHub: the repository (a real git origin)
and the fake GitHub change first, then the webhook is delivered to one of the replicas
(round-robin, as a load balancer would). Every delivery's body is kept by its GUID so that
a delivery the faults "lost" can be sent when the bot asks GitHub to redeliver it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from tests.support.botproc import SECRET
from tests.support.fakegithub.state import Delivery
from tests.support.fleet import NAME, OWNER, Fleet
from tests.support.soak.content import Content, files
from tests.support.soak.history import History
from tests.support.webhooks import (
    delivery_headers,
    encode,
    issue_comment_created,
    pull_request_event,
)

#: People of the repository and what they may do.
PEOPLE = {"alice": "write", "bob": "write", "maint": "maintain", "mallory": "read"}

#: Build commands: both syntaxes, filters, and typos (answered with an error).
BUILDS = [
    ("bot: build", 1),
    ("bot: build for:arch=x86_64/amd/zen2", 1),
    ("bot: build arch:zen4 repo:eessi-2023.06", 1),
    ("bot: build for:arch=x86_64/intel/haswell repo:eessi-2023.06", 1),
    ("bot: biuld", 1),  # a typo: an error reply with what was meant
    ("bot: build for:arch=x86_64/amd/zen9", 1),  # nobody builds it: says who builds what
    ("bot: build\nbot: status", 2),
]
OTHER_COMMANDS = ["bot: status", "bot: help", "bot: show_config", "bot: probe"]


@dataclass
class Command:
    """A comment with bot commands, and what the invariants expect of it."""

    pr: int
    body: str
    login: str
    delivery: str
    comment_id: int
    sent_at: datetime
    #: Seconds into the soak.
    at: float
    #: Replies expected (one per command line; a refusal answers the whole comment once).
    replies: int


@dataclass
class PullState:
    number: int
    content: Content
    head: str
    revision: int = 0
    open: bool = True
    labelled: bool = False
    #: When its head last changed (time.monotonic()).
    pushed: float = 0.0


@dataclass
class Kept:
    """A delivery's event and body, for redelivery."""

    event: str
    body: bytes
    delivered: bool


@dataclass
class Activity:
    fleet: Fleet
    history: History
    rng: random.Random
    pulls: dict[int, PullState] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    #: Answer time of each webhook delivery (seconds).
    answers: list[float] = field(default_factory=list)
    kept: dict[str, Kept] = field(default_factory=dict)
    #: Set by the faults: how the next delivery misbehaves (None: delivered once).
    delivery_fault: Callable[[], str | None] = lambda: None
    _next_replica: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # A large installation's hourly budget (GitHub Enterprise Cloud: 15,000): the soak
        # is far busier than a real stack repository, and at 5,000 an hour's soak ran out.
        self.fleet.fake.rate_limit_limit = 15000
        for login, role in PEOPLE.items():
            self.fleet.fake.set_permission(OWNER, NAME, login, role)
        self.fleet.fake.on_redeliver = self.redeliver

    # --- delivering ----------------------------------------------------------------------

    def deliver(self, event: str, payload: dict[str, Any]) -> str:
        """Send an event as GitHub would, unless a fault says otherwise; its GUID."""
        guid = str(uuid.uuid4())
        body = encode(payload)
        fault = self.delivery_fault()
        with self._lock:
            self.kept[guid] = Kept(event, body, delivered=fault != "lose")
        if fault == "lose":
            # GitHub tried and failed: the delivery is listed as failed, for recovery.
            self._log_delivery(guid, event, payload, 502, "Bad Gateway")
            self.history.action("delivery lost", payload_pr(payload), guid=guid)
            return guid
        if fault == "hold":
            threading.Timer(4.0, self._post_logged, args=(event, payload, body, guid)).start()
        else:
            self._post_logged(event, payload, body, guid)
        if fault == "duplicate":
            self._post(event, body, guid)
            self.history.action("delivery duplicated", payload_pr(payload), guid=guid)
        elif fault == "hold":  # held back while later deliveries overtake it
            self.history.action("delivery reordered", payload_pr(payload), guid=guid)
        elif fault == "replay":
            # The same body again later, under a fresh GUID (a replay attack or a proxy's).
            threading.Timer(5.0, self._post, args=(event, body, str(uuid.uuid4()))).start()
            self.history.action("body replayed", payload_pr(payload), guid=guid)
        return guid

    def _post_logged(self, event: str, payload: dict[str, Any], body: bytes,
                     guid: str) -> None:
        """Delivered, or (every replica down) listed as failed, for the bot to recover."""
        if self._post(event, body, guid):
            self._log_delivery(guid, event, payload, 202, "Accepted")
        else:
            self._log_delivery(guid, event, payload, 502, "Bad Gateway")

    def _post(self, event: str, body: bytes, guid: str) -> bool:
        replicas = self.fleet.replicas
        for _ in range(len(replicas) * 3):
            with self._lock:
                replica = replicas[self._next_replica % len(replicas)]
                self._next_replica += 1
            started = time.perf_counter()
            try:
                response = httpx.post(replica.url + "/webhook", content=body, timeout=10,
                                      headers=delivery_headers(event, body, SECRET, guid))
            except httpx.HTTPError:
                continue  # that replica is down: the balancer tries another
            if response.status_code < 500:
                with self._lock:
                    self.answers.append(time.perf_counter() - started)
                return True
            time.sleep(0.2)
        self.history.action("delivery failed", None, guid=guid)
        return False

    def _log_delivery(self, guid: str, event: str, payload: dict[str, Any], code: int,
                      status: str) -> None:
        fake = self.fleet.fake
        with self._lock:
            number = max(fake.deliveries, default=0) + 1
            fake.add_delivery(number, guid, event, payload.get("action"), code, status,
                              datetime.now(UTC), installation_id=payload.get(
                                  "installation", {}).get("id"))

    def redeliver(self, delivery: Delivery) -> None:
        with self._lock:
            kept = self.kept.get(delivery.guid)
        if kept is None:
            return
        self.history.action("redelivered", None, guid=delivery.guid)
        self._post(kept.event, kept.body, delivery.guid)

    # --- actions -------------------------------------------------------------------------

    def open_pr(self, content: Content | None = None) -> PullState:
        content = content or self.rng.choices(
            [Content.OK, Content.FAIL, Content.PIPELINE, Content.NOSY],
            weights=[55, 15, 15, 15])[0]
        with self._lock:
            number = max(self.pulls, default=0) + 1
            self.pulls[number] = PullState(number, content, "")
        head = self.fleet.origin.open_pr(number, files(content, 0))
        self.pulls[number].head = head
        self.pulls[number].pushed = time.monotonic()
        self.fleet.fake.add_pull(OWNER, NAME, number, head_sha=head)
        self.history.action("open", number, content=content.value, head=head[:8])
        self.deliver("pull_request", pull_request_event("opened", number, head,
                                                        author="alice", updated_at=stamp()))
        return self.pulls[number]

    def push(self, pull: PullState) -> None:
        pull.revision += 1
        before = pull.head
        pull.head = self.fleet.origin.push_pr(pull.number, files(pull.content, pull.revision))
        pull.pushed = time.monotonic()
        self.fleet.fake.add_commit(OWNER, NAME, pull.head)
        self.fleet.fake.update_pull(OWNER, NAME, pull.number, head_sha=pull.head)
        self.history.action("push", pull.number, head=pull.head[:8])
        self.deliver("pull_request", pull_request_event(
            "synchronize", pull.number, pull.head, before=before, author="alice",
            updated_at=stamp()))

    def comment(self, pull: PullState, body: str, login: str = "alice",
                replies: int = 1) -> Command:
        # GitHub's times are in seconds: a comment in the second of a push is not newer
        # than it, and the bot refuses it as possibly written against the older head.
        time.sleep(max(0.0, pull.pushed + 1.1 - time.monotonic()))
        comment_id = self.fleet.fake.add_comment(OWNER, NAME, pull.number, body, login=login)
        sent = datetime.now(UTC)
        guid = self.deliver("issue_comment", issue_comment_created(
            body, login, pr_number=pull.number, comment_id=comment_id))
        refused = PEOPLE[login] == "read"
        command = Command(pull.number, body, login, guid, comment_id, sent,
                          self.history.now(), 1 if refused else replies)
        with self._lock:
            self.commands.append(command)
        words = [line.split(":", 1)[1].split()[0] for line in body.splitlines() if ":" in line]
        name = "bot: " + " + ".join(words) + (" (may not)" if refused else "")
        self.history.action(name, pull.number, login=login, body=body.replace("\n", "; "),
                            guid=guid)
        return command

    def build(self, pull: PullState) -> None:
        body, replies = self.rng.choice(BUILDS)
        self.comment(pull, body, replies=replies)

    def label_deploy(self, pull: PullState, login: str = "maint") -> None:
        self.history.action("deploy label", pull.number, login=login, head=pull.head[:8])
        pull.labelled = True
        self.deliver("pull_request", pull_request_event(
            "labeled", pull.number, pull.head, label="bot:deploy", labels=["bot:deploy"],
            sender=login, updated_at=stamp()))

    def close(self, pull: PullState) -> None:
        pull.open = False
        self.fleet.fake.update_pull(OWNER, NAME, pull.number, state="closed")
        self.history.action("close", pull.number)
        self.deliver("pull_request", pull_request_event("closed", pull.number, pull.head))

    def step(self) -> None:
        """One action, drawn by weight among those that make sense now."""
        open_pulls = [p for p in self.pulls.values() if p.open]
        if len(open_pulls) < 3 or self.rng.random() < 0.08:
            pull = self.open_pr()
            self.build(pull)
            return
        pull = self.rng.choice(open_pulls)
        choices: list[tuple[float, Callable[[], Any]]] = [
            (30, lambda: self.build(pull)),
            (8, lambda: self.push(pull)),
            (6, lambda: self.comment(pull, "bot: cancel")),
            (8, lambda: self.comment(pull, "bot: rebuild failed")),
            (10, lambda: self.comment(pull, self.rng.choice(OTHER_COMMANDS))),
            (5, lambda: self.comment(pull, "bot: build", login="mallory")),
            (6, lambda: self.label_deploy(pull)),
            (2, lambda: self.label_deploy(pull, login="mallory")),
            (4, lambda: self.close(pull)),
        ]
        weights = [w for w, _ in choices]
        self.rng.choices([a for _, a in choices], weights=weights)[0]()


def stamp() -> str:
    """Now, as GitHub writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payload_pr(payload: dict[str, Any]) -> int | None:
    if "number" in payload:
        return int(payload["number"])
    issue = payload.get("issue")
    return int(issue["number"]) if isinstance(issue, dict) else None
