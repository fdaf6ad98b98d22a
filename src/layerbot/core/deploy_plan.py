"""Which artifacts a deploy request ships: a pure function of the PR's jobs, their
artifacts, the deployments so far, the PR's head *now* and the policy.

Shared by ``bot: deploy``, the deploy label (``handlers/deploy.py``) and the control
center's deploy action (``control/actions.py``), so all three pick the same artifacts:

* only artifacts of succeeded jobs built from the current head (``force job:ID``: that
  job even if it failed, still only at the current head);
* ``all``: every such job; ``latest``: the newest such job per (target, repository
  target); ``once``: like latest, but never again for a target deployed before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from layerbot.core.commands import BuildFilters, accel_matches, pattern_matches
from layerbot.core.deployments import DeploymentState

Policy = Literal["all", "latest", "once"]
#: Job states whose artifacts ``force job:ID`` may ship.
FORCEABLE = ("succeeded", "failed")


@dataclass(frozen=True)
class JobView:
    id: int
    state: str
    head_sha: str
    cpu_target: str
    accelerator: str | None
    repo_target: str
    #: How the PR shows the target (``x86_64/amd/zen2 + nvidia/cc80``).
    label: str = ""

    @property
    def slot(self) -> tuple[str, str | None, str]:
        """What "the same target" means for the latest and once policies."""
        return self.cpu_target, self.accelerator, self.repo_target


@dataclass(frozen=True)
class ArtifactView:
    id: int
    job_id: int
    name: str
    size: int = 0


@dataclass(frozen=True)
class DeploymentView:
    artifact_id: int
    job_id: int
    state: str


@dataclass(frozen=True)
class Pick:
    job: JobView
    artifact: ArtifactView


@dataclass(frozen=True)
class Plan:
    #: Artifacts never deployed: new queued deployments.
    new: tuple[Pick, ...] = ()
    #: Artifacts whose deployment failed: queued again.
    retry: tuple[Pick, ...] = ()
    #: Artifacts deployed (or on their way) already, with their state: nothing to do.
    already: tuple[tuple[Pick, str], ...] = ()
    #: Jobs not deployed, and why.
    left_out: tuple[tuple[JobView, str], ...] = ()
    #: Set when the request itself cannot be followed (force of an unknown job, ...).
    refusal: str | None = None

    @property
    def queued(self) -> tuple[Pick, ...]:
        return self.new + self.retry


def job_selected(filters: BuildFilters, job: JobView) -> bool:
    """The build command's meaning of the filters, applied to a job that was built:
    ``for:arch=X`` alone is a CPU-only target; the older ``arch:``/``accel:`` take any."""
    if filters.repo is not None and not pattern_matches(filters.repo, job.repo_target):
        return False
    if filters.for_arch is not None and not pattern_matches(filters.for_arch, job.cpu_target):
        return False
    if filters.for_accel is not None:
        # accel_matches: a `+`-joined list selects the job built for that same list.
        return job.accelerator is not None and accel_matches(filters.for_accel,
                                                             job.accelerator)
    return filters.legacy or filters.for_arch is None or job.accelerator is None


def plan_deploy(jobs: Sequence[JobView], artifacts: Sequence[ArtifactView],
                deployments: Sequence[DeploymentView], *, head_sha: str, policy: Policy,
                filters: BuildFilters = BuildFilters(),
                force_job: int | None = None) -> Plan:
    """What a deploy request ships. Pure: everything it needs comes in as arguments."""
    if force_job is not None:
        chosen, left_out, refusal = _forced(jobs, artifacts, head_sha, force_job)
        if refusal is not None:
            return Plan(refusal=refusal)
    else:
        chosen, left_out = _chosen(jobs, deployments, head_sha, policy, filters)
    return _split(chosen, artifacts, deployments, left_out)


def _forced(jobs: Sequence[JobView], artifacts: Sequence[ArtifactView], head_sha: str,
            job_id: int) -> tuple[list[JobView], list[tuple[JobView, str]], str | None]:
    job = next((j for j in jobs if j.id == job_id), None)
    if job is None:
        return [], [], f"this pull request has no job {job_id} on this instance"
    if job.head_sha != head_sha:
        return [], [], (f"job {job_id} built `{job.head_sha[:12]}`, not the current head "
                        f"`{head_sha[:12]}`: artifacts of older commits are never deployed")
    if job.state not in FORCEABLE:
        return [], [], f"job {job_id} is {job.state}: only a finished job can be deployed"
    if not any(a.job_id == job_id for a in artifacts):
        return [], [], f"job {job_id} left no artifacts"
    return [job], [], None


def _chosen(jobs: Sequence[JobView], deployments: Sequence[DeploymentView], head_sha: str,
            policy: Policy, filters: BuildFilters
            ) -> tuple[list[JobView], list[tuple[JobView, str]]]:
    left_out: list[tuple[JobView, str]] = []
    eligible: list[JobView] = []
    for job in sorted(jobs, key=lambda j: j.id):
        if not job_selected(filters, job):
            continue  # not asked for: not worth a line in the reply
        if job.head_sha != head_sha:
            left_out.append((job, f"built `{job.head_sha[:12]}`, an older commit"))
        elif job.state != "succeeded":
            left_out.append((job, f"{job.state} (`force job:{job.id}` ships it anyway)"))
        else:
            eligible.append(job)
    if policy == "all":
        return eligible, left_out
    newest: dict[tuple[str, str | None, str], JobView] = {}
    for job in eligible:  # ascending ids: the last one per slot is the newest
        newest[job.slot] = job
    left_out += [(j, f"job {newest[j.slot].id} is newer (policy latest)")
                 for j in eligible if newest[j.slot] is not j]
    chosen = list(newest.values())
    if policy == "once":
        chosen, skipped = _not_deployed_before(chosen, jobs, deployments)
        left_out += skipped
    return chosen, left_out


def _not_deployed_before(chosen: list[JobView], jobs: Sequence[JobView],
                         deployments: Sequence[DeploymentView]
                         ) -> tuple[list[JobView], list[tuple[JobView, str]]]:
    """Policy once: a target with a deployment of another job (that did not fail) is done."""
    by_id = {j.id: j for j in jobs}
    deployed: dict[tuple[str, str | None, str], int] = {}
    for d in deployments:
        job = by_id.get(d.job_id)
        if job is not None and d.state != DeploymentState.FAILED:
            deployed.setdefault(job.slot, job.id)
    keep, skipped = [], []
    for job in chosen:
        earlier = deployed.get(job.slot)
        if earlier is not None and earlier != job.id:
            skipped.append((job, f"job {earlier} was deployed for this target (policy once)"))
        else:
            keep.append(job)
    return keep, skipped


def _split(chosen: Sequence[JobView], artifacts: Sequence[ArtifactView],
           deployments: Sequence[DeploymentView], left_out: list[tuple[JobView, str]]) -> Plan:
    state_of = {d.artifact_id: d.state for d in deployments}
    new: list[Pick] = []
    retry: list[Pick] = []
    already: list[tuple[Pick, str]] = []
    for job in chosen:
        mine = [a for a in artifacts if a.job_id == job.id]
        if not mine:
            left_out.append((job, "left no artifacts"))
        for artifact in sorted(mine, key=lambda a: a.id):
            pick, state = Pick(job, artifact), state_of.get(artifact.id)
            if state is None:
                new.append(pick)
            elif state == DeploymentState.FAILED:
                retry.append(pick)
            else:
                already.append((pick, state))
    return Plan(tuple(new), tuple(retry), tuple(already), tuple(left_out))
