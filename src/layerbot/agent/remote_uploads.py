"""The upload ledger of an agent on a cluster: the control plane over HTTPS, with a journal.

Each deployment the agent was given is one JSON file in ``<data_dir>/agent/uploads``,
written before staging starts: the deployment as claimed, and its report once staging
ended, kept until the control plane acknowledged it. So an agent that crashes in the middle
of an upload stages it again at restart (the multipart upload resumes from
``<data_dir>/uploads``, an object already there is skipped), and one that loses the server
sends its report when the server is back. A report names the claim's attempt; the server
applies it once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from layerbot import log
from layerbot.agent.client import NotYours, ServerUnreachable
from layerbot.agent.remote import write_atomically
from layerbot.core.protocol import (
    UploadClaimRequest,
    UploadClaimResponse,
    UploadReport,
    UploadReportResponse,
    UploadSpec,
)

_log = log.get("agent")


@dataclass
class HeldUpload:
    spec: UploadSpec
    #: How staging went, until the control plane acknowledged it (None: not staged yet).
    report: UploadReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"),
                "report": self.report.model_dump(mode="json") if self.report else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldUpload:
        report = data.get("report")
        return cls(spec=UploadSpec.model_validate(data["spec"]),
                   report=UploadReport.model_validate(report) if report else None)


class UploadJournal:
    """One file per deployment under ``directory`` (the agent's own, mode 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.uploads: dict[int, HeldUpload] = {}
        for path in sorted(directory.glob("*.json")):
            try:
                held = HeldUpload.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError) as exc:
                _log.error("unreadable upload journal entry kept aside", path=str(path),
                           error=str(exc))
                path.rename(path.with_suffix(".bad"))
                continue
            self.uploads[held.spec.deployment_id] = held

    def save(self, held: HeldUpload) -> None:
        with self._lock:
            self.uploads[held.spec.deployment_id] = held
            write_atomically(self.directory / f"{held.spec.deployment_id}.json",
                             held.to_json())

    def forget(self, deployment_id: int) -> None:
        with self._lock:
            self.uploads.pop(deployment_id, None)
            (self.directory / f"{deployment_id}.json").unlink(missing_ok=True)

    def all(self) -> list[HeldUpload]:
        with self._lock:
            return sorted(self.uploads.values(), key=lambda h: h.spec.deployment_id)


class UploadServer(Protocol):
    """The two upload routes of the control plane (``agent.client.ControlPlane``)."""

    def claim_uploads(self, request: UploadClaimRequest) -> UploadClaimResponse: ...

    def report_upload(self, deployment_id: int, report: UploadReport
                      ) -> UploadReportResponse: ...


class RemoteUploads:
    """The :class:`~layerbot.agent.ledger.UploadLedger` of a cluster's agent."""

    def __init__(self, server: UploadServer, journal: UploadJournal) -> None:
        self.server = server
        self.journal = journal
        self._lock = threading.Lock()

    def take_uploads(self, slots: int, resume: bool = True) -> list[UploadSpec]:
        """Always resumes: what it holds is in its journal (staged again first), and the
        server offers again only what it was given and does not hold (a lost answer)."""
        self.flush()
        unstaged = [h.spec for h in self.journal.all() if h.report is None]
        if unstaged:  # cut short by a crash or a stop: stage them again first
            return unstaged
        holding = [h.spec.deployment_id for h in self.journal.all()]
        answer = self.server.claim_uploads(UploadClaimRequest(slots=slots, holding=holding))
        for spec in answer.uploads:  # on disk before anything is staged
            self.journal.save(HeldUpload(spec))
        if answer.uploads:
            _log.info("uploads claimed", deployments=[s.deployment_id for s in answer.uploads])
        return list(answer.uploads)

    def report_upload(self, spec: UploadSpec, report: UploadReport) -> None:
        self.journal.save(HeldUpload(spec, report))
        self.flush()

    def flush(self) -> None:
        """Send the reports not acknowledged yet; a server away keeps them for later."""
        with self._lock:
            for held in self.journal.all():
                if held.report is not None and not self._send(held.spec, held.report):
                    return

    def _send(self, spec: UploadSpec, report: UploadReport) -> bool:
        """False: the server is away (try again later)."""
        try:
            answer = self.server.report_upload(spec.deployment_id, report)
        except ServerUnreachable as exc:
            _log.warning("upload report not delivered yet", deployment_id=spec.deployment_id,
                         error=str(exc))
            return False
        except NotYours as exc:
            _log.warning("deployment no longer ours", deployment_id=spec.deployment_id,
                         detail=str(exc))
        else:
            if not answer.accepted:
                _log.warning("upload report refused", deployment_id=spec.deployment_id,
                             detail=answer.detail)
        self.journal.forget(spec.deployment_id)
        return True
