"""The agent's HTTP client of the control plane: outbound HTTPS only, proxies honoured.

httpx reads ``HTTPS_PROXY``/``NO_PROXY`` from the environment (``trust_env``), which is how
login nodes reach the outside. Every request carries the agent's token and the protocol
version; the answers that mean "stop and tell the operator" (a refused token, an old
protocol) are exceptions of their own, distinct from a server that is away for a moment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import BaseModel

from layerbot import __version__
from layerbot.core.protocol import (
    PREFIX,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JobSpec,
    RegisterRequest,
    RegisterResponse,
    Report,
    ReportResponse,
    UploadClaimRequest,
    UploadClaimResponse,
    UploadReport,
    UploadReportResponse,
)

Answer = TypeVar("Answer", bound=BaseModel)


class ServerUnreachable(Exception):
    """No answer, or a 5xx: try again later; nothing was decided."""


class Refused(Exception):
    """The server will not talk to this agent (token, protocol): an operator must act."""


class NotYours(Exception):
    """The job or deployment is not this agent's (404/403 on a job or an upload); on the
    upload claim, a control plane of a release that hands out no uploads."""


class ControlPlane:
    """``server_url``: one URL (a load balancer's), or several separated by commas (the
    replicas themselves): a replica that does not answer is skipped for the next."""

    def __init__(self, server_url: str, token: str, *, ca_file: Path | None = None,
                 timeout: float = 30.0, protocol: int = PROTOCOL_VERSION) -> None:
        self.servers = [u.strip().rstrip("/") for u in server_url.split(",") if u.strip()]
        if not self.servers:
            raise ValueError("no control plane URL given")
        self._current = 0
        self._http = httpx.Client(
            timeout=timeout, verify=str(ca_file) if ca_file else True, trust_env=True,
            headers={"Authorization": f"Bearer {token}", PROTOCOL_HEADER: str(protocol),
                     "User-Agent": f"layerbot-agent/{__version__}"})
        self.protocol = protocol

    def close(self) -> None:
        self._http.close()

    def register(self, request: RegisterRequest) -> RegisterResponse:
        return self._post("/register", request, RegisterResponse)

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        return self._post("/heartbeat", request, HeartbeatResponse)

    def claim(self, request: ClaimRequest) -> ClaimResponse:
        # The server may hold a claim for its wait: give the request that long and more.
        return self._post("/claim", request, ClaimResponse,
                          timeout=request.wait_seconds + 30.0)

    def job(self, job_id: int) -> JobSpec:
        return self._send("GET", f"/jobs/{job_id}", None, JobSpec)

    def report(self, job_id: int, report: Report) -> ReportResponse:
        return self._post(f"/jobs/{job_id}/reports", report, ReportResponse)

    def claim_uploads(self, request: UploadClaimRequest) -> UploadClaimResponse:
        return self._post("/uploads/claim", request, UploadClaimResponse)

    def report_upload(self, deployment_id: int, report: UploadReport) -> UploadReportResponse:
        return self._post(f"/uploads/{deployment_id}/reports", report, UploadReportResponse)

    def _post(self, path: str, body: BaseModel, answer: type[Answer],
              timeout: float | None = None) -> Answer:
        return self._send("POST", path, body, answer, timeout)

    def _send(self, method: str, path: str, body: BaseModel | None, answer: type[Answer],
              timeout: float | None = None) -> Answer:
        content = body.model_dump_json() if body is not None else None
        failure = ""
        for _ in self.servers:  # each replica once at most
            url = self.servers[self._current] + PREFIX + path
            try:
                response = self._http.request(
                    method, url, content=content, headers={"Content-Type": "application/json"},
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                failure = f"{self.servers[self._current]}: {type(exc).__name__}: {exc}"
            else:
                if response.status_code not in (502, 503, 504):
                    return self._answer(path, response, answer)
                failure = f"{self.servers[self._current]}: HTTP {response.status_code}"
            self._current = (self._current + 1) % len(self.servers)
        raise ServerUnreachable(failure)

    def _answer(self, path: str, response: httpx.Response, answer: type[Answer]) -> Answer:
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerUnreachable(f"HTTP {response.status_code}: {_detail(response)}")
        if response.status_code in (401, 426):
            raise Refused(f"HTTP {response.status_code}: {_detail(response)}")
        if response.status_code in (403, 404) and path.startswith(("/jobs/", "/uploads/")):
            raise NotYours(_detail(response))
        if response.status_code >= 400:
            raise Refused(f"HTTP {response.status_code}: {_detail(response)}")
        return answer.model_validate_json(response.content)


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    detail = data.get("detail") if isinstance(data, dict) else None
    return str(detail if detail is not None else data)[:500]
