"""Build → `bot:deploy` → S3 staging → `layerbot ingest`: the whole deploy path, for real.

A real `layerbot serve` (local backend, real git origin, fake GitHub) stages into a fresh
bucket of the S3 server that ``scripts/s3.sh`` runs; `layerbot ingest --once` runs as a
subprocess with a tar-extracting ingest command into a directory that stands in for the
CernVM-FS repository. One bot process serves the module; each test uses its own PR.

People of the fake repository: ``alice`` may build (write), ``maint`` may deploy
(maintain), ``boss`` may force a deploy (admin), ``mallory`` may only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from layerbot.deploy.metadata import file_sha256, parse_metadata
from layerbot.deploy.signing import Verifier, allowed_signers_line, generate_keypair
from layerbot.deploy.staging import S3Staging
from tests.deploy.conftest import S3Server, _free_port_block, _require_s3, drop_bucket
from tests.support.botproc import SECRET, BotProcess, free_port, write_config
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    encode,
    issue_comment_created,
    pull_request_event,
)

pytestmark = pytest.mark.s3

OWNER, NAME = DEFAULT_REPO.split("/")
INSTANCE = "test-a"
REPO_TARGET = "eessi-2023.06"
REPOSITORY = "software.eessi.io"
ZEN2 = "for:arch=x86_64/amd/zen2 repo:eessi-2023.06"
APPROVAL_REPO = f"{OWNER}/staging"

FAILING_BUILD = """#!/usr/bin/env bash
# Packs an artifact but reports failure (a test that did not pass, say).
set -euo pipefail
mkdir -p _build/software && echo partial > _build/software/README
tar -C _build -czf partial.tar.gz software
echo '{"status": "failure", "summary": "tests failed",
       "artifacts": [{"path": "partial.tar.gz"}]}' > result.json
"""

BIG_BUILD = """#!/usr/bin/env bash
# A 25 MiB artifact: five 5 MiB parts of a multipart upload.
set -euo pipefail
mkdir -p _build/software && head -c 26214400 /dev/urandom > _build/software/blob
tar -C _build -cf big.tar software
echo '{"status": "success", "summary": "big", "artifacts": [{"path": "big.tar"}]}' > result.json
"""


# ----------------------------------------------------------------------------- environment


class Env:
    def __init__(self, tmp: Path, fake: FakeGitHub, origin: Origin, s3: S3Server,
                 bucket: S3Staging, private_key: str, signers: Path, key: Path) -> None:
        self.tmp = tmp
        self._label_changes = 0
        self.fake = fake
        self.origin = origin
        self.s3 = s3
        self.bucket = bucket
        self.private_key = private_key
        self.signers = signers
        self.key = key
        self.cvmfs = tmp / "cvmfs"
        self.bot: BotProcess | None = None

    # -- configuration

    def config(self, directory: Path, port: int, *, s3: S3Server | None = None,
               secret: str | None = None, deploy: dict[str, Any] | None = None,
               ingest: dict[str, Any] | None = None) -> Path:
        server = s3 or self.s3
        return write_config(directory, api_url=self.fake.url, app_id=DEFAULT_APP_ID,
                            private_key_pem=self.private_key, port=port, instance=INSTANCE,
                            extra={
            "build": {"clone_url": str(self.tmp / "origin" / "{repo}"), "time_limit_minutes": 2},
            "backend": {"poll_seconds": 0.3, "local": {"max_concurrent": 4}},
            "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
                           {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}],
            "repo_targets": [{"id": REPO_TARGET, "name": REPOSITORY, "version": "2023.06"}],
            "reporting": {"min_edit_interval_seconds": 0},
            "deploy": {"staging": "s3", "policy": "latest", "signing_key_file": str(self.key),
                       "s3": {"endpoint_url": server.endpoint, "access_key_id": server.key,
                              "secret_access_key": secret or server.secret,
                              "buckets": {"*": self.bucket.bucket}},
                       **(deploy or {})},
            "ingest": {"allowed_signers_file": str(self.signers),
                       "repositories": {REPO_TARGET: REPOSITORY},
                       "base_dir": f"{self.cvmfs}/{{repository}}",
                       "command": ["sh", "-c", 'mkdir -p "$1" && tar -xf "$2" -C "$1"',
                                   "ingest", "{base_dir}", "{tarball}"],
                       **(ingest or {})},
        })

    def start_bot(self, name: str, **options: Any) -> BotProcess:
        port = free_port()
        return BotProcess(self.config(self.tmp / name, port, **options), port).start()

    # -- GitHub side

    def send(self, event: str, payload: dict[str, Any], bot: BotProcess | None = None) -> None:
        body = encode(payload)
        target = bot or self.bot
        assert target is not None
        response = httpx.post(target.url + "/webhook", content=body,
                              headers=delivery_headers(event, body, SECRET), timeout=10)
        assert response.status_code == 202, response.text

    def comment(self, number: int, body: str, login: str,
                bot: BotProcess | None = None) -> None:
        comment_id = self.fake.add_comment(OWNER, NAME, number, body, login=login)
        self.send("issue_comment", issue_comment_created(body, login, pr_number=number,
                                                         comment_id=comment_id), bot)

    def label(self, number: int, login: str, action: str = "labeled",
              bot: BotProcess | None = None) -> None:
        head = self.fake.pull(OWNER, NAME, number).head_sha
        assert head is not None
        # GitHub stamps each label change with its own time; two changes in one second
        # would look like a replayed body (the event's identity includes updated_at).
        self._label_changes += 1
        stamp = (datetime.now(UTC) + timedelta(seconds=self._label_changes)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        self.send("pull_request", pull_request_event(action, number, head, label="bot:deploy",
                                                     sender=login, updated_at=stamp), bot)

    def pr(self, number: int, **kwargs: Any) -> str:
        sha = self.origin.open_pr(number, **kwargs)
        self.fake.add_pull(OWNER, NAME, number, head_sha=sha)
        return sha

    def replies(self, number: int) -> list[Any]:
        return [c for c in self.fake.comments(OWNER, NAME, number) if c.user == "layerbot[bot]"]

    def reply(self, number: int, text: str, timeout: float = 60) -> Any:
        return self.fake.wait_for(
            lambda: next((c for c in self.replies(number) if text in c.body), None),
            timeout=timeout, message=f"no reply with {text!r} on PR {number}")

    def build(self, number: int, bot: BotProcess | None = None, **pr: Any) -> None:
        self.pr(number, **pr)
        self.comment(number, f"bot: build {ZEN2}", "alice", bot)
        self.reply(number, "1/1 done")

    # -- store and staging

    def rows(self, sql: str, *args: Any, bot: BotProcess | None = None) -> list[sqlite3.Row]:
        target = bot or self.bot
        assert target is not None
        with sqlite3.connect(target.config.parent / "layerbot.db") as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def deployments(self, number: int, bot: BotProcess | None = None) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM deployments WHERE pr = ? ORDER BY id", number, bot=bot)

    def wait_deployed(self, number: int, states: tuple[str, ...] = ("uploaded", "skipped"),
                      bot: BotProcess | None = None, timeout: float = 60) -> list[sqlite3.Row]:
        def settled() -> list[sqlite3.Row] | None:
            rows = self.deployments(number, bot)
            return rows if rows and all(r["state"] in states for r in rows) else None
        return self.fake.wait_for(settled, timeout=timeout, interval=0.2,
                                  message=f"deployments of PR {number} not {states}: "
                                          f"{[dict(r) for r in self.deployments(number, bot)]}")

    def keys(self, prefix: str) -> list[str]:
        return sorted(o.key for o in self.bucket.list_objects(prefix))

    def ingest(self, config: Path) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "layerbot", "ingest", "--config",
                               str(config), "--once"], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def ingest_config(self, name: str, prefix: str, **ingest: Any) -> Path:
        directory = self.tmp / name
        return self.config(directory, free_port(), ingest={
            "prefix": prefix, "state_dir": str(directory / "state"), **ingest})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    s3 = _require_s3()
    tmp = tmp_path_factory.mktemp("deploy-e2e")
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    for login, role in (("alice", "write"), ("maint", "maintain"), ("boss", "admin"),
                        ("mallory", "read")):
        fake.set_permission(OWNER, NAME, login, role)
        fake.set_permission(OWNER, "staging", login, role)
    fake.add_repo(OWNER, "staging")
    fake.start()
    bucket = S3Staging(s3.settings(), f"e2e-{uuid.uuid4().hex[:10]}", state_dir=tmp / "s3state")
    bucket.ensure_bucket()
    pair = generate_keypair(tmp / "keys" / "bot_key", comment="layerbot@test-a")
    signers = tmp / "keys" / "allowed_signers"
    signers.write_text(allowed_signers_line("test-a-bot", pair.public_key(), [INSTANCE]))
    e = Env(tmp, fake, Origin(tmp / "origin", DEFAULT_REPO), s3, bucket, private, signers,
            pair.private)
    e.bot = e.start_bot("bot")
    try:
        yield e
    finally:
        e.bot.stop()
        fake.stop()
        drop_bucket(bucket)
    fake.assert_no_violations()


# ----------------------------------------------------------------------------- the whole path


def test_label_stages_signed_artifacts_and_ingest_puts_them_in_the_repository(env: Env) -> None:
    head = env.pr(1)
    env.comment(1, f"bot: build {ZEN2}", "alice")
    env.reply(1, "1/1 done")
    env.label(1, "maint")
    [row] = env.wait_deployed(1, ("uploaded",))
    prefix = f"{DEFAULT_REPO}/pr-1/{REPO_TARGET}/x86_64/amd/zen2/"
    key = row["key"]
    assert key.startswith(prefix) and key.endswith(".tar.gz")
    assert env.keys(prefix) == sorted([key, key + ".sig", key + ".meta.json",
                                       key + ".meta.json.sig"])
    # The metadata names the PR, the commits and the job; both signatures verify.
    meta_bytes = env.bucket.get_bytes(key + ".meta.json")
    meta = parse_metadata(meta_bytes)
    assert (meta.link2pr.repo, meta.link2pr.pr) == (DEFAULT_REPO, 1)
    assert meta.layerbot is not None and meta.layerbot.head_sha == head
    assert meta.layerbot.base_sha and meta.layerbot.job_id == str(row["job_id"])
    assert (meta.layerbot.instance, meta.layerbot.repo_target) == (INSTANCE, REPO_TARGET)
    downloaded = env.tmp / "downloaded.tar.gz"
    sha = env.bucket.download(key, downloaded)
    assert sha == meta.payload.sha256sum
    verifier = Verifier(env.signers)
    assert verifier.verify_file(downloaded, env.bucket.get_bytes(key + ".sig"), INSTANCE).ok
    assert verifier.verify_bytes(meta_bytes, env.bucket.get_bytes(key + ".meta.json.sig"),
                                 INSTANCE).ok
    # The PR shows the state: in the deploy reply and in the build reply's artifacts.
    env.reply(1, "✅ uploaded")
    env.reply(1, "(uploaded)")
    # Ingestion, as on the repository server.
    proc = env.ingest(env.ingest_config("ingest-1", prefix))
    assert "ingested" in proc.stdout
    assert (env.cvmfs / REPOSITORY / "software" / "bin" / "hello").is_file()
    report = env.reply(1, "**layerbot ingest**")
    assert "✅ ingested" in report.body and REPOSITORY in report.body
    # The App's report comment comes back as a webhook: the deployment becomes ingested.
    # The same text by a person changes nothing.
    forged = env.fake.add_comment(OWNER, NAME, 1, report.body, login="mallory")
    env.send("issue_comment", issue_comment_created(report.body, "mallory", pr_number=1,
                                                    comment_id=forged))
    env.fake.wait_for(lambda: env.rows("SELECT status FROM inbox_events ORDER BY id DESC "
                                       "LIMIT 1")[0]["status"] in ("handled", "ignored"))
    assert env.deployments(1)[0]["state"] == "uploaded"
    env.send("issue_comment", issue_comment_created(report.body, "layerbot[bot]", pr_number=1,
                                                    comment_id=report.id, user_type="Bot"))
    env.reply(1, "📦 ingested")
    assert env.deployments(1)[0]["state"] == "ingested"
    # A second poll changes nothing and posts nothing.
    assert env.ingest(env.ingest_config("ingest-1", prefix)).stdout.strip() == ""
    assert len([c for c in env.replies(1) if "layerbot ingest" in c.body]) == 1


def test_a_repeated_deploy_uploads_nothing_twice(env: Env) -> None:
    env.build(2)
    env.label(2, "maint")
    [first] = env.wait_deployed(2, ("uploaded",))
    head = env.bucket.head(first["key"])
    assert head is not None
    env.label(2, "maint", action="unlabeled")
    env.label(2, "maint")
    env.comment(2, "bot: deploy", "maint")
    nothing = env.reply(2, "nothing new to deploy")
    assert "Already deployed" in nothing.body and "uploaded" in nothing.body
    time.sleep(1)  # give a wrongly queued upload the time to show up
    assert [dict(r) for r in env.deployments(2)] == [dict(first)]
    again = env.bucket.head(first["key"])
    assert again is not None and again["LastModified"] == head["LastModified"]
    assert len([c for c in env.replies(2) if "deployment of this PR" in c.body]) == 1


def test_someone_not_allowed_to_deploy_is_refused(env: Env) -> None:
    env.build(3)
    env.label(3, "alice")
    refusal = env.reply(3, "not allowed")
    assert "alice" in refusal.body and "maintain" in refusal.body
    env.comment(3, "bot: deploy", "alice")  # may send commands and build, not deploy
    env.fake.wait_for(lambda: sum("may deploy" in c.body for c in env.replies(3)) == 2,
                      timeout=30)
    env.label(3, "mallory")
    env.fake.wait_for(lambda: sum("may deploy" in c.body for c in env.replies(3)) == 3,
                      timeout=30)
    assert env.deployments(3) == []
    assert env.keys(f"{DEFAULT_REPO}/pr-3/") == []


def test_an_artifact_of_an_older_commit_is_never_deployed(env: Env) -> None:
    env.build(4)
    new = env.origin.push_pr(4, {"NEWS": "more\n"})
    env.fake.update_pull(OWNER, NAME, 4, head_sha=new)
    env.label(4, "maint")
    reply = env.reply(4, "nothing new to deploy")
    assert "an older commit" in reply.body and new[:12] in reply.body
    assert env.deployments(4) == []
    assert env.keys(f"{DEFAULT_REPO}/pr-4/") == []


def test_dry_run_lists_what_would_go_and_changes_nothing(env: Env) -> None:
    env.build(5)
    env.comment(5, "bot: deploy dry-run", "maint")
    reply = env.reply(5, "would deploy")
    assert "hello-1.0-" in reply.body and "nothing was recorded" in reply.body
    time.sleep(1)
    assert env.deployments(5) == []
    assert env.keys(f"{DEFAULT_REPO}/pr-5/") == []


def test_force_ships_a_failed_jobs_artifact_for_an_admin_only(env: Env) -> None:
    env.build(6, files={"bot/build.sh": FAILING_BUILD})
    [job] = env.rows("SELECT id, state FROM jobs WHERE pr = 6")
    assert job["state"] == "failed"
    env.label(6, "maint")
    assert "force job:" in env.reply(6, "nothing new to deploy").body
    env.comment(6, f"bot: deploy force job:{job['id']}", "maint")
    assert "force a deploy" in env.reply(6, "not allowed").body
    assert env.deployments(6) == []
    env.comment(6, f"bot: deploy force job:{job['id']}", "boss")
    [row] = env.wait_deployed(6, ("uploaded",))
    assert row["forced"] and row["requested_by"] == "boss"
    assert row["key"].endswith("/partial.tar.gz")
    env.reply(6, "(forced)")


def test_ingest_waits_for_a_maintainers_approval_on_github(env: Env) -> None:
    env.build(7)
    env.label(7, "maint")
    env.wait_deployed(7, ("uploaded",))
    config = env.ingest_config("ingest-7", f"{DEFAULT_REPO}/pr-7/", approval="github",
                               approval_repo=APPROVAL_REPO)
    assert "pending" in env.ingest(config).stdout
    [request] = env.fake.pulls(OWNER, "staging")
    assert "Ingest hello-1.0-" in request.title and "bot: approve" in (request.body or "")
    # The request carries what ingestion verified, for the reviewer.
    branch_head = env.fake.ref(OWNER, "staging", f"refs/heads/{request.head_ref}")
    files = env.fake.repos[f"{OWNER}/staging"].commits[branch_head].files
    [document] = [json.loads(data) for path, data in files.items() if path.startswith("ingest/")]
    assert document["signer"] == "test-a-bot" and document["repository"] == REPOSITORY
    waiting = env.reply(7, "**layerbot ingest**")
    assert "waiting for approval" in waiting.body
    # Someone who may not deploy cannot approve; a maintainer can.
    env.fake.add_comment(OWNER, "staging", request.number, "bot: approve", login="mallory")
    assert env.ingest(config).stdout.strip() == ""  # still pending: nothing changed
    # An edited comment never decides: mallory rewrites the maintainer's rejection.
    rejection = env.fake.add_comment(OWNER, "staging", request.number, "bot: reject wait",
                                     login="maint")
    env.fake.edit_comment(rejection, "bot: approve")
    assert env.ingest(config).stdout.strip() == ""  # still pending
    approval = "Looks fine.\nbot: approve"
    approval_id = env.fake.add_comment(OWNER, "staging", request.number, approval,
                                       login="maint")
    assert "ingested" in env.ingest(config).stdout
    # What decided is recorded: the comment and the hash of its body as it was read.
    with sqlite3.connect(env.tmp / "ingest-7" / "state" / "approvals.sqlite") as db:
        recorded = db.execute("SELECT comment_id, body_sha256, login, approve "
                              "FROM verdicts").fetchall()
    assert recorded == [(approval_id, hashlib.sha256(approval.encode()).hexdigest(), "maint", 1)]
    reports = [c for c in env.replies(7) if "layerbot ingest" in c.body]
    assert len(reports) == 1 and "✅ ingested" in reports[0].body  # one comment, edited
    assert len(env.fake.pulls(OWNER, "staging")) == 1  # one approval request per artifact


# ----------------------------------------------------------------------------- failures


def test_ingest_refuses_a_tampered_and_an_unsigned_artifact_and_says_why(env: Env) -> None:
    for number in (8, 9):
        env.build(number)
        env.label(number, "maint")
    [tampered] = env.wait_deployed(8, ("uploaded",))
    [unsigned] = env.wait_deployed(9, ("uploaded",))
    env.bucket.put_bytes(tampered["key"], b"not the tarball that was signed")
    env.bucket.delete(unsigned["key"] + ".sig")
    env.bucket.delete(unsigned["key"] + ".meta.json.sig")
    before = sorted(p.name for p in env.cvmfs.rglob("*"))
    for number in (8, 9):
        proc = env.ingest(env.ingest_config(f"ingest-{number}", f"{DEFAULT_REPO}/pr-{number}/"))
        assert "rejected" in proc.stdout
    assert sorted(p.name for p in env.cvmfs.rglob("*")) == before  # nothing got in
    report = env.reply(8, "**layerbot ingest**")
    assert "⛔ rejected" in report.body and "checksum mismatch" in report.body
    env.send("issue_comment", issue_comment_created(report.body, "layerbot[bot]", pr_number=8,
                                                    comment_id=report.id, user_type="Bot"))
    env.reply(8, "⛔ rejected | checksum mismatch")
    unsigned_report = env.reply(9, "**layerbot ingest**")
    assert "no valid signature" in unsigned_report.body
    assert "did not verify" in unsigned_report.body  # its PR is only a claim


def test_wrong_s3_credentials_give_a_clear_message_on_the_pr(env: Env) -> None:
    bot = env.start_bot("bot-wrong-key", secret="not-the-secret-0123456789")
    try:
        env.pr(20)
        env.comment(20, f"bot: build {ZEN2}", "alice", bot)
        env.reply(20, "1/1 done")
        env.label(20, "maint", bot=bot)
        [row] = env.wait_deployed(20, ("failed",), bot=bot)
        assert "credentials were refused" in row["error"]
        reply = env.reply(20, "❌ failed")
        assert "deploy.s3.secret_access_key" in reply.body
    finally:
        bot.stop()


class ThrottledProxy:
    """TCP forwarding to the S3 server at a limited rate, counting the bytes sent upstream:
    slow enough to kill the server in the middle of an upload, and a witness of what was
    sent twice."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream = upstream_port
        self.rate = rate
        self.sent = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while chunk := src.recv(64 * 1024):
                if count:
                    with self.lock:
                        self.sent += len(chunk)
                    time.sleep(len(chunk) / self.rate)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_an_upload_cut_by_a_dead_s3_server_resumes_once_it_is_back(env: Env) -> None:
    base = env.tmp / "s3-private"
    port = _free_port_block()
    S3Server(f"http://127.0.0.1:{port}", "", "", base, port).start()
    creds = dict(line.removeprefix("export ").split("=", 1)
                 for line in (base / "env").read_text().splitlines() if "=" in line)
    server = S3Server(f"http://127.0.0.1:{port}", creds["LAYERBOT_TEST_S3_KEY"],
                      creds["LAYERBOT_TEST_S3_SECRET"], base, port)
    proxy = ThrottledProxy(port, rate=4 * 1024 * 1024)
    via_proxy = S3Server(f"http://127.0.0.1:{proxy.port}", server.key, server.secret)
    S3Staging(server.settings(), env.bucket.bucket, state_dir=env.tmp / "s3p").ensure_bucket()
    bot = env.start_bot("bot-resume", s3=via_proxy, deploy={
        "multipart_threshold_bytes": 5 * 1024 * 1024, "part_size_bytes": 5 * 1024 * 1024,
        "upload_concurrency": 1, "upload_retry_attempts": 2,
        "upload_retry_deadline_seconds": 2})
    try:
        env.pr(21, files={"bot/build.sh": BIG_BUILD})
        env.comment(21, f"bot: build {ZEN2}", "alice", bot)
        env.reply(21, "1/1 done", timeout=90)
        env.label(21, "maint", bot=bot)
        state_dir = bot.config.parent / "data" / "uploads"

        def parts_done() -> int:
            files = list(state_dir.glob("upload-*.json"))
            return len(json.loads(files[0].read_text())["parts"]) if files else 0

        env.fake.wait_for(lambda: parts_done() >= 2, timeout=60, interval=0.05)
        server.stop()  # SIGKILL, mid-upload
        [row] = env.wait_deployed(21, ("queued",), bot=bot, timeout=60)
        assert "will retry" in row["error"]
        server.start()
        [row] = env.wait_deployed(21, ("uploaded",), bot=bot, timeout=90)
        [artifact] = env.rows("SELECT * FROM artifacts WHERE id = ?", row["artifact_id"],
                              bot=bot)
        size = artifact["size"]
        # Resumed, not restarted: at most the part in flight went twice.
        assert proxy.sent < size + 5 * 1024 * 1024 + 1024 * 1024, (proxy.sent, size)
        stored = S3Staging(server.settings(), env.bucket.bucket, state_dir=env.tmp / "s3p")
        assert stored.download(row["key"], env.tmp / "big.tar") == artifact["sha256"]
        assert file_sha256(Path(artifact["path"])) == artifact["sha256"]
    finally:
        bot.stop()
        proxy.close()
        server.stop()
