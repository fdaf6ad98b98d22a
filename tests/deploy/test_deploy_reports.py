"""What the PRs are told about deployments and ingests, and what is read back from them."""

from __future__ import annotations

from datetime import UTC, datetime

from layerbot.cli.deploy import ingest_comment, state_marker
from layerbot.deploy.approval import verdicts
from layerbot.deploy.ingest import IngestEvent
from layerbot.deploy.metadata import ArtifactMetadata, Payload, Uploader
from layerbot.deploy.service import DeployRow, deploy_comment
from layerbot.deploy.upload import staging_target
from layerbot.handlers.deploy import ingest_outcome

from .conftest import build_info, link_info


def event(state: str = "ingested", reason: str = "", verified: bool = True) -> IngestEvent:
    metadata = ArtifactMetadata(
        uploader=Uploader(username="bot", hostname="h"),
        payload=Payload(filename="a.tar.gz", size=3, ctime=0, sha256sum="c" * 64, url="u"),
        link2pr=link_info(), layerbot=build_info())
    return IngestEvent("m@t", "k/a.tar.gz", state, reason, "software.example.org",  # type: ignore[arg-type]
                       metadata, verified, datetime.now(UTC))


def test_the_ingest_outcome_travels_back_to_the_bot_in_the_app_comment() -> None:
    e = event("rejected", "unsafe tarball: ../etc/passwd --> escapes")
    body = ingest_comment(e) + "\n\n" + state_marker(e)
    assert "⛔ rejected" in body and "unsafe tarball" in body
    outcome = ingest_outcome(body)
    assert outcome is not None
    assert (outcome["key"], outcome["state"], outcome["sha256"]) == ("k/a.tar.gz", "rejected",
                                                                     "c" * 64)
    assert outcome["instance"] == "cluster-a" and "escapes" in outcome["reason"]


def test_unverified_or_pending_outcomes_carry_nothing_for_the_bot() -> None:
    assert state_marker(event(verified=False)) == ""
    assert state_marker(event("pending", "waiting for approval")) == ""
    unverified = ingest_comment(event(verified=False))
    assert "did not verify" in unverified
    assert ingest_outcome("<!-- layerbot-ingest-state:!!! -->") is None
    assert ingest_outcome("<!-- layerbot-ingest-state:e30= -->") is None  # {} lacks fields


def test_approval_verdicts_come_from_people_newest_last() -> None:
    comments = [
        {"user": {"login": "layerbot[bot]", "type": "Bot"}, "body": "bot: approve"},
        {"user": {"login": "ann", "type": "User"}, "body": "Looks good.\nbot: approve"},
        {"user": {"login": "bob", "type": "User"}, "body": "bot: reject   wrong target "},
        {"user": {"login": "cy", "type": "User"}, "body": "bot: rejection letter? no: bot: reject"},
        {"user": {"login": "dee", "type": "User"}, "body": "BOT: Reject"},
    ]
    for n, c in enumerate(comments):  # never edited: GitHub gives both times equal
        c.update(id=n + 1, created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
    found = [(v.approve, v.login, v.reason) for v in verdicts(comments)]
    assert found == [(True, "ann", ""), (False, "bob", "wrong target"),
                     (False, "dee", "no reason given")]


def test_the_deploy_reply_says_where_each_artifact_went_or_why_not() -> None:
    rows = [
        DeployRow(1, "x86_64/amd/zen2", "r", "a.tar.gz", 2048, "uploaded", "s3://b/k", None,
                  False),
        DeployRow(2, "x86_64/amd/zen3", "r", "b.tar.gz", 10, "failed", None,
                  "the S3 credentials were refused | check", True),
        DeployRow(3, "x86_64/amd/zen4", "r", "c.tar.gz", 10, "skipped", "s3://b/c", None, False),
    ]
    text = deploy_comment("cluster-a", rows)
    assert "(2/3 staged)" in text
    assert "✅ uploaded | `s3://b/k`" in text
    assert "❌ failed (forced) | the S3 credentials were refused \\| check" in text
    assert "already in the staging area" in text


def test_staging_target_follows_eessi() -> None:
    assert staging_target("x86_64/amd/zen2", None) == "x86_64/amd/zen2"
    assert staging_target("x86_64/amd/zen3", "nvidia/cc80") == "x86_64/amd/zen3/accel/nvidia/cc80"
