"""Recording a build, and a redo of jobs: by `bot: build`/`rebuild`, GitHub's Re-run
button (handlers), or the control center's redo. Each records the build, its queued jobs and
the PR report in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from layerbot.config import Config, NodeType
from layerbot.events.reporting import report_build
from layerbot.jobs.planner import BuildRequest, PlannedTarget, planned_from_job, record_build
from layerbot.store.models import Build, Instance, Job

PAUSED_NOTE = ("this instance is paused: the jobs are recorded and will be submitted "
               "when it is resumed")


def paused_note(session: Session, instance: str) -> str | None:
    """The note a build recorded while the instance is paused carries on the PR."""
    inst = session.get(Instance, instance)
    return PAUSED_NOTE if inst is not None and inst.paused else None


def record_and_report(session: Session, config: Config, request: BuildRequest,
                      targets: Sequence[PlannedTarget], now: datetime,
                      redo_of: dict[int, int] | None = None) -> tuple[Build, list[Job]]:
    """The build and its queued jobs, noted if the instance is paused, and its PR reply.

    ``redo_of`` maps a target's index to the job it builds again.
    """
    build, jobs = record_build(session, config, request, list(targets), now, redo_of)
    build.note = paused_note(session, config.instance.name)
    report_build(session, config, build, now, changed=jobs)
    return build, jobs


def redo_targets(config: Config, jobs: Sequence[Job],
                 node_types: Sequence[NodeType] | None = None
                 ) -> tuple[list[PlannedTarget], dict[int, int]]:
    """The targets to build ``jobs`` again, and ``redo_of`` for :func:`record_and_report`;
    a job whose node type no agent of the fleet has any more (``node_types``: the fleet's),
    or whose repository target is no longer configured, is left out."""
    targets: list[PlannedTarget] = []
    redo_of: dict[int, int] = {}
    for job in jobs:
        planned = planned_from_job(config, job, node_types)
        if planned is not None:
            redo_of[len(targets)] = job.id
            targets.append(planned)
    return targets, redo_of
