"""layerbot.toml: typed models, loading, and error messages that say what to fix.

The whole configuration is one TOML file. Every key has an embedded default, so a bot
runs with no file at all (a local executor building for this machine), and an operator
only writes what differs. Secrets come from files or environment variables and are kept
as ``SecretStr`` so that they never show in logs, reprs or error messages.
"""

from __future__ import annotations

import os
import platform
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from layerbot.config_file import DEFAULT_DATA_DIR, find_config_file, resolve_store_url
from layerbot.config_file import resolve_relative_paths as _resolve_relative_paths
from layerbot.core.pipeline import PlanLimits
from layerbot.core.slurm_options import option_problems

PRIVATE_KEY_ENV = "LAYERBOT_GITHUB_PRIVATE_KEY"
WEBHOOK_SECRET_ENV = "LAYERBOT_WEBHOOK_SECRET"
SESSION_SECRET_ENV = "LAYERBOT_SESSION_SECRET"
OAUTH_SECRET_ENV = "LAYERBOT_OAUTH_CLIENT_SECRET"

#: Subjects allowed by default: people with write access to the repository.
DEFAULT_SUBJECTS = ["role:write"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GitHubConfig(Section):
    app_id: int | None = None
    #: The App's slug; the bot's own comments come from ``<app_name>[bot]``.
    app_name: str = "layerbot"
    private_key_file: Path | None = None
    webhook_secret_file: Path | None = None
    api_url: str = "https://api.github.com"
    #: How long a request to GitHub may take before it counts as unanswered.
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: The allow-list of repositories whose events the bot acts on: ``owner/name``,
    #: ``owner/*`` or ``*`` (any repository the App is installed on, said explicitly).
    #: Events of other repositories (other installations) are ignored, logged and counted
    #: (``layerbot_events_not_allowed_total``). Empty serves none: ``serve`` with an App
    #: configured refuses to start until it is set (``layerbot run`` needs no GitHub).
    repositories: list[str] = []
    #: Filled from the files or the environment at load time; never written in the TOML.
    private_key: SecretStr | None = Field(default=None, exclude=True)
    webhook_secret: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, value: list[str]) -> list[str]:
        from layerbot.core.repos import validate_entry

        return [validate_entry(v.strip()) for v in value]

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. https://api.github.com")
        return value.rstrip("/")


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: GitHub caps payloads at 25 MB; bigger bodies are refused with 413.
    max_body_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    #: Run the loops (event handling, jobs, GitHub writes) in a worker process of their own,
    #: so that answering GitHub never waits for work (see layerbot/app/supervisor.py).
    worker_process: bool = True
    #: This replica's name among several serving one database (default: host name:port).
    #: A replica restarted under its name takes back at once what its dead run held.
    replica: str = ""
    #: The loops run by one replica at a time (GitHub sender, delivery recovery, jobs,
    #: uploads, archiving): how long a replica that died keeps them before another takes
    #: over (see docs/architecture.md, "Several replicas"). Clocks must agree to well
    #: within a third of it.
    singleton_ttl_seconds: float = Field(default=15.0, ge=0.3, le=600)

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str) -> str:
        if value and (len(value) > 100 or "/" in value or any(c.isspace() for c in value)):
            raise ValueError("must be a name of at most 100 characters, without spaces or /")
        return value


class StoreConfig(Section):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "must be a SQLAlchemy URL: sqlite:///path/to/layerbot.db or "
                "postgresql+psycopg://user:password@host/dbname"
            )
        return value


class InstanceConfig(Section):
    name: str = Field(default_factory=lambda: platform.node().split(".")[0] or "layerbot")
    data_dir: Path = DEFAULT_DATA_DIR

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a non-empty name without spaces, e.g. cluster-a")
        return value


class LoggingConfig(Section):
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: Level per component, e.g. ``{ github = "debug", webhook = "warning" }``.
    levels: dict[str, Literal["debug", "info", "warning", "error"]] = {}


class InboxConfig(Section):
    workers: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=2.0, ge=0)
    backoff_max_seconds: float = Field(default=300.0, ge=0)
    #: A worker renews its claims while it runs; the events of a worker that died (in any
    #: replica) are given back this long after its last renewal.
    lease_seconds: float = Field(default=60.0, gt=0)


class OutboxConfig(Section):
    senders: int = Field(default=4, ge=1, le=32)
    max_attempts: int = Field(default=8, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=600.0, ge=0)
    #: A comment whose create timed out may still be applied by GitHub afterwards: it is
    #: looked for (by its marker) and created only this long after the timeout.
    in_flight_seconds: float = Field(default=60.0, ge=0)


class DeliveriesConfig(Section):
    #: How often to look for failed deliveries to ask GitHub to redeliver (0: only at start).
    recover_interval_seconds: float = Field(default=600.0, ge=0)
    #: How far back to look.
    lookback_hours: float = Field(default=24.0, gt=0)


class HealthConfig(Section):
    #: /readyz fails when the oldest unfinished event waits longer than this.
    max_inbox_lag_seconds: float = Field(default=120.0, gt=0)


class AccessConfig(Section):
    """Who may do what. An empty list allows nobody.

    Subjects: a GitHub login (``alice``), a team (``@org/team``) or a repository role
    (``role:write``, ``role:maintain``, ``role:admin``; a role includes the ones above it).
    """

    command: list[str] = Field(default_factory=lambda: list(DEFAULT_SUBJECTS))
    build: list[str] = Field(default_factory=lambda: list(DEFAULT_SUBJECTS))
    cancel: list[str] = Field(default_factory=lambda: list(DEFAULT_SUBJECTS))
    deploy: list[str] = Field(default_factory=lambda: ["role:maintain"])
    force_deploy: list[str] = Field(default_factory=lambda: ["role:admin"])
    pause: list[str] = Field(default_factory=lambda: ["role:maintain"])
    cache_ttl_seconds: float = Field(default=300.0, ge=0)

    @field_validator("command", "build", "cancel", "deploy", "force_deploy", "pause")
    @classmethod
    def _subjects(cls, value: list[str]) -> list[str]:
        for subject in value:
            if subject.startswith("role:"):
                if subject[5:] not in ("read", "triage", "write", "maintain", "admin"):
                    raise ValueError(
                        f"{subject!r}: roles are role:read, role:triage, role:write, "
                        "role:maintain, role:admin"
                    )
            elif subject.startswith("@"):
                if subject.count("/") != 1 or subject.endswith("/"):
                    raise ValueError(f"{subject!r}: a team is written @org/team-slug")
            elif not subject or any(c.isspace() for c in subject):
                raise ValueError(f"{subject!r}: a GitHub login has no spaces")
        return value


class ReportingConfig(Section):
    #: quiet: reaction and final results; normal: one reply per build, edited as jobs move;
    #: chatty: also a reply to every accepted command.
    chatlevel: Literal["quiet", "normal", "chatty"] = "normal"
    #: How many log lines a failed job's check run shows.
    log_tail_lines: int = Field(default=30, ge=0, le=500)
    #: A check run per job: "final" creates it with the job's result (one request per job;
    #: the reply comment shows the live states), "live" also shows queued and in progress
    #: (three requests per job), "off" creates none.
    check_runs: Literal["off", "final", "live"] = "final"
    #: Edits of one comment or check run are sent at most this often; the edits between
    #: collapse into one (a long build costs a handful of requests, not one per state).
    min_edit_interval_seconds: float = Field(default=10.0, ge=0)


class BuildConfig(Section):
    #: The script a job runs, relative to the PR's checkout (EESSI: bot/build.sh) or absolute
    #: (a site script that calls the PR's scripts).
    job_script: str = "bot/build.sh"
    #: Cancel waiting jobs for older commits when a PR gets new commits.
    cancel_superseded: bool = True
    #: `bot: build`/`rebuild` must pin the reviewed commit with `sha:<commit>`; without it
    #: nothing is built (a push between review and handling is never built unseen).
    require_sha: bool = False
    #: Variables ``exportvariable:VAR=value`` may set; others are refused.
    allowed_exportvars: list[str] = []
    #: Variables of the bot's own environment a job inherits; nothing else is passed on.
    env_allowlist: list[str] = Field(
        default_factory=lambda: ["PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "TMPDIR"]
    )
    #: Fixed extra variables for every job (e.g. proxies).
    env: dict[str, str] = {}
    #: EESSI's [site_config] of cfg/job.cfg: local_tmp, build_logs_dir, shared_fs_path, ...
    site_config: dict[str, str] = {}
    #: Rewrite the PR's clone URL, e.g. "git@github.com:{repo}.git"; empty: GitHub's own.
    clone_url: str = ""
    time_limit_minutes: float = Field(default=24 * 60, gt=0)
    fetch_attempts: int = Field(default=3, ge=1)
    #: Days after a PR is closed before its job directories are archived (0: at once).
    archive_after_days: float = Field(default=14.0, ge=0)
    #: Where the bare git mirrors live; default <data_dir>/mirrors.
    mirrors_dir: Path | None = None
    #: Where job directories live; default <data_dir>/jobs.
    jobs_dir: Path | None = None
    #: The unprivileged user PR job scripts run as (never the bot's own uid). Empty: as root,
    #: ``layerbot-job`` if it exists (scripts/jobuser.sh creates it), else ``nobody``; not
    #: root, nothing isolates, so jobs are refused unless ``allow_unisolated`` (see
    #: docs/security.md).
    run_as: str = ""
    #: Run PR job scripts as the bot's own user when no isolation is possible. Dangerous: a
    #: job can then read every secret of the bot. Only for single-user trials.
    allow_unisolated: bool = False


class LocalBackendConfig(Section):
    max_concurrent: int = Field(default=2, ge=1)


class SlurmBackendConfig(Section):
    #: Options every job gets, e.g. { account = "eessi", time = "04:00:00" }.
    defaults: dict[str, str] = {}
    #: Options a command may override (by ``exportvariable``-like syntax), e.g. ["time"].
    #: Options a command may set with ``batch:OPTION=value`` (e.g. ["time", "mem"]);
    #: they come last: site defaults, then the node type, then the command.
    overridable: list[str] = []
    #: hold_release: submit held, release once recorded; delayed_begin: --begin=now+N.
    handover: Literal["hold_release", "delayed_begin"] = "hold_release"
    delayed_begin_seconds: int = Field(default=30, ge=1)
    clusters: list[str] = []
    #: Extra commands (e.g. absolute paths on sites with several Slurm installs).
    sbatch: str = "sbatch"
    squeue: str = "squeue"
    sacct: str = "sacct"
    scancel: str = "scancel"
    scontrol: str = "scontrol"
    sinfo: str = "sinfo"

    @field_validator("defaults")
    @classmethod
    def _no_reserved_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        """Refused at load, not when a PR's job is submitted (see core/slurm_options.py)."""
        return _refuse_options(value, long_names=True)

    @field_validator("overridable")
    @classmethod
    def _no_reserved_overridable(cls, value: list[str]) -> list[str]:
        return _refuse_options(value, long_names=True)


_Options = TypeVar("_Options", dict[str, str], list[str])


def _refuse_options(value: _Options, *, long_names: bool) -> _Options:
    if problems := option_problems(value, long_names=long_names):
        raise ValueError("; ".join(problems))
    return value


class BackendConfig(Section):
    kind: Literal["local", "slurm"] = "local"
    poll_seconds: float = Field(default=5.0, gt=0)
    local: LocalBackendConfig = LocalBackendConfig()
    slurm: SlurmBackendConfig = SlurmBackendConfig()


class RepoTarget(Section):
    """A software repository a job builds for (EESSI: a section of repos.cfg)."""

    id: str
    name: str = ""
    version: str = ""
    container: str = ""
    #: Any other facts passed to the job in cfg/job.cfg [repository] and job.json.
    facts: dict[str, str] = {}


class NodeType(Section):
    """A kind of build node: which CPU (and accelerator) it builds for, and how to get one."""

    name: str
    #: EESSI's software subdir, e.g. x86_64/amd/zen2.
    cpu_target: str
    accelerator: str | None = None
    os: str = "linux"
    #: Repository target ids this node type builds for; empty: all of them.
    repo_targets: list[str] = []
    #: Backend options, e.g. { partition = "zen2", constraint = "zen2" }.
    options: dict[str, str] = {}

    @field_validator("options")
    @classmethod
    def _no_reserved_options(cls, value: dict[str, str]) -> dict[str, str]:
        # Names only: the local backend reads its own short keys (cpus) from here too.
        return _refuse_options(value, long_names=False)

    @field_validator("cpu_target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value or value.startswith("/") or " " in value:
            raise ValueError("must be a CPU target like x86_64/amd/zen2")
        return value


class S3Config(Section):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    #: Per-part checksum; md5 for servers without the newer checksum headers.
    checksum: Literal["crc32", "md5"] = "crc32"
    #: Bucket per repository target id; "*" is the fallback.
    buckets: dict[str, str] = {}


class DeployConfig(Section):
    label: str = "bot:deploy"
    policy: Literal["all", "latest", "once"] = "latest"
    #: "dir" (embedded default: a local directory) or "s3".
    staging: Literal["dir", "s3"] = "dir"
    staging_dir: Path | None = None
    s3: S3Config = S3Config()
    #: Template of object keys: {repo}, {pr}, {target}, {repo_target}, {job}, {filename}, and
    #: EESSI's ${github_repository}, ${pull_request_number}, ${legacy_aws_path}. A string for
    #: every repository target, or a map repository target id -> template ("*": fallback).
    #: Empty: layout "layerbot" uses its default below, layout "eessi" ${legacy_aws_path}.
    #: The metadata and signatures go beside each artifact (see ``layout``).
    artifact_prefix: str | dict[str, str] = "{repo}/pr-{pr}/{repo_target}/{target}"
    #: EESSI's metadata_prefix (same forms). EESSI's ingestion only finds a tarball whose
    #: metadata is <tarball key>.meta.txt, so it must be empty or render as artifact_prefix.
    metadata_prefix: str | dict[str, str] = ""
    #: Names in the staging area. "layerbot": <key>.meta.json (+ .sig files). "eessi": what
    #: EESSI's automated ingestion reads: <key>.meta.txt, <key>.sig, <key>.meta.txt.sig.
    layout: Literal["layerbot", "eessi"] = "layerbot"
    #: ssh private key used to sign artifacts and metadata (ssh-keygen -Y sign).
    signing_key_file: Path | None = None
    multipart_threshold_bytes: int = 64 * 1024 * 1024
    part_size_bytes: int = 16 * 1024 * 1024
    upload_concurrency: int = Field(default=8, ge=1, le=64)
    upload_retry_attempts: int = Field(default=10, ge=1)
    upload_retry_deadline_seconds: float = Field(default=180.0, gt=0)

    def prefix_template(self, repo_target: str) -> str:
        """The artifact key template of a repository target ("" when none is set)."""
        return _per_repo(self.artifact_prefix, repo_target)

    @model_validator(mode="after")
    def _metadata_beside_artifact(self) -> DeployConfig:
        # EESSI's ingestion pairs <tarball>.meta.txt with <tarball> at the same key, and so
        # does layerbot's: metadata elsewhere would never be ingested, so say it at load.
        targets = {"*"}
        for value in (self.artifact_prefix, self.metadata_prefix):
            if isinstance(value, dict):
                targets |= set(value)
        for target in sorted(targets):
            meta = _per_repo(self.metadata_prefix, target)
            if meta and meta != self.prefix_template(target):
                raise ValueError(
                    f"deploy.metadata_prefix for '{target}' ({meta!r}) differs from "
                    f"deploy.artifact_prefix ({self.prefix_template(target)!r}): the ingestion "
                    "(EESSI's and layerbot's) only reads metadata stored as <artifact key>"
                    ".meta.txt beside the artifact; leave metadata_prefix empty or make it "
                    "the same")
        return self


def _per_repo(value: str | dict[str, str], repo_target: str) -> str:
    if isinstance(value, str):
        return value
    return value.get(repo_target, value.get("*", ""))


class IngestConfig(Section):
    """`layerbot ingest`, run on the repository server (CernVM-FS Stratum-0)."""

    allowed_signers_file: Path | None = None
    state_dir: Path | None = None
    #: Only staged objects under this key prefix are considered.
    prefix: str = ""
    poll_seconds: float = Field(default=60.0, gt=0)
    #: auto: allowed signers suffice; github: a maintainer approves on a staging repository.
    approval: Literal["auto", "github"] = "auto"
    auto_approve_principals: list[str] = []
    #: With approval = "github": the repository where approval PRs/issues are opened.
    approval_repo: str = ""
    approval_installation_id: int | None = None
    command: list[str] = Field(default_factory=lambda: [
        "cvmfs_server", "ingest", "--tar_file", "{tarball}", "--base_dir", "{base_dir}",
        "{repository}"])
    base_dir: str = "/"
    command_timeout_seconds: float = Field(default=3600.0, gt=0)
    #: Repository target id -> CernVM-FS repository name.
    repositories: dict[str, str] = {}
    default_repository: str = ""
    namespaces: list[str] = []
    allowed_link_prefixes: list[str] = []


class WebConfig(Section):
    """The control center: dashboard, REST API, GitHub login (see docs/control-center.md)."""

    #: Read-only pages and API without login (true) or only for people who logged in.
    public_read: bool = True
    #: Where people reach the bot, e.g. https://bot.example.org (OAuth callback, cookies).
    base_url: str = ""
    #: Signs session cookies; default: a random secret kept in <data_dir>/web-session-secret.
    session_secret_file: Path | None = None
    session_hours: float = Field(default=12.0, gt=0)
    #: A GitHub OAuth App (or the GitHub App's own client id) for logging in; empty: no login.
    oauth_client_id: str = ""
    oauth_client_secret_file: Path | None = None
    oauth_authorize_url: str = "https://github.com/login/oauth/authorize"
    oauth_token_url: str = "https://github.com/login/oauth/access_token"
    oauth_user_url: str = "https://api.github.com/user"
    #: The repository (owner/name) whose roles and teams decide instance-wide actions
    #: (pause, resume, drain); empty: every repository named in ``github.repositories``
    #: (a person needs the permission on one of them; wildcards name nobody's roles).
    repository: str = ""
    #: Filled from the files or the environment at load time; never written in the TOML.
    session_secret: SecretStr | None = Field(default=None, exclude=True)
    oauth_client_secret: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("base_url", "oauth_authorize_url", "oauth_token_url", "oauth_user_url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class FleetConfig(Section):
    """The control plane's side of the fleet (see docs/fleet.md)."""

    #: Run an agent inside `serve` that builds with this file's backend and node types
    #: (the single-machine default). Turn it off on a control plane whose clusters run
    #: `layerbot agent`, and on every replica but one if several share a database.
    builtin_agent: bool = True
    #: How often agents beat; a lease is renewed by each beat.
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: A job leased to an agent that stopped beating goes back to the queue after this
    #: long (if it had not started)...
    lease_seconds: float = Field(default=60.0, gt=0)
    #: ...and becomes `lost` this much later (if it had).
    grace_seconds: float = Field(default=60.0, ge=0)
    #: How long a claim waits for work before answering with none (long poll).
    claim_wait_seconds: float = Field(default=20.0, ge=0, le=60)
    #: How many claims one control-plane process works on at once; the others wait their
    #: turn (a few milliseconds each). Claims that arrive together look at the same queued
    #: jobs: run all at once, each skips what the others locked and they share the CPU;
    #: one at a time, each waits for the others' round trips to the database. With 20
    #: agents on 2 CPUs (benchmarks/bench_fleet.py) the claim p99 was, median of 3-5
    #: runs: 1: 215 ms, 2: 132 ms, 4: 95 ms, 6 (the thread pool's size): 135 ms.
    claims_at_once: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _beats_within_lease(self) -> FleetConfig:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("fleet.lease_seconds must be at least twice "
                             "fleet.heartbeat_seconds, or one late beat loses every lease")
        return self


class PipelinesConfig(Section):
    """A target's build split into dependent steps by a plan script (docs/pipelines.md)."""

    #: The plan script: relative, in the PR's checkout (a repository without it builds
    #: each target as one job); absolute, a site script every target runs.
    plan_script: str = "bot/plan.sh"
    max_steps: int = Field(default=50, ge=1, le=1000)
    max_plan_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: What one step may ask for (None: no limit beyond the batch system's).
    max_cpus: int | None = Field(default=None, ge=1)
    max_memory_mb: int | None = Field(default=None, ge=1)
    #: Where an agent keeps the artifacts of finished steps, read-only to jobs; default
    #: <jobs_dir>/.step-artifacts.
    artifacts_dir: Path | None = None
    #: An agent with a [deploy] section stages the artifacts of steps with a cache key, so
    #: that other agents reuse them (false: they stay in its own store).
    stage_cached_steps: bool = True
    #: ssh allowed_signers of the agents whose staged step artifacts this agent uses: with
    #: it, one without a good signature (namespace: the control plane's instance) is refused.
    allowed_signers_file: Path | None = None
    #: Jobs (steps included) of one PR, and of one target, leased at a time (0: no limit):
    #: a big PR cannot hold every slot while another waits.
    max_active_per_pr: int = Field(default=0, ge=0)
    max_active_per_target: int = Field(default=0, ge=0)
    #: A PR with this label when a build is asked for has its jobs claimed first.
    priority_label: str = "bot:priority"


class AgentConfig(Section):
    """`layerbot agent` on a cluster's login node (see docs/fleet.md)."""

    #: The agent's name (its token is made for it); default: instance.name.
    name: str = ""
    #: The cluster it builds on, for the agent inside `serve`; default: the agent's name. A
    #: cluster's agent is in the cluster `layerbot agents add --cluster` gave it.
    cluster: str = ""
    #: The control plane, e.g. https://bot.example.org (or --server).
    server_url: str = ""
    #: The agent's token (`layerbot agents add NAME` prints it), or LAYERBOT_AGENT_TOKEN.
    token_file: Path | None = None
    #: Jobs it holds at most (queued in its backend included).
    concurrency: int = Field(default=64, ge=1, le=100_000)
    #: A CA bundle for a control plane with a private certificate.
    ca_file: Path | None = None
    #: How often the last lines of running jobs' output are sent (0: only when they end).
    log_tail_seconds: float = Field(default=30.0, ge=0)

    @field_validator("server_url")
    @classmethod
    def _server(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// on a trusted network)")
        return value.rstrip("/")


class Config(Section):
    github: GitHubConfig = GitHubConfig()
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    instance: InstanceConfig = InstanceConfig()
    logging: LoggingConfig = LoggingConfig()
    inbox: InboxConfig = InboxConfig()
    outbox: OutboxConfig = OutboxConfig()
    deliveries: DeliveriesConfig = DeliveriesConfig()
    health: HealthConfig = HealthConfig()
    access: AccessConfig = AccessConfig()
    reporting: ReportingConfig = ReportingConfig()
    build: BuildConfig = BuildConfig()
    backend: BackendConfig = BackendConfig()
    node_types: list[NodeType] = Field(default_factory=lambda: [default_node_type()])
    repo_targets: list[RepoTarget] = Field(default_factory=lambda: [RepoTarget(id="default")])
    deploy: DeployConfig = DeployConfig()
    ingest: IngestConfig = IngestConfig()
    web: WebConfig = WebConfig()
    fleet: FleetConfig = FleetConfig()
    agent: AgentConfig = AgentConfig()
    pipelines: PipelinesConfig = PipelinesConfig()
    #: The file it was read from, if any (relative paths inside are relative to it).
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        known = {t.id for t in self.repo_targets}
        if len(known) != len(self.repo_targets):
            raise ValueError("repo_targets: two targets have the same id")
        names = [n.name for n in self.node_types]
        if len(set(names)) != len(names):
            raise ValueError("node_types: two node types have the same name")
        for node in self.node_types:
            unknown = [t for t in node.repo_targets if t not in known]
            if unknown:
                raise ValueError(
                    f"node_types.{node.name}.repo_targets: unknown id(s) {unknown}; "
                    f"known repo_targets are {sorted(known)}"
                )
        return self

    # Paths derived from data_dir, so one setting moves everything.
    @property
    def store_url(self) -> str:
        return resolve_store_url(self.store.url, self.instance.data_dir)

    @property
    def mirrors_dir(self) -> Path:
        return self.build.mirrors_dir or self.instance.data_dir / "mirrors"

    @property
    def jobs_dir(self) -> Path:
        return self.build.jobs_dir or self.instance.data_dir / "jobs"

    @property
    def plan_limits(self) -> PlanLimits:
        """What this site allows a plan (agents check it, the control plane again)."""
        p = self.pipelines
        return PlanLimits(max_steps=p.max_steps, max_bytes=p.max_plan_bytes,
                          max_time_minutes=self.build.time_limit_minutes,
                          max_cpus=p.max_cpus, max_memory_mb=p.max_memory_mb,
                          overridable=tuple(self.backend.slurm.overridable))

    @property
    def step_artifacts_dir(self) -> Path:
        return self.pipelines.artifacts_dir or self.jobs_dir / ".step-artifacts"

    @property
    def staging_dir(self) -> Path:
        return self.deploy.staging_dir or self.instance.data_dir / "staging"

    @property
    def uploads_dir(self) -> Path:
        """Multipart upload state; must survive restarts so uploads resume."""
        return self.instance.data_dir / "uploads"

    @property
    def ingest_state_dir(self) -> Path:
        return self.ingest.state_dir or self.instance.data_dir / "ingest"

    @property
    def agent_name(self) -> str:
        return self.agent.name or self.instance.name

    @property
    def agent_cluster(self) -> str:
        return self.agent.cluster or self.agent_name

    @property
    def replica_id(self) -> str:
        """This replica's name: ``server.replica``, or host name:port (one process at a time
        can serve a port, so the name is never used by two live replicas)."""
        return self.server.replica or f"{platform.node()[:80] or 'localhost'}:{self.server.port}"

    @property
    def bot_login(self) -> str:
        return f"{self.github.app_name}[bot]"


def default_node_type() -> NodeType:
    """This machine, as the embedded default node type of the local executor."""
    machine = platform.machine() or "x86_64"
    return NodeType(name="local", cpu_target=f"{machine}/generic")


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def load(path: Path | None = None, *, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read, validate and complete the configuration (secrets included)."""
    file = find_config_file(path)
    raw: dict[str, Any] = {}
    source = "(embedded defaults)"
    if file is not None:
        source = str(file)
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(source, ["the file does not exist"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    if overrides:
        raw = _merge(raw, overrides)
    base = (file.parent if file is not None else Path.cwd()).resolve()
    raw = _resolve_relative_paths(raw, base)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None
    config = config.model_copy(update={"source": file})
    return _with_secrets(config, source)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: Any) -> str:
    """One line per problem: the key, the bad value, and what would be right."""
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check its spelling; see the configuration reference)"
    if error["type"] == "missing":
        return f"{key}: required but missing"
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    return f"{key}: {msg}{shown}"


def _read_secret(path: Path | None, env: str, key: str, problems: list[str]) -> SecretStr | None:
    if value := os.environ.get(env):
        return SecretStr(value)
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as exc:
        problems.append(f"{key}: cannot read {path}: {exc.strerror}")
        return None
    if not text:
        problems.append(f"{key}: {path} is empty")
        return None
    return SecretStr(text)


def _with_secrets(config: Config, source: str) -> Config:
    problems: list[str] = []
    gh = config.github
    key = _read_secret(gh.private_key_file, PRIVATE_KEY_ENV, "github.private_key_file", problems)
    secret = _read_secret(
        gh.webhook_secret_file, WEBHOOK_SECRET_ENV, "github.webhook_secret_file", problems
    )
    if key is not None and "PRIVATE KEY" not in key.get_secret_value():
        problems.append(
            "github.private_key_file: not a PEM private key (download it from the App's settings)"
        )
    web = config.web
    session = _read_secret(web.session_secret_file, SESSION_SECRET_ENV,
                           "web.session_secret_file", problems)
    oauth = _read_secret(web.oauth_client_secret_file, OAUTH_SECRET_ENV,
                         "web.oauth_client_secret_file", problems)
    if problems:
        raise ConfigError(source, problems)
    github = gh.model_copy(update={"private_key": key, "webhook_secret": secret})
    web = web.model_copy(update={"session_secret": session, "oauth_client_secret": oauth})
    return config.model_copy(update={"github": github, "web": web})
