"""The ingestor: each poll, take the staged artifacts not settled yet through verification,
approval and the ingest command, in staging order, one at a time per repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import inspect
import json
import shutil
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from layerbot.deploy.binding import key_problem, rollback_problem, sequence_scope
from layerbot.deploy.ingest.command import (
    _OUTPUT_TAIL_LINES,
    DEFAULT_COMMAND,
    _check_template,
    command_values,
    run_command,
)
from layerbot.deploy.ingest.errors import IngestError, _Refused
from layerbot.deploy.ingest.events import EventCallback, IngestEvent
from layerbot.deploy.ingest.policy import Approval, ApprovalPolicy, Decision, IngestItem
from layerbot.deploy.ingest.store import OutcomeStore, Record
from layerbot.deploy.metadata import ArtifactMetadata, MetadataError, parse_metadata
from layerbot.deploy.signing import Verifier
from layerbot.deploy.staging.errors import ObjectNotFound, StagingError
from layerbot.deploy.staging.protocol import PendingArtifact, Staging
from layerbot.deploy.tarsafety import inspect_tarball

#: The package's name, which the ingest log lines have always carried.
log = structlog.get_logger("layerbot.deploy.ingest")

_FINAL = ("ingested", "rejected", "failed", "duplicate")


@dataclass
class _Candidate:
    pending: PendingArtifact
    record: Record
    metadata: ArtifactMetadata | None = None
    meta_bytes: bytes = b""


class Ingestor:
    """Takes artifacts from a staging area into repositories.

    ``repositories`` maps a repository target id (metadata ``layerbot.repo_target``) to the
    repository name given to the command; unmapped ids are used as they are, and metadata
    without a target (EESSI's) goes to ``default_repository``. ``namespaces`` are the
    signature namespaces accepted (the uploading instances' names); None accepts the
    instance the metadata names, as pinned by ``namespaces=`` in allowed_signers.
    """

    def __init__(
        self,
        staging: Staging,
        allowed_signers_file: Path,
        approval: ApprovalPolicy,
        command_template: Sequence[str] = DEFAULT_COMMAND,
        state_dir: Path = Path("/var/lib/layerbot/ingest"),
        *,
        prefix: str = "",
        repositories: Mapping[str, str] | None = None,
        default_repository: str | None = None,
        base_dir_template: str = "/",
        namespaces: Collection[str] | None = None,
        allowed_link_prefixes: Sequence[str] = (),
        on_event: EventCallback | None = None,
        command_timeout: float = 6 * 3600,
        missing_artifact_grace_seconds: float = 3600,
        force_sha256: Collection[str] = (),
    ) -> None:
        if not command_template:
            raise IngestError("the ingest command is empty")
        for template in [*command_template, base_dir_template]:
            _check_template(template)
        self.staging = staging
        self.verifier = Verifier(allowed_signers_file)
        self.approval = approval
        self.command = list(command_template)
        self.state_dir = state_dir
        self.prefix = prefix
        self.repositories = dict(repositories or {})
        self.default_repository = default_repository
        self.base_dir_template = base_dir_template
        self.namespaces = None if namespaces is None else frozenset(namespaces)
        self.allowed_link_prefixes = tuple(allowed_link_prefixes)
        self.on_event = on_event
        self.command_timeout = command_timeout
        self.missing_grace = missing_artifact_grace_seconds
        #: An admin's explicit ``--force``: these may be ingested although ingested before.
        self.force_sha256 = frozenset(s.lower() for s in force_sha256)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = OutcomeStore(state_dir / "ingest.sqlite")
        self.work_dir = state_dir / "work"
        self.log_dir = state_dir / "logs"

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- public entry points

    async def run_once(self) -> list[Record]:
        """One poll; returns the records that changed state in it."""
        with self._exclusive():
            changed = self._recover_interrupted()
            await self._report_unreported()
            candidates = await self._candidates()
            groups: dict[str, list[_Candidate]] = {}
            for cand in candidates:
                record = await self._prepare(cand)
                if record is not None:
                    changed.append(record)
                    continue
                groups.setdefault(cand.record.repository or "", []).append(cand)
            # Repositories proceed side by side; within one, artifacts go one at a time.
            results = await asyncio.gather(
                *(self._run_group(g) for g in groups.values()), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            for result in results:
                if not isinstance(result, BaseException):
                    changed.extend(result)
            if errors:
                raise errors[0]
            return changed

    async def run_forever(self, interval: float = 60.0, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.run_once()
            except (StagingError, OSError, sqlite3.Error) as exc:
                # The staging area or disk may come back; the next poll tries again.
                log.error("ingest.poll_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def outcomes(self) -> list[Record]:
        return self.store.records()

    def forget(self, key: str) -> int:
        return self.store.forget(key)

    def force(self, sha256: str) -> int:
        """Let ``sha256`` be ingested again on this ingestor's polls (an admin's decision);
        artifacts already refused as its duplicates are looked at again."""
        self.force_sha256 = self.force_sha256 | {sha256.lower()}
        return self.store.unsettle_duplicates(sha256.lower())

    # -------------------------------------------------------------- bookkeeping

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One ingestor per state directory: two would run commands side by side."""
        with (self.state_dir / "ingest.lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IngestError(
                    f"another ingest process is using {self.state_dir}; run only one"
                ) from None
            yield

    def _recover_interrupted(self) -> list[Record]:
        changed = []
        for record in self.store.records("state = 'ingesting'"):
            record.state = "failed"
            record.reason = (
                "interrupted while the ingest command ran (the ingest process stopped); "
                "check the repository, then forget the artifact to retry"
            )
            self.store.save(record)
            changed.append(record)
        return changed

    async def _report_unreported(self) -> None:
        for record in self.store.records("reported_state IS NOT state AND state != 'ingesting'"):
            await self._emit(record)

    async def _emit(self, record: Record) -> None:
        if record.state not in (*_FINAL, "pending"):
            return
        if self.on_event is not None:
            event = IngestEvent(
                item_id=record.id,
                key=record.key,
                state=record.state,  # type: ignore[arg-type]
                reason=record.reason,
                repository=record.repository,
                metadata=record.parsed_metadata,
                metadata_verified=bool(record.metadata_verified),
                at=datetime.now(UTC),
            )
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a reporter's failure must not stop ingestion
                log.warning("ingest.report_failed", item=record.id, error=str(exc))
                return
        record.reported_state = record.state
        self.store.save(record)

    def _settle(self, record: Record, state: str, reason: str = "") -> Record:
        record.state = state
        record.reason = reason
        self.store.save(record)
        log.info("ingest.outcome", item=record.id, state=state, reason=reason)
        return record

    # -------------------------------------------------------------- finding work

    async def _candidates(self) -> list[_Candidate]:
        listed = await asyncio.to_thread(self.staging.list_pending, self.prefix)
        out = []
        for pending in listed:
            item_id = f"{pending.meta_key}@{pending.staged_at.isoformat()}"
            record = self.store.get(item_id)
            if record is not None and record.state in _FINAL:
                continue
            if record is None:
                record = Record(
                    id=item_id,
                    key=pending.key,
                    meta_key=pending.meta_key,
                    state="new",
                    staged_at=pending.staged_at.isoformat(),
                )
            out.append(_Candidate(pending, record))
        return out

    async def _prepare(self, cand: _Candidate) -> Record | None:
        """Read and trust the metadata; a Record when the candidate is settled here."""
        try:
            await self._read_metadata(cand)
        except _Refused as exc:
            return await self._finish(cand, "rejected", str(exc))
        except ObjectNotFound:
            return None  # deleted since the listing: nothing to do
        return None

    async def _read_metadata(self, cand: _Candidate) -> None:
        p = cand.pending
        cand.meta_bytes = await asyncio.to_thread(self.staging.get_bytes, p.meta_key)
        try:
            metadata = parse_metadata(cand.meta_bytes, p.meta_key)
        except MetadataError as exc:
            raise _Refused(f"unreadable metadata: {exc}") from None
        cand.record.metadata = cand.meta_bytes.decode()
        cand.record.sha256 = metadata.payload.sha256sum
        cand.record.repository = self._repository(metadata)
        if not p.has_meta_sig:
            raise _Refused(
                f"no valid signature by an allowed signer: {p.meta_sig_key} is missing "
                "(was the artifact staged without deploy.signing_key_file?)"
            )
        meta_sig = await asyncio.to_thread(self.staging.get_bytes, p.meta_sig_key)
        await self._verify(cand.meta_bytes, None, meta_sig, metadata, "the metadata")
        cand.record.metadata_verified = 1
        # Only now is the metadata trusted, and with it the key it was signed for.
        if problem := key_problem(p.key, metadata):
            raise _Refused(problem)
        cand.metadata = metadata

    def _repository(self, metadata: ArtifactMetadata) -> str:
        info = metadata.layerbot
        if info is not None:
            return self.repositories.get(info.repo_target, info.repo_target)
        if self.default_repository:
            return self.default_repository
        raise _Refused("the metadata names no repository target and no default is configured")

    def _namespaces(self, metadata: ArtifactMetadata) -> list[str]:
        instance = metadata.layerbot.instance if metadata.layerbot else None
        if instance is not None:
            if self.namespaces is not None and instance not in self.namespaces:
                raise _Refused(
                    f"no valid signature by an allowed signer: instance '{instance}' is "
                    f"not an accepted namespace ({sorted(self.namespaces)})"
                )
            return [instance]
        if not self.namespaces:
            raise _Refused("the metadata names no instance and no namespaces are configured")
        return sorted(self.namespaces)

    async def _verify(
        self,
        data: bytes | None,
        path: Path | None,
        signature: bytes,
        metadata: ArtifactMetadata,
        what: str,
    ) -> str:
        """The signer's principal, or ``_Refused``."""
        last = ""
        for namespace in self._namespaces(metadata):
            if path is not None:
                result = await asyncio.to_thread(
                    self.verifier.verify_file, path, signature, namespace
                )
            else:
                assert data is not None
                result = await asyncio.to_thread(
                    self.verifier.verify_bytes, data, signature, namespace
                )
            if result.ok and result.principal:
                return result.principal
            last = result.message
        raise _Refused(f"no valid signature by an allowed signer on {what}: {last}")

    # -------------------------------------------------------------- per repository

    async def _run_group(self, group: list[_Candidate]) -> list[Record]:
        """In staging order; a pending artifact holds back the later ones, so a repository
        never receives artifacts out of order."""
        changed = []
        for cand in group:
            record, blocking = await self._process(cand)
            if record is not None:
                changed.append(record)
            if blocking:
                break
        return changed

    async def _process(self, cand: _Candidate) -> tuple[Record | None, bool]:
        """(changed record or None, whether later artifacts must wait)."""
        assert cand.metadata is not None
        try:
            if duplicate := self._duplicate(cand.metadata):
                return await self._finish(cand, "duplicate", duplicate), False
            self._check_order(cand.metadata)
            try:
                item = await self._verified_item(cand)
            except ObjectNotFound:
                item = None  # deleted since the listing
            if item is None:
                return None, True  # the artifact is not there (yet)
            decision = await self._decide(item)
        except _Refused as exc:
            return await self._finish(cand, "rejected", str(exc)), False
        if decision.state is Approval.PENDING:
            return await self._hold(cand, decision.reason), True
        cand.record.decided_by = decision.by
        if decision.state is Approval.REJECTED:
            return await self._finish(cand, "rejected", f"not approved: {decision.reason}"), False
        return await self._ingest(cand, item), False

    def _duplicate(self, metadata: ArtifactMetadata) -> str | None:
        sha256 = metadata.payload.sha256sum
        if sha256 in self.force_sha256:
            return None
        previous = self.store.ingested_before(sha256)
        if previous is None:
            return None
        return (f"already ingested (as {previous.id} on {previous.updated_at}); an admin "
                f"can ingest it again with: layerbot ingest --force {sha256}")

    def _check_order(self, metadata: ArtifactMetadata) -> None:
        scope = sequence_scope(metadata)
        if scope is None:
            return
        newest = self.store.newest_sequence(scope.instance, scope.repo_target, scope.target)
        if problem := rollback_problem(metadata, newest):
            raise _Refused(problem)

    async def _decide(self, item: IngestItem) -> Decision:
        try:
            return await self.approval.decide(item)
        except Exception as exc:  # e.g. GitHub unreachable: ask again next poll
            log.warning("ingest.approval_failed", item=item.id, error=str(exc))
            return Decision.pending(f"waiting for approval (could not ask: {exc})")

    async def _hold(self, cand: _Candidate, reason: str) -> Record | None:
        first = cand.record.state != "pending"
        cand.record.state = "pending"
        cand.record.reason = reason
        self.store.save(cand.record)
        if first:
            await self._emit(cand.record)
            return cand.record
        return None

    async def _finish(self, cand: _Candidate, state: str, reason: str) -> Record:
        record = self._settle(cand.record, state, reason)
        shutil.rmtree(self._work(cand.record.id), ignore_errors=True)
        await self._emit(record)
        return record

    def _work(self, item_id: str) -> Path:
        return self.work_dir / hashlib.sha256(item_id.encode()).hexdigest()[:24]

    async def _verified_item(self, cand: _Candidate) -> IngestItem | None:
        p, metadata = cand.pending, cand.metadata
        assert metadata is not None
        if not p.has_artifact:
            age = (datetime.now(UTC) - p.staged_at).total_seconds()
            if age > self.missing_grace:
                raise _Refused(f"the artifact {p.key} is missing from the staging area")
            return None
        tarball = await self._download(cand)
        checks = tarball.parent / "checks.json"
        try:
            # Checked on an earlier poll (it waits for approval): not again, a 1 GB
            # tarball takes a while to read. The work dir is ours alone.
            cached = json.loads(checks.read_text())
            signer, warnings = str(cached["signer"]), [str(w) for w in cached["warnings"]]
        except (OSError, ValueError, KeyError):
            signer, warnings = await self._check_tarball(p, tarball, metadata)
            checks.write_text(json.dumps({"signer": signer, "warnings": warnings}))
        return IngestItem(
            id=cand.record.id,
            key=p.key,
            sha256=metadata.payload.sha256sum,
            metadata=metadata,
            repository=cand.record.repository or "",
            repo_target=metadata.layerbot.repo_target if metadata.layerbot else "",
            signer=signer,
            tarball=tarball,
            staged_at=p.staged_at,
            warnings=tuple(warnings),
        )

    async def _check_tarball(
        self, p: PendingArtifact, tarball: Path, metadata: ArtifactMetadata
    ) -> tuple[str, list[str]]:
        """(signer, warnings) of a tarball whose signature and content are fine."""
        if not p.has_sig:
            raise _Refused(f"no valid signature by an allowed signer: {p.sig_key} is missing")
        signature = await asyncio.to_thread(self.staging.get_bytes, p.sig_key)
        signer = await self._verify(None, tarball, signature, metadata, "the tarball")
        # Extracted for the lstat walk beside the download (the ingest's own work space),
        # not in the system's /tmp, which a software tarball could fill.
        report = await asyncio.to_thread(inspect_tarball, tarball, self.allowed_link_prefixes,
                                         work_dir=tarball.parent)
        if not report.ok:
            raise _Refused(f"unsafe tarball: {report.summary()}")
        return signer, [str(w) for w in report.warnings]

    async def _download(self, cand: _Candidate) -> Path:
        """The tarball in the work dir, checked against the metadata's sha256; kept while
        the artifact waits for approval, so it is fetched once."""
        metadata = cand.metadata
        assert metadata is not None
        work = self._work(cand.record.id)
        work.mkdir(parents=True, exist_ok=True)
        tarball = work / metadata.payload.filename
        marker = work / "sha256"
        expected = metadata.payload.sha256sum
        if tarball.is_file() and marker.is_file() and marker.read_text() == expected:
            return tarball
        (work / "checks.json").unlink(missing_ok=True)
        got = await asyncio.to_thread(self.staging.download, cand.pending.key, tarball)
        if got != expected:
            raise _Refused(f"checksum mismatch: metadata says {expected}, file has {got}")
        size = tarball.stat().st_size
        if size != metadata.payload.size:
            raise _Refused(f"size mismatch: metadata says {metadata.payload.size}, file has {size}")
        marker.write_text(expected)
        return tarball

    # -------------------------------------------------------------- the command

    def _fields(self, item: IngestItem) -> dict[str, str]:
        return command_values(item, self.base_dir_template)

    async def _ingest(self, cand: _Candidate, item: IngestItem) -> Record:
        values = self._fields(item)
        argv = [part.format(**values) for part in self.command]
        # Recorded before running: a crash in the middle must not lead to a second run.
        self._settle(cand.record, "ingesting", " ".join(argv))
        code, output = await self._run_command(argv, item)
        if code == 0:
            return await self._finish(cand, "ingested", f"ingested into {item.repository}")
        tail = "\n".join(output.splitlines()[-_OUTPUT_TAIL_LINES:])
        reason = f"the ingest command {argv[0]} exited with {code}: {tail}".rstrip(": ")
        return await self._finish(cand, "failed", reason)

    async def _run_command(self, argv: list[str], item: IngestItem) -> tuple[int, str]:
        return await run_command(argv, item, self.log_dir, self.command_timeout)
