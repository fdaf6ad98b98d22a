"""The invariants of a soak, checked once it has settled, from what each part holds: the
fake GitHub (comments, check runs), the backends' own records (Slurm's accounting, the local
executor's), S3, the ingest server's state and the repository directory, the store, and the
job scripts' own log of what ran.

Each check returns violations; a violation names the PR it is about (when it is about one),
so that the report can print the minimal history that led to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text
from tests.support.e2e import BOT_LOGIN
from tests.support.fleet import NAME, OWNER
from tests.support.soak.activity import Activity
from tests.support.soak.history import History
from tests.support.soak.system import BUCKET, INSTANCE, System

from layerbot.backends import make_backend
from layerbot.backends.base import BackendState
from layerbot.config import load
from layerbot.core.jobs import JobState
from layerbot.deploy.signing import Verifier
from layerbot.deploy.staging import S3Staging

#: Backend records a job of each final state may have (a cancel can race the job's end;
#: a job that never reached the backend has no record).
_COMPATIBLE: dict[str, set[BackendState]] = {
    JobState.SUCCEEDED: {BackendState.COMPLETED},
    JobState.FAILED: {BackendState.COMPLETED, BackendState.FAILED, BackendState.OUT_OF_MEMORY,
                      BackendState.NODE_FAIL, BackendState.CANCELLED, BackendState.TIMEOUT,
                      BackendState.UNKNOWN},
    JobState.CANCELLED: {BackendState.CANCELLED, BackendState.COMPLETED, BackendState.FAILED,
                         BackendState.UNKNOWN},
    JobState.TIMED_OUT: {BackendState.TIMEOUT, BackendState.CANCELLED, BackendState.FAILED},
    JobState.LOST: set(BackendState),
}
_STILL_RUNNING = {BackendState.PENDING, BackendState.RUNNING}


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    pr: int | None = None
    #: Seconds into the soak when what it is about happened, if known.
    at: float | None = None


class Checker:
    """Reads every part once, then checks each invariant."""

    def __init__(self, system: System, activity: Activity, history: History) -> None:
        self.system = system
        self.activity = activity
        self.history = history
        engine = create_engine(system.postgres.url)
        try:
            with engine.connect() as conn:
                self.jobs = rows(conn, "SELECT * FROM jobs ORDER BY id")
                self.builds = rows(conn, "SELECT * FROM builds ORDER BY id")
                self.objects = rows(conn, "SELECT * FROM github_objects")
                self.outbox = rows(conn, "SELECT id, kind, status, error, coalesce_key, "
                                         "created_at FROM outbox")
                self.inbox = rows(conn, "SELECT delivery_id, status, error FROM inbox_events")
                self.deployments = rows(conn, "SELECT * FROM deployments ORDER BY id")
        finally:
            engine.dispose()
        fake = system.fleet.fake
        self.comments = [c for n in activity.pulls for c in fake.comments(OWNER, NAME, n)]
        self.check_runs = fake.check_runs(OWNER, NAME)

    def all(self) -> list[Violation]:
        checks: list[Callable[[], Iterable[Violation]]] = [
            self.commands_answered_once, self.jobs_final_and_true_to_backend,
            self.targets_built_once, self.nothing_duplicated_on_github,
            self.artifacts_uploaded_once, self.ingested_was_approved,
            self.no_secret_reported, self.nothing_pending, self.lost_deliveries_recovered]
        out: list[Violation] = []
        for check in checks:
            try:
                out.extend(check())
            except Exception as exc:  # a check that breaks is a finding too
                out.append(Violation(check.__name__, f"the check itself failed: {exc!r}"))
        return out

    # --- commands ------------------------------------------------------------------------

    def replies_of(self, delivery: str) -> list[int]:
        """GitHub ids of the replies to the commands of one delivery."""
        keys = {o["key"].removeprefix("comment:"): o["github_id"] for o in self.objects
                if o["kind"] == "comment"}
        found = [gid for key, gid in keys.items() if f":{delivery}:" in key]
        found += [keys[f"build:{b['id']}"] for b in self.builds
                  if b["delivery_id"] == delivery and f"build:{b['id']}" in keys]
        return found

    def commands_answered_once(self) -> Iterable[Violation]:
        for command in self.activity.commands:
            got = len(self.replies_of(command.delivery))
            if got != command.replies:
                yield Violation("every command answered exactly once",
                                f"{command.body!r} by {command.login} (delivery "
                                f"{command.delivery}): {got} replies, {command.replies} "
                                "expected", command.pr, command.at)

    def first_reply_seconds(self) -> list[float]:
        """Command sent → its first reply on the PR, for the figures."""
        created = {c.id: c.created_at for c in self.comments}
        out = []
        for command in self.activity.commands:
            times = [created[i] for i in self.replies_of(command.delivery) if i in created]
            if times:
                out.append((min(times) - command.sent_at).total_seconds())
        return out

    # --- jobs ----------------------------------------------------------------------------

    def backend_records(self) -> dict[int, BackendState]:
        by_agent: dict[str, list[Any]] = defaultdict(list)
        for job in self.jobs:
            if job["backend_id"] and job["agent"] in self.system.fleet.agents:
                by_agent[job["agent"]].append(job)
        out: dict[int, BackendState] = {}
        for name, jobs in by_agent.items():
            config = load(self.system.fleet.agents[name].config)
            backend = make_backend(config)
            ids = [j["backend_id"] for j in jobs]
            statuses = asyncio.run(backend.poll(ids))
            for job in jobs:
                status = statuses.get(job["backend_id"])
                out[job["id"]] = status.state if status else BackendState.UNKNOWN
        return out

    def jobs_final_and_true_to_backend(self) -> Iterable[Violation]:
        records = self.backend_records()
        for job in self.jobs:
            state = JobState(job["state"])
            what = f"job {job['id']} ({job['target']}, {job['agent']}, {job['backend_id']})"
            if not state.terminal:
                yield Violation("every job in a final state", f"{what} is {state}", job["pr"])
                continue
            record = records.get(job["id"])
            if record is None:
                continue  # never reached a backend (cancelled or reused before it)
            if record in _STILL_RUNNING or record not in _COMPATIBLE[state]:
                yield Violation("every job true to its backend",
                                f"{what} is {state} but its backend says {record}", job["pr"])

    def targets_built_once(self) -> Iterable[Violation]:
        per_target = Counter((j["build_id"], j["target"], j["repo_target"], j["step_id"])
                             for j in self.jobs if j["redo_of"] is None)
        pr_of = {b["id"]: b["pr"] for b in self.builds}
        for (build, target, repo_target, step), count in per_target.items():
            if count > 1:
                yield Violation("every target built once per fleet",
                                f"build {build}: {count} jobs for {target} {repo_target} "
                                f"{step or ''}".rstrip(), pr_of.get(build))
        dirs = {j["job_dir"]: j for j in self.jobs if j["job_dir"]}
        starts = Counter(line.split()[1] for line in self.system.fleet.runs()
                         if line.startswith("start "))
        for job_dir, count in starts.items():
            if count > 1:
                job = dirs.get(job_dir)
                yield Violation("nothing runs twice", f"{job_dir} ran {count} times",
                                job["pr"] if job else None)

    # --- GitHub ------------------------------------------------------------------------------

    def nothing_duplicated_on_github(self) -> Iterable[Violation]:
        known = Counter((o["kind"], o["github_id"]) for o in self.objects)
        # The ingest server's reports: one comment per artifact, known by its marker.
        ingest = re.compile(r"<!-- layerbot:ingest:([^ ]+) -->")
        ingest_reports: Counter[tuple[int, str]] = Counter()
        for comment in self.comments:
            if comment.user != BOT_LOGIN:
                continue
            if match := ingest.search(comment.body):
                ingest_reports[(comment.issue_number, match.group(1))] += 1
                continue
            if ("comment", comment.id) not in known:
                yield Violation("no comment duplicated",
                                f"bot comment {comment.id} is no reply the bot knows of "
                                f"(a duplicate): {comment.body[:160]!r}", comment.issue_number)
        for (number, artifact), count in ingest_reports.items():
            if count > 1:
                yield Violation("no comment duplicated",
                                f"{count} ingest reports of {artifact}", number)
        for run in self.check_runs:
            if ("check_run", run.id) not in known:
                yield Violation("no check run duplicated",
                                f"check run {run.id} ({run.name}, {run.head_sha[:8]}) is none "
                                "the bot knows of (a duplicate)")

    def artifacts_uploaded_once(self) -> Iterable[Violation]:
        """Per artifact (a rebuild's new artifact may be staged under the same key)."""
        artifact_of = {d["id"]: d["artifact_id"] for d in self.deployments}
        uploaded: Counter[int] = Counter()
        keys: dict[int, str] = {}
        for agent in self.system.fleet.agents.values():
            for line in agent.log().splitlines():
                if '"artifact uploaded"' in line:
                    try:
                        record = json.loads(line)
                        artifact = artifact_of[int(record["deployment_id"])]
                    except (ValueError, KeyError):
                        continue
                    uploaded[artifact] += 1
                    keys[artifact] = str(record.get("key"))
        for artifact, count in uploaded.items():
            if count > 1:
                key = keys[artifact]
                yield Violation("no artifact uploaded twice",
                                f"artifact {artifact} ({key}) uploaded {count} times",
                                pr_of_key(key))

    def ingested_was_approved(self) -> Iterable[Violation]:
        state = self.system.root / "ingest-state" / "ingest.sqlite"
        if not state.exists():
            return
        with sqlite3.connect(state) as db:
            db.row_factory = sqlite3.Row
            ingested = db.execute("SELECT * FROM items WHERE state = 'ingested'").fetchall()
        approved = self._approved_heads()
        verifier = Verifier(self.system.signers)
        staging = S3Staging(self.system.s3.settings(), BUCKET,
                            state_dir=self.system.root / "s3-check")
        for item in ingested:
            meta = json.loads(item["metadata"])
            info = meta.get("layerbot") or {}
            pr = (meta.get("link2pr") or {}).get("pr")
            head = info.get("head_sha", "")
            meta_bytes = staging.get_bytes(item["meta_key"])
            if not verifier.verify_bytes(meta_bytes, staging.get_bytes(item["meta_key"] + ".sig"),
                                         INSTANCE).ok:
                yield Violation("ingested only what was signed",
                                f"{item['key']}: its metadata's signature does not verify", pr)
            if head[:8] not in approved.get(pr, set()):
                yield Violation("ingested only what was approved at the PR's head",
                                f"{item['key']}: head {head[:8]} of PR {pr} was not the head "
                                f"when a maintainer approved (heads approved: "
                                f"{sorted(approved.get(pr, set()))})", pr)

    def _approved_heads(self) -> dict[int | None, set[str]]:
        out: dict[int | None, set[str]] = defaultdict(set)
        for entry in self.history.entries:
            if entry.name == "deploy label" and entry.detail.get("login") == "maint":
                out[entry.pr].add(str(entry.detail["head"]))
        return out

    def no_secret_reported(self) -> Iterable[Violation]:
        texts: list[tuple[int | None, str]] = []
        for comment in self.comments:
            texts += [(comment.issue_number, b) for b in [comment.body, *comment.history]]
        for run in self.check_runs:
            texts.append((None, json.dumps(run.output or {})))
        for secret in self.system.secrets:
            for pr, body in texts:
                if secret and secret in body:
                    yield Violation("no secret in any report",
                                    f"a secret ({secret[:4]}…) appears in a report", pr)

    # --- the store ----------------------------------------------------------------------------

    def nothing_pending(self) -> Iterable[Violation]:
        for message in self.outbox:
            if message["status"] != "sent":
                yield Violation("the outbox drains",
                                f"outbox {message['id']} ({message['kind']} "
                                f"{message['coalesce_key']}) is {message['status']}: "
                                f"{message['error']}")
        for event in self.inbox:
            if event["status"] not in ("handled", "ignored"):
                yield Violation("every delivery handled",
                                f"delivery {event['delivery_id']} is {event['status']}: "
                                f"{event['error']}")

    def lost_deliveries_recovered(self) -> Iterable[Violation]:
        stored = {e["delivery_id"] for e in self.inbox}
        for guid, kept in self.activity.kept.items():
            if not kept.delivered and guid not in stored:
                yield Violation("lost deliveries recovered",
                                f"delivery {guid} ({kept.event}) never reached the bot")


def rows(conn: Any, sql: str) -> list[Any]:
    return list(conn.execute(text(sql)).mappings())


def pr_of_key(key: str) -> int | None:
    match = re.search(r"/pr-(\d+)/", key)
    return int(match.group(1)) if match else None
