"""Staging one deployment: what the agent that built the job does with its own ``[deploy]``.

The control plane decides *what* to deploy and records how it went; the staging itself
happens on the machine that holds the artifact, because that is the only one that can read
it (a cluster's agent has the tarball in its job directory, the control plane does not).
This module is that work, from a plain record (``core.protocol.UploadSpec``) to a report
(``core.protocol.UploadReport``): check the file, make its key, sign it, write the metadata,
upload, in the order that keeps readers safe (``staging.stage``). It reads no store and
knows no GitHub, so the agent package imports it (``tests/architecture`` checks that), and
the built-in agent of ``serve`` runs exactly the same code.

Why the settings are the agent's: the S3 credentials and the signing key are secrets of the
machine that uses them; sending them over the protocol would put them on every cluster.
What the staging area is (endpoint, buckets, layout, key prefix) goes with the
credentials, so it is the agent's ``[deploy]`` too; it must agree with what the ingest
server reads (docs/deploy.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from layerbot import clock, log
from layerbot.config import Config
from layerbot.core.protocol import UploadReport, UploadSpec
from layerbot.deploy.metadata import LayerbotInfo, Link2PR, file_sha256
from layerbot.deploy.signing import Signer
from layerbot.deploy.staging import (
    StagedArtifact,
    Staging,
    StagingError,
    artifact_key,
    bucket_for,
    is_transient,
    key_template,
    stage_artifact,
    staging_for,
)

_log = log.get("deploy")


class UploadFailed(Exception):
    """A deployment that cannot succeed as it is; the message is shown on the PR."""


def staging_target(cpu_target: str, accelerator: str | None) -> str:
    """The target as a key component, EESSI's way: ``x86_64/amd/zen2[/accel/nvidia/cc80]``."""
    return cpu_target + (f"/accel/{accelerator}" if accelerator else "")


def make_staging(config: Config, repo_target: str) -> Staging:
    """The staging area of a repository target, with every deploy.* transfer setting."""
    return staging_for(config.deploy, repo_target, staging_dir=config.staging_dir,
                       state_dir=config.uploads_dir)


class Stagings:
    """A process's staging areas by repository target: one per bucket, made once.

    An S3 staging holds a boto3 client, and every client loads S3's service description
    anew (13 MB here). Made per repository target, and again by the step cache, an agent's
    memory grew each time a target was first deployed (local agents +27 % in a 20-minute
    soak). Targets of one bucket now share one, and :meth:`prepare` makes the configured
    ones when the agent starts: its memory in service is its memory at start, and a first
    deployment does not wait for boto3's import.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._by_place: dict[str, Staging] = {}
        self._guard = threading.Lock()

    def __call__(self, repo_target: str) -> Staging:
        deploy = self.config.deploy
        # staging_for reads the repository target only for its bucket
        place = bucket_for(deploy.s3, repo_target) if deploy.staging == "s3" else "dir"
        with self._guard:
            if place not in self._by_place:
                self._by_place[place] = make_staging(self.config, repo_target)
            return self._by_place[place]

    def prepare(self) -> None:
        """Make the staging of every bucket the configuration names (S3 only: a directory
        costs nothing to make later)."""
        deploy = self.config.deploy
        if deploy.staging == "s3":
            for repo_target in deploy.s3.buckets:
                self(repo_target)


def unconfigured(agent: str) -> str:
    """Why an agent without a ``[deploy]`` section stages nothing (shown on the PR)."""
    return (f"agent {agent} has no [deploy] section: the artifact is on its cluster and only "
            "it can stage it. Give its layerbot.toml the staging area and signing key "
            "(docs/deploy.md), restart it, then deploy again")


class Stager:
    """Stages deployments with this machine's ``[deploy]`` settings, one at a time.

    ``configured`` is False for a cluster's agent whose file has no ``[deploy]`` section:
    it would otherwise stage into a directory of its own data dir that no ingest server
    reads, and call that a success. It says so on the PR instead.
    """

    def __init__(self, config: Config, staging: Callable[[str], Staging] | None = None,
                 *, configured: bool = True) -> None:
        self.config = config
        self.configured = configured
        self._staging = staging or Stagings(config)

    def stage(self, spec: UploadSpec) -> UploadReport:
        """Stage one deployment and say how it went; never raises (a failure is a report:
        transient when the staging area may come back, permanent otherwise)."""
        with log.bound(deployment_id=spec.deployment_id):
            try:
                staged = self._stage(spec)
            except UploadFailed as exc:
                return self._failed(spec, str(exc))
            except StagingError as exc:
                cause = exc.__cause__
                return self._failed(spec, str(exc),
                                    transient=cause is not None and is_transient(cause))
            except Exception as exc:  # signing, metadata, disk: say what, keep the loop
                _log.exception("deployment failed")
                return self._failed(spec, f"{type(exc).__name__}: {exc}")
        outcome = staged.outcome
        _log.info("artifact " + outcome.state, deployment_id=spec.deployment_id,
                  key=outcome.key, bytes=outcome.bytes)
        return UploadReport(attempt=spec.attempt, outcome=outcome.state, key=outcome.key,
                            url=outcome.url)

    def _failed(self, spec: UploadSpec, reason: str, transient: bool = False) -> UploadReport:
        _log.warning("upload interrupted" if transient else "deployment failed",
                     deployment_id=spec.deployment_id, reason=reason)
        return UploadReport(attempt=spec.attempt, outcome="failed", error=reason,
                            transient=transient)

    def _stage(self, spec: UploadSpec) -> StagedArtifact:
        if not self.configured:
            raise UploadFailed(unconfigured(self.config.agent_name))
        path = self.artifact_file(spec)
        deploy = self.config.deploy
        target = staging_target(spec.cpu_target, spec.accelerator)
        key = artifact_key(key_template(deploy, spec.repo_target), spec.artifact.name,
                           repo=spec.repo, pr=spec.pr, repo_target=spec.repo_target,
                           target=target, job=spec.job_id)
        # The namespace is the control plane's instance: one for the fleet, so that
        # `ingest.namespaces` and the sequence check see every agent's builds alike.
        signer = (Signer(deploy.signing_key_file, spec.instance)
                  if deploy.signing_key_file else None)
        info = LayerbotInfo(instance=spec.instance, head_sha=spec.head_sha,
                            base_sha=spec.base_sha, job_id=str(spec.job_id), target=target,
                            repo_target=spec.repo_target, build_time=spec.build_time,
                            uploaded_at=clock.now(), key=key, sequence=spec.job_id)
        link = Link2PR(repo=spec.repo, pr=spec.pr, pr_comment_id=spec.comment_id)
        return stage_artifact(self._staging(spec.repo_target), path, key, link2pr=link,
                              info=info, signer=signer, sha256=spec.artifact.sha256)

    def artifact_file(self, spec: UploadSpec) -> Path:
        """The artifact, checked: inside this machine's job directories, a regular file,
        and still what the job reported (sha256).

        The control plane names the file; an agent trusts it with no more than its jobs'
        directories, so a control plane (or a job's symlink) cannot have it sign and
        publish the agent's own token or key."""
        path = Path(spec.artifact.path)
        try:
            real = path.resolve(strict=True)
        except OSError:
            raise UploadFailed(f"the artifact {path} is gone (was the job directory "
                               "archived or removed?)") from None
        if not real.is_relative_to(self.config.jobs_dir.resolve()):
            raise UploadFailed(f"the artifact {path} is not in a job directory of "
                               f"{self.config.agent_name} ({self.config.jobs_dir})")
        if path.is_symlink() or not real.is_file():
            raise UploadFailed(f"the artifact {path} is not a regular file any more")
        # What the job reported is what gets deployed: a file changed since is refused.
        if file_sha256(real) != spec.artifact.sha256:
            raise UploadFailed(f"the artifact {spec.artifact.name} changed since its job "
                               f"recorded it (sha256 {spec.artifact.sha256[:12]}…); rebuild "
                               "to deploy it")
        return real

