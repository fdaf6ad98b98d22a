"""The agent protocol: what a cluster's agent and the control plane say to each other.

Plain data (pydantic models, no I/O), imported by both sides, so a field cannot mean one
thing to the server and another to the agent. The HTTP routes (``/agent/v1/...``, in the
control plane's OpenAPI description) carry these bodies; the in-process agent of an
embedded ``serve`` passes the same objects without HTTP.

Why a number and not the package version: an agent and a server of different releases work
together as long as they speak one protocol; a change that an older agent would misread
gets a new number, and the server refuses the old one with a message that says what to do
(:func:`refusal`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

#: The protocol this release speaks.
PROTOCOL_VERSION = 1
#: The versions a server of this release accepts from agents.
SUPPORTED_PROTOCOLS = frozenset({1})
#: Sent by the agent on every request (the register body says it too).
PROTOCOL_HEADER = "Layerbot-Agent-Protocol"
#: Every route of the protocol lives under this prefix.
PREFIX = f"/agent/v{PROTOCOL_VERSION}"


def refusal(version: int | None) -> str | None:
    """Why an agent speaking ``version`` is turned away (None: it is welcome)."""
    if version in SUPPORTED_PROTOCOLS:
        return None
    said = "no protocol version" if version is None else f"agent protocol {version}"
    speaks = ", ".join(str(v) for v in sorted(SUPPORTED_PROTOCOLS))
    return (f"{said} is not supported by this control plane, which speaks agent protocol "
            f"{speaks}: install the layerbot release of the control plane on the agent "
            f"(the agent sends header {PROTOCOL_HEADER})")


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a number is wanted here, not true or false")
    return value


#: The numbers an agent sends. Pydantic reads ``true`` as 1, and a protocol version, a slot
#: count or a report's sequence number of ``true`` is a client's bug to refuse, not guess.
#: Not ``strict``: that refuses 67.0 for an integer, which JSON Schema calls one.
Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Number = Annotated[float, BeforeValidator(_not_a_boolean)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeTypeCapability(Message):
    """A kind of node the agent's cluster has (its ``[[node_types]]``)."""

    name: str = Field(min_length=1, max_length=100)
    cpu_target: str = Field(min_length=1, max_length=200)
    accelerator: str | None = Field(default=None, max_length=200)
    os: str = "linux"
    #: Repository target ids it builds for; empty: all of them.
    repo_targets: list[str] = []


class Capabilities(Message):
    backend: str = Field(max_length=20)
    node_types: list[NodeTypeCapability] = Field(default=[], max_length=200)
    #: How many jobs the agent holds at most (queued in its backend included).
    concurrency: Int = Field(ge=1, le=100_000)
    #: Resources as the backend reports them (partitions, idle CPUs), when known.
    resources: dict[str, Any] | None = None


class RegisterRequest(Message):
    protocol: Int
    version: str = Field(max_length=40)
    cluster: str = Field(min_length=1, max_length=100)
    capabilities: Capabilities


class HeldJob(Message):
    """A job the server has leased to this agent, as the server sees it."""

    id: int
    lease_id: str
    state: str
    #: The server wants it stopped (a cancel, or it is no longer this agent's).
    cancel: bool = False


class RegisterResponse(Message):
    agent: str
    heartbeat_seconds: float
    lease_seconds: float
    #: What the server believes this agent holds: the agent reconciles against it.
    jobs: list[HeldJob] = []


#: The largest id of a row (a job, a deployment): what an INTEGER column holds everywhere
#: (PostgreSQL's is 32-bit). Larger ones in a request are a 422, not a database error.
MAX_ID = 2**31 - 1


class HeartbeatRequest(Message):
    #: The jobs the agent holds, with the lease each was given. JSON keys are strings:
    #: the description says they are job ids (the fuzzing sent any string, a 422).
    holding: dict[Annotated[int, Field(ge=1, le=MAX_ID)], str] = Field(
        default={}, max_length=100_000,
        json_schema_extra={"propertyNames": {"pattern": "^[1-9][0-9]{0,8}$"}})
    free_slots: Int = Field(ge=0)
    resources: dict[str, Any] | None = None


class HeartbeatResponse(Message):
    paused: bool
    draining: bool
    lease_seconds: float
    #: Jobs the agent must stop: cancelled, or leased elsewhere after the agent was gone.
    cancel: list[int] = []
    #: Jobs the agent holds that the server no longer gives it (ended, lost, another
    #: lease): drop them, after cancelling anything that still runs.
    gone: list[int] = []


class ClaimRequest(Message):
    slots: Int = Field(ge=1, le=1000)
    #: Long poll: how long the server may wait for work before answering with none.
    wait_seconds: Number = Field(default=20.0, ge=0, le=60)


class JobSpec(Message):
    """Everything an agent needs to prepare and submit one job."""

    id: int
    lease_id: str
    build_id: int
    repo: str
    pr: int | None
    clone_url: str
    head_sha: str
    base_ref: str
    node_type: str
    target: str
    repo_target: str
    facts: dict[str, Any]
    #: A directory an earlier attempt of this agent recorded (None: a fresh start).
    job_dir: str | None = None
    #: Where the job stands on the server (queued until the agent reports it submitted).
    state: str = "queued"
    backend_id: str | None = None


class ClaimResponse(Message):
    jobs: list[JobSpec] = []


class ArtifactInfo(Message):
    name: str = Field(max_length=500)
    path: str
    size: Int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


ReportKind = Literal["job_dir", "submitted", "failed", "outcome", "log"]


class Report(Message):
    """One step of a job, sent until acknowledged; ``seq`` makes a retry harmless."""

    seq: Int = Field(ge=1)
    lease_id: str
    kind: ReportKind
    job_dir: str | None = None
    backend_id: str | None = None
    base_sha: str | None = None
    facts: dict[str, Any] | None = None
    #: For "outcome": the new state (running, succeeded, failed, ...).
    state: str | None = None
    reason: str | None = Field(default=None, max_length=20_000)
    result: dict[str, Any] | None = None
    #: For "log": the last lines of a running job's output (the control center shows them).
    log_tail: str | None = Field(default=None, max_length=64_000)
    artifacts: list[ArtifactInfo] = Field(default=[], max_length=10_000)
    exit_code: Int | None = None
    elapsed_seconds: Number | None = None
    cpus: Int | None = None
    max_rss_bytes: Int | None = None
    node: str | None = Field(default=None, max_length=200)
    started_at: datetime | None = None
    ended_at: datetime | None = None


class ReportResponse(Message):
    #: The report is recorded (now or by an earlier copy of it).
    accepted: bool
    #: Stop this job (it was cancelled, or is no longer this agent's).
    cancel: bool = False
    detail: str = ""


# --- uploads: a deployment staged by the agent that built its job ---------------------------
#
# The artifact is on the cluster where the job ran, so the agent that built the job stages
# it, with its own ``[deploy]`` settings: the staging area, the S3 credentials and the
# signing key stay on the agent's machine and never cross the protocol. The control plane
# only says what to stage (an :class:`UploadSpec`) and records how it went. New routes and
# messages only: an agent of this protocol that does not know them is unaffected.


class UploadSpec(Message):
    """One deployment for the agent that built its job to stage: the file, and what the
    metadata says about it."""

    deployment_id: int
    #: Which claim of the deployment this is; a report of an earlier one is refused.
    attempt: int = Field(ge=0)
    #: The control plane's instance: the metadata's ``layerbot.instance`` and the
    #: signature's namespace, the same whichever agent built the job.
    instance: str = Field(min_length=1, max_length=100)
    repo: str = Field(max_length=200)
    pr: int
    job_id: int
    head_sha: str = Field(max_length=64)
    base_sha: str = Field(max_length=64)
    cpu_target: str = Field(max_length=200)
    accelerator: str | None = Field(default=None, max_length=200)
    repo_target: str = Field(max_length=100)
    #: When the job ended (the metadata's build time).
    build_time: datetime | None = None
    #: The file on the agent's machine, as the job's outcome reported it.
    artifact: ArtifactInfo
    #: The build reply that lists the job (the metadata's ``link2pr.pr_comment_id``).
    comment_id: int | None = None


class UploadClaimRequest(Message):
    slots: Int = Field(default=1, ge=1, le=100)
    #: Deployments the agent is staging already (in its journal): not offered again.
    #: (The bounds before the validator: after it, pydantic left them out of the schema.)
    holding: list[Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_not_a_boolean)]] = \
        Field(default=[], max_length=10_000)


class UploadClaimResponse(Message):
    #: Deployments the agent was given (first any it was given before and does not hold).
    uploads: list[UploadSpec] = []


UploadOutcomeKind = Literal["uploaded", "skipped", "failed"]


class UploadReport(Message):
    """How staging one deployment went; sent until acknowledged, applied once."""

    attempt: Int = Field(ge=0)
    outcome: UploadOutcomeKind
    #: For "uploaded"/"skipped": where the artifact is.
    key: str | None = Field(default=None, max_length=2000)
    url: str | None = Field(default=None, max_length=4000)
    #: For "failed": why, as shown on the PR.
    error: str | None = Field(default=None, max_length=20_000)
    #: For "failed": the staging area may come back (unreachable, 5xx): queue it again.
    transient: bool = False

    @model_validator(mode="after")
    def _complete(self) -> UploadReport:
        if self.outcome == "failed" and not self.error:
            raise ValueError("a failed upload says why (error)")
        if self.outcome != "failed" and not self.key:
            raise ValueError(f"an artifact {self.outcome} is named by its key")
        return self


class UploadReportResponse(Message):
    #: Recorded (now or by an earlier copy of the report); False: stale, drop it.
    accepted: bool
    detail: str = ""
