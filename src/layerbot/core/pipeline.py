"""Pipelines: a target's build as steps with dependencies, and the rules over them.

Pure: the plan a plan script wrote is parsed and validated here (it is hostile input: size,
schema, ids, cycles and resources are checked before anything is recorded), and the graph
questions the control plane and the reports ask (what a failure cancels, which steps are
ready, the critical path, the progress of a target) are answered from plain mappings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from layerbot.core.slurm_options import normalize_key, option_problems

PLAN_VERSION = 1
#: Where a plan script writes its plan, relative to the job directory ($LAYERBOT_PLAN_FILE).
PLAN_FILE = "plan.json"
#: Where a step leaves its artifact, relative to its job directory ($LAYERBOT_STEP_OUTPUT).
STEP_OUTPUT = "step-output"
#: How an agent begins the reason of a step it could not start because the staged artifact
#: of a step it needs (a cached step built by another agent) could not be fetched; followed
#: by that job's id. `bot: rebuild failed` builds such a step again on the agent.
UNFETCHED = "could not fetch the staged artifact of job "
#: The needed steps' artifact directories, relative to the job directory.
NEEDS_FILE = "cfg/needs.json"

K = TypeVar("K", str, int)

STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class StepResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_minutes: int | None = Field(default=None, gt=0)
    cpus: int | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    #: Batch options (sbatch long names), only those the site lets commands override.
    options: dict[str, str] = {}

    def batch_options(self) -> dict[str, str]:
        """As sbatch options: the plan's own keys normalized, then cpus and memory."""
        out = {normalize_key(k): v for k, v in self.options.items()}
        if self.cpus is not None:
            out["cpus"] = str(self.cpus)  # both backends read it (Slurm: --cpus-per-task)
        if self.memory_mb is not None:
            out["mem"] = f"{self.memory_mb}M"
        return out


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    command: str = Field(min_length=1, max_length=4096)
    needs: list[str] = Field(default=[], max_length=200)
    resources: StepResources = StepResources()
    cache_key: str | None = Field(default=None, min_length=1, max_length=200)

    @property
    def title(self) -> str:
        return self.name or self.id


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    #: No steps: nothing to build for this target (e.g. nothing it needs is missing).
    steps: list[PlanStep] = Field(default=[])

    def step(self, step_id: str) -> PlanStep:
        return next(s for s in self.steps if s.id == step_id)

    def needs(self) -> dict[str, list[str]]:
        return {s.id: list(s.needs) for s in self.steps}


@dataclass(frozen=True)
class PlanLimits:
    max_steps: int = 50
    max_bytes: int = 64 * 1024
    max_time_minutes: float = 24 * 60
    max_cpus: int | None = None
    max_memory_mb: int | None = None
    #: Batch options a plan may set (the site's backend.slurm.overridable).
    overridable: tuple[str, ...] = ()


class PlanError(ValueError):
    """What is wrong with a plan, each problem a sentence for the PR."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid plan: " + "; ".join(self.problems))


def parse_plan(raw: bytes, limits: PlanLimits) -> Plan:
    """The plan in ``raw`` (the plan file's bytes), or PlanError saying what is wrong."""
    if len(raw) > limits.max_bytes:
        raise PlanError([f"the plan is {len(raw):,} bytes; at most {limits.max_bytes:,} "
                         "are read"])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PlanError([f"the plan is not JSON: {exc}"]) from None
    if isinstance(data, dict) and isinstance(data.get("steps"), list) \
            and len(data["steps"]) > limits.max_steps:
        raise PlanError([f"the plan has {len(data['steps'])} steps; at most "
                         f"{limits.max_steps} are allowed (pipelines.max_steps)"])
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError([_say(e) for e in exc.errors()[:10]]) from None
    if problems := plan_problems(plan, limits):
        raise PlanError(problems)
    return plan


def _say(error: Mapping[str, object]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))  # type: ignore[attr-defined]
    return f"{where or 'the plan'}: {error.get('msg')}"


def plan_problems(plan: Plan, limits: PlanLimits) -> list[str]:
    """Everything wrong with a well-formed plan: ids, needs, cycles, resources."""
    problems: list[str] = []
    if len(plan.steps) > limits.max_steps:
        problems.append(f"the plan has {len(plan.steps)} steps; at most {limits.max_steps} "
                        "are allowed (pipelines.max_steps)")
    seen: set[str] = set()
    for step in plan.steps:
        if not STEP_ID.fullmatch(step.id):
            problems.append(f"step id {step.id!r}: use letters, digits, '_', '-' and '.' "
                            "(starting with a letter or digit), at most 64")
        if step.id in seen:
            problems.append(f"step id {step.id!r} is used twice")
        seen.add(step.id)
    for step in plan.steps:
        for need in step.needs:
            if need == step.id:
                problems.append(f"step {step.id!r} needs itself")
            elif need not in seen:
                problems.append(f"step {step.id!r} needs {need!r}, which is not in the plan")
        problems += _resource_problems(step, limits)
    if not problems and (cycle := find_cycle(plan.needs())):
        problems.append("the steps' needs form a cycle: " + " -> ".join(cycle))
    return problems


def _resource_problems(step: PlanStep, limits: PlanLimits) -> list[str]:
    r = step.resources
    out = []
    if r.time_minutes is not None and r.time_minutes > limits.max_time_minutes:
        out.append(f"step {step.id!r} asks for {r.time_minutes} minutes; the site allows "
                   f"{limits.max_time_minutes:g} (build.time_limit_minutes)")
    if r.cpus is not None and limits.max_cpus is not None and r.cpus > limits.max_cpus:
        out.append(f"step {step.id!r} asks for {r.cpus} CPUs; the site allows "
                   f"{limits.max_cpus} (pipelines.max_cpus)")
    if r.memory_mb is not None and limits.max_memory_mb is not None \
            and r.memory_mb > limits.max_memory_mb:
        out.append(f"step {step.id!r} asks for {r.memory_mb} MB; the site allows "
                   f"{limits.max_memory_mb} (pipelines.max_memory_mb)")
    allowed = {normalize_key(k) for k in limits.overridable}
    for key in r.options:
        if normalize_key(key) not in allowed:
            out.append(f"step {step.id!r}: the batch option {key!r} is not one the site "
                       f"lets builds set (backend.slurm.overridable: "
                       f"{', '.join(sorted(allowed)) or 'none'})")
    out += [f"step {step.id!r}: {p}" for p in option_problems(r.options, long_names=True)]
    return out


# --- the graph ------------------------------------------------------------------------------

def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among the steps (its ids, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in needs:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(needs.get(root, ()))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child):], child]
            elif not state.get(child) and child in needs:
                state[child] = 1
                path.append(child)
                stack.append(iter(needs[child]))
    return None


def topological_order(needs: Mapping[K, Sequence[K]]) -> list[K]:
    """Every step after all it needs; among ready steps, in the plan's order (stable)."""
    order: list[K] = []
    done: set[K] = set()
    pending = list(needs)
    while pending:
        ready = [s for s in pending if all(n in done or n not in needs for n in needs[s])]
        if not ready:
            raise ValueError("the steps' needs form a cycle")
        order += ready
        done.update(ready)
        pending = [s for s in pending if s not in done]
    return order


def dependents(needs: Mapping[K, Sequence[K]], of: Iterable[K]) -> set[K]:
    """Every step that needs one of ``of``, directly or through other steps."""
    needed_by: dict[K, list[K]] = {}
    for step, wants in needs.items():
        for w in wants:
            needed_by.setdefault(w, []).append(step)
    out: set[K] = set()
    todo = list(of)
    while todo:
        for child in needed_by.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def critical_path(needs: Mapping[K, Sequence[K]],
                  seconds: Mapping[K, float]) -> tuple[list[K], float]:
    """The chain of steps with the longest total duration (``seconds`` per step; a step
    without a figure counts 0; among equal ones the chain of more steps), and that total."""
    best: dict[K, tuple[float, int, K | None]] = {}
    for step in topological_order(needs):
        before = max(((best[n][0], best[n][1], n) for n in needs[step] if n in best),
                     default=None)
        total, length = (before[0], before[1]) if before else (0.0, 0)
        best[step] = (total + seconds.get(step, 0.0), length + 1, before[2] if before else None)
    if not best:
        return [], 0.0
    end = max(best, key=lambda s: best[s][:2])
    path: list[K] = []
    at: K | None = end
    while at is not None:
        path.append(at)
        at = best[at][2]
    return path[::-1], best[end][0]


def need_variable(step_id: str) -> str:
    """The environment variable holding a needed step's artifact directory."""
    return "LAYERBOT_NEED_" + re.sub(r"[^A-Z0-9]", "_", step_id.upper())


# --- progress, as the reports show it -------------------------------------------------------

class StepStatus(StrEnum):
    DONE = "done"
    REUSED = "reused"
    RUNNING = "running"
    WAITING = "waiting"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in {StepStatus.DONE, StepStatus.REUSED, StepStatus.FAILED,
                        StepStatus.CANCELLED}


@dataclass(frozen=True)
class Progress:
    """How far a target's pipeline is: steps by status, and its critical path."""

    counts: Mapping[StepStatus, int]
    critical_path: list[str]
    critical_seconds: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        return all(s.final for s, n in self.counts.items() if n)

    def summary(self) -> str:
        """E.g. ``3/5 done (1 reused), 1 running, 1 waiting``."""
        done = self.counts.get(StepStatus.DONE, 0) + self.counts.get(StepStatus.REUSED, 0)
        parts = [f"{done}/{self.total} done"
                 + (f" ({n} reused)" if (n := self.counts.get(StepStatus.REUSED, 0)) else "")]
        for status in (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.FAILED,
                       StepStatus.CANCELLED):
            if n := self.counts.get(status, 0):
                parts.append(f"{n} {status}")
        return ", ".join(parts)


def progress(statuses: Mapping[str, StepStatus], needs: Mapping[str, Sequence[str]],
             seconds: Mapping[str, float]) -> Progress:
    counts: dict[StepStatus, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    path, total = critical_path({s: needs.get(s, []) for s in statuses}, seconds)
    return Progress(counts, path, total)
