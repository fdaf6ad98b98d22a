"""The webhook receiver and the first behaviour, end to end against a real `layerbot serve`."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from layerbot.core import commands
from layerbot.core.events import event_identity
from layerbot.web.webhook import signature_of, verify_signature
from tests.support.botproc import SECRET, BotProcess, free_port, write_config
from tests.support.fakegithub import FakeGitHub
from tests.support.fixtures import DEFAULT_REPO
from tests.support.shared import github_data_dir
from tests.support.webhooks import (
    all_payloads,
    delivery_headers,
    encode,
    issue_comment_created,
)

OWNER, NAME = DEFAULT_REPO.split("/")


@pytest.fixture
def bot(tmp_path: Path, fake_github: FakeGitHub, github_app_key: tuple[str, str]
        ) -> Iterator[BotProcess]:
    port = free_port()
    config = write_config(tmp_path, api_url=fake_github.url, app_id=fake_github.app_id,
                          private_key_pem=github_app_key[0], port=port,
                          extra={"server": {"max_body_bytes": 1_000_000}})
    with BotProcess(config, port) as process:
        yield process


def inbox_rows(bot: BotProcess) -> int:
    db = bot.config.parent / "layerbot.db"
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM inbox_events").fetchone()[0])


def post(bot: BotProcess, event: str, body: bytes, secret: str | None = SECRET,
         delivery: str | None = None, **headers: str) -> httpx.Response:
    h = delivery_headers(event, body, secret, delivery_id=delivery)
    h.update(headers)
    return httpx.post(bot.url + "/webhook", content=body, headers=h, timeout=10)


def test_github_published_test_vector_verifies() -> None:
    vector = json.loads((github_data_dir() / "webhook-signature-test-vector.json").read_text())
    secret, payload = vector["secret"].encode(), vector["payload"].encode()
    assert signature_of(payload, secret) == vector["x_hub_signature_256"]
    assert verify_signature(payload, secret, vector["x_hub_signature_256"])
    assert not verify_signature(payload + b" ", secret, vector["x_hub_signature_256"])


def test_every_real_payload_is_accepted_once_and_refused_unsigned(bot: BotProcess) -> None:
    payloads = all_payloads()
    assert len(payloads) == 39
    for event, name, _payload, raw in payloads:
        unsigned = post(bot, event, raw, secret=None)
        wrong = post(bot, event, raw, secret="not-the-secret")
        assert (unsigned.status_code, wrong.status_code) == (401, 401), name
    assert inbox_rows(bot) == 0  # nothing unverified reached the store
    # Some examples describe the same event (the same comment, created): after the first,
    # the store knows it by its identity, whatever the delivery id (core/events.py).
    seen: set[str] = set()
    replays = 0
    for event, name, payload, raw in payloads:
        delivery = str(uuid.uuid4())
        first = post(bot, event, raw, delivery=delivery)
        again = post(bot, event, raw, delivery=delivery)
        identity = event_identity(event, payload.get("action"), payload)
        replay = identity in seen
        replays += replay
        seen.add(identity or delivery)
        expected = 200 if event == "ping" or replay else 202
        assert first.status_code == expected, (name, first.text)
        assert again.status_code == 200, name
    pings = sum(1 for e, *_ in payloads if e == "ping")
    assert inbox_rows(bot) == len(payloads) - pings - replays


def test_bad_requests_are_refused_before_the_store(bot: BotProcess) -> None:
    good = encode({"zen": "x"})
    assert post(bot, "issue_comment", b"not json").status_code == 400
    assert post(bot, "issue_comment", b"[1, 2]").status_code == 400
    big = b'{"pad": "' + b"x" * 1_200_000 + b'"}'
    assert post(bot, "issue_comment", big).status_code == 413
    h = delivery_headers("issue_comment", good, SECRET)
    del h["X-GitHub-Event"]
    assert httpx.post(bot.url + "/webhook", content=good, headers=h).status_code == 400
    assert inbox_rows(bot) == 0
    metrics = httpx.get(bot.url + "/metrics").text
    assert 'layerbot_deliveries_total{outcome="rejected_malformed"} 2.0' in metrics
    assert 'layerbot_deliveries_total{outcome="rejected_too_large"} 1.0' in metrics


def test_health_endpoints(bot: BotProcess) -> None:
    assert httpx.get(bot.url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(bot.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"]
    assert "layerbot_inbox_lag_seconds" in httpx.get(bot.url + "/metrics").text


def seed_comment(fake: FakeGitHub, number: int, body: str, login: str = "alice") -> dict:
    fake.add_pull(OWNER, NAME, number, head_sha=f"{number:040x}")
    fake.set_permission(OWNER, NAME, login, "write")
    comment_id = fake.add_comment(OWNER, NAME, number, body, login=login)
    return issue_comment_created(body, login, pr_number=number, comment_id=comment_id)


def test_eyes_on_commands_and_help_reply_generated_from_the_grammar(
        bot: BotProcess, fake_github: FakeGitHub) -> None:
    payload = seed_comment(fake_github, 7, "please\nbot: help")
    assert post(bot, "issue_comment", encode(payload)).status_code == 202
    comment_id = payload["comment"]["id"]
    fake_github.wait_for(lambda: len(fake_github.comments(OWNER, NAME, 7)) == 2, timeout=15)
    assert fake_github.reactions(comment_id) == ["eyes"]
    reply = fake_github.comments(OWNER, NAME, 7)[-1].body
    for spec in commands.COMMANDS:
        assert f"bot: {spec.name}" in reply
    # structured logs: every line about the event carries its delivery id; no secrets
    lines = [json.loads(line) for line in bot.log().splitlines() if line.startswith("{")]
    about_event = [line for line in lines if line.get("github_event")]
    assert about_event and all(line.get("delivery_id") for line in about_event)
    assert SECRET not in bot.log() and "PRIVATE KEY" not in bot.log()


def test_comments_without_commands_or_by_bots_are_left_alone(
        bot: BotProcess, fake_github: FakeGitHub) -> None:
    plain = seed_comment(fake_github, 8, "looks good to me")
    by_bot = seed_comment(fake_github, 8, "bot: help", login="layerbot[bot]")
    by_bot["comment"]["user"]["type"] = "Bot"
    quoted = seed_comment(fake_github, 8, "> bot: build")
    for payload in (plain, by_bot, quoted):
        assert post(bot, "issue_comment", encode(payload)).status_code == 202
    # a later comment with a command proves the earlier ones were handled, not pending
    marker = seed_comment(fake_github, 8, "bot: help")
    post(bot, "issue_comment", encode(marker))
    fake_github.wait_for(lambda: fake_github.reactions(marker["comment"]["id"]) == ["eyes"],
                         timeout=15)
    for payload in (plain, by_bot, quoted):
        assert fake_github.reactions(payload["comment"]["id"]) == []


def test_a_typo_gets_a_reply_with_the_closest_command(
        bot: BotProcess, fake_github: FakeGitHub) -> None:
    payload = seed_comment(fake_github, 9, "bot: biuld")
    post(bot, "issue_comment", encode(payload))
    fake_github.wait_for(lambda: len(fake_github.comments(OWNER, NAME, 9)) == 2, timeout=15)
    reply = fake_github.comments(OWNER, NAME, 9)[-1].body
    assert "bot: biuld" in reply and "bot: build" in reply


def test_crash_in_a_burst_loses_nothing_and_repeats_nothing(
        tmp_path: Path, fake_github: FakeGitHub, github_app_key: tuple[str, str]) -> None:
    """SIGKILL mid-burst; GitHub-like redelivery of unanswered deliveries; each once."""
    port = free_port()
    config = write_config(tmp_path, api_url=fake_github.url, app_id=fake_github.app_id,
                          private_key_pem=github_app_key[0], port=port)
    deliveries = []
    for i in range(120):
        payload = seed_comment(fake_github, 100 + i % 12, f"bot: help\n(request {i})")
        deliveries.append((str(uuid.uuid4()), encode(payload), payload["comment"]["id"]))
    process = BotProcess(config, port).start()
    answered: dict[str, int] = {}

    def send(item: tuple[str, bytes, int]) -> None:
        delivery, body, _ = item
        try:
            answered[delivery] = post(BotProcess(config, port), "issue_comment", body,
                                      delivery=delivery).status_code
        except httpx.HTTPError:
            pass  # the bot died under it: GitHub would mark this delivery failed

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, d) for d in deliveries]
        while sum(f.done() for f in futures) < 60:
            time.sleep(0.005)
        process.kill()
    accepted_before = {d for d, status in answered.items() if status == 202}
    assert 0 < len(accepted_before) < len(deliveries)
    with BotProcess(config, port):
        # GitHub redelivers what failed (the recovery loop asks it to); do it here directly
        for delivery, body, _ in deliveries:
            if answered.get(delivery) not in (200, 202):
                # 200: it was stored before the kill, though its answer never arrived
                assert post(BotProcess(config, port), "issue_comment", body,
                            delivery=delivery).status_code in (200, 202)
        fake_github.wait_for(
            lambda: all(fake_github.reactions(c) == ["eyes"] for _, _, c in deliveries),
            timeout=60)
        def replies() -> int:
            return sum(len(fake_github.comments(OWNER, NAME, 100 + n)) for n in range(12))

        # one help reply per delivery, beside the 120 seeded comments: none lost, none twice
        fake_github.wait_for(lambda: replies() >= 2 * len(deliveries), timeout=60)
        time.sleep(1)  # anything sent twice would arrive now
        assert replies() == 2 * len(deliveries)
        # A reaction whose POST was in flight at the kill may be POSTed again after the
        # restart; GitHub answers a repeated reaction with the existing one (200), and the
        # fake does the same, so the list above holds one `eyes` per comment.
        reaction_posts = fake_github.count("reactions/create-for-issue-comment")
        assert len(deliveries) <= reaction_posts <= len(deliveries) + 8  # 8: sender batch
    db = sqlite3.connect(tmp_path / "layerbot.db")
    statuses = db.execute("SELECT delivery_id, status FROM inbox_events").fetchall()
    assert sorted(d for d, _ in statuses) == sorted(d for d, _, _ in deliveries)
    assert {s for _, s in statuses} == {"handled"}
