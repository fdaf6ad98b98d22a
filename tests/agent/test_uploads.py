"""A cluster's agent stages its deployments with a journal on disk: a crash in the middle
stages again, a report waits for a server that is away, nothing is reported twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from layerbot.agent.client import NotYours, ServerUnreachable
from layerbot.agent.remote_uploads import RemoteUploads, UploadJournal
from layerbot.agent.uploads import UploadLoop
from layerbot.core.protocol import (
    ArtifactInfo,
    UploadClaimRequest,
    UploadClaimResponse,
    UploadReport,
    UploadReportResponse,
    UploadSpec,
)
from layerbot.deploy.upload import Stager


def spec(deployment_id: int) -> UploadSpec:
    return UploadSpec(
        deployment_id=deployment_id, attempt=1, instance="fleet", repo="o/r", pr=1,
        job_id=deployment_id, head_sha="a" * 40, base_sha="b" * 40,
        cpu_target="x86_64/generic", repo_target="r",
        artifact=ArtifactInfo(name="a.tar.gz", path="/nowhere/a.tar.gz", size=1,
                              sha256="c" * 64))


UPLOADED = UploadReport(attempt=1, outcome="uploaded", key="o/r/a.tar.gz")


class FakeServer:
    """The control plane's upload routes, with a switch to be away."""

    def __init__(self, offers: list[UploadSpec]) -> None:
        self.offers = offers
        self.claims: list[UploadClaimRequest] = []
        self.reports: list[tuple[int, UploadReport]] = []
        self.away = False
        self.foreign: set[int] = set()

    def claim_uploads(self, request: UploadClaimRequest) -> UploadClaimResponse:
        if self.away:
            raise ServerUnreachable("no answer")
        self.claims.append(request)
        given = [s for s in self.offers if s.deployment_id not in request.holding]
        self.offers = []
        return UploadClaimResponse(uploads=given[:request.slots])

    def report_upload(self, deployment_id: int, report: UploadReport) -> UploadReportResponse:
        if self.away:
            raise ServerUnreachable("no answer")
        if deployment_id in self.foreign:
            raise NotYours(f"deployment {deployment_id} is not of a job of agent x")
        self.reports.append((deployment_id, report))
        return UploadReportResponse(accepted=True)


def test_a_claimed_upload_is_on_disk_before_staging_and_staged_again_after_a_crash(
        tmp_path: Path) -> None:
    server = FakeServer([spec(1)])
    assert RemoteUploads(server, UploadJournal(tmp_path)).take_uploads(1) == [spec(1)]
    assert (tmp_path / "1.json").exists()
    # The agent died while staging: at restart it stages it again, without a new claim.
    again = RemoteUploads(server, UploadJournal(tmp_path))
    assert again.take_uploads(1) == [spec(1)]
    assert len(server.claims) == 1
    again.report_upload(spec(1), UPLOADED)
    assert server.reports == [(1, UPLOADED)]
    assert not (tmp_path / "1.json").exists()


def test_a_report_waits_on_disk_for_a_server_that_is_away(tmp_path: Path) -> None:
    server = FakeServer([spec(2)])
    uploads = RemoteUploads(server, UploadJournal(tmp_path))
    uploads.take_uploads(1)
    server.away = True
    uploads.report_upload(spec(2), UPLOADED)
    assert server.reports == [] and (tmp_path / "2.json").exists()
    # Restarted while the server is still away; then it comes back.
    uploads = RemoteUploads(server, UploadJournal(tmp_path))
    server.away = False
    assert uploads.take_uploads(1) == []
    assert server.reports == [(2, UPLOADED)]
    # Once delivered it is forgotten, and the claim did not hold it any more.
    assert server.claims[-1].holding == []
    uploads.flush()
    assert server.reports == [(2, UPLOADED)]


def test_a_deployment_that_is_not_the_agents_any_more_is_dropped(tmp_path: Path) -> None:
    server = FakeServer([spec(3)])
    uploads = RemoteUploads(server, UploadJournal(tmp_path))
    uploads.take_uploads(1)
    server.foreign.add(3)
    uploads.report_upload(spec(3), UPLOADED)
    assert server.reports == [] and not (tmp_path / "3.json").exists()


def test_the_loop_stages_what_it_claims_and_reports_it(tmp_path: Path) -> None:
    from layerbot.config import load

    server = FakeServer([spec(4)])
    uploads = RemoteUploads(server, UploadJournal(tmp_path / "journal"))
    config = load(None, overrides={"instance": {"data_dir": str(tmp_path / "data")}})
    loop = UploadLoop(uploads, Stager(config))
    assert asyncio.run(loop.upload_once()) == 1
    [(deployment, report)] = server.reports
    # The file is not in this agent's job directories: a permanent failure, said once.
    assert deployment == 4 and report.outcome == "failed" and not report.transient
    assert asyncio.run(loop.upload_once()) == 0
