"""Which queued jobs a claim looks at first: fair between PRs, within the site's limits.

Without this, jobs were leased in the order they were recorded, so one PR of 50 steps
took every slot of every agent before a one-job PR that came a minute later. Now:

- a PR with the priority label comes first (``Job.priority``);
- then round-robin by PR: the PR holding the fewest active jobs goes first, and within a
  claim for several slots each PR gets one before any gets a second;
- ``pipelines.max_active_per_pr`` and ``max_active_per_target`` cap what one PR, and one
  target of a PR, hold at a time (0: no cap); the agent's own concurrency caps the rest.

The candidates are read oldest first (an index scan), leaving out PRs and targets at their
cap; what their PRs hold is then read for those PRs only, and the round-robin is done here.
A PR is therefore passed over only within the candidates one claim reads
(``CANDIDATES_PER_SLOT`` per slot): with a cap, a PR at its cap is left out in SQL, so a
huge PR cannot fill that window and hide a small one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.store import jobs as jobstore
from layerbot.store.models import Job

#: The jobs table's columns: the statements here are Core, not ORM, so that their rows come
#: back as plain rows without the ORM's loading machinery (a claim runs several).
_JOBS: Table = Job.__table__  # type: ignore[assignment]
_J = _JOBS.c

PrKey = tuple[str, int]
TargetKey = tuple[str, int, str, str]


@dataclass(slots=True)
class Candidate:
    """A queued job a claim may take. Plain slots, set in place once its PR's holdings are
    read: a claim makes 64 and more of them, and a frozen dataclass's construction and
    ``replace`` cost it half a millisecond."""

    id: int
    node_type: str
    repo_target: str
    agent_filter: str | None
    pinned_agent: str | None
    priority: int
    pr: PrKey
    target: TargetKey
    #: Active jobs the PR, and this target of it, hold now (leased to any agent).
    held_by_pr: int
    held_by_target: int


def claimable(agent_name: str | BindParameter[str]) -> tuple[ColumnElement[bool], ...]:
    """Queued jobs no agent holds, that this agent may take: a pipeline's step only on the
    agent that ran its plan (its needs' artifacts are there), and never a step that waits
    for another job's artifact (it ends as that job ends)."""
    return (_J.state == JobState.QUEUED.value, _J.agent.is_(None), _J.reused_from.is_(None),
            or_(_J.pinned_agent.is_(None), _J.pinned_agent == agent_name))


def candidates(session: Session, config: Config, agent_name: str,
               node_types: Sequence[str], limit: int,
               acceptable: Callable[[Candidate], bool] = lambda c: True) -> list[Candidate]:
    """Up to ``limit`` claimable jobs of these node types, oldest first (the priority label
    before), leaving out PRs and targets at their cap; locked for this transaction on
    PostgreSQL (rows another claim locked are skipped). Of those, the ones ``acceptable``
    keeps (the jobs this agent is the one to take), with what each one's PR and target
    hold: :func:`pick` orders them round-robin.

    Why not order by what PRs hold in SQL: that sorts every queued job by an aggregate on
    each claim; with 2,000 queued jobs and 20 agents claiming at once a claim took seconds.
    Why filter before the holdings are read: a claim refused every candidate (another agent
    is less loaded, the usual refusal in a busy fleet) then costs no more statements, and
    the holdings are read only for PRs this agent may serve.
    """
    per_pr, per_target = (config.pipelines.max_active_per_pr,
                          config.pipelines.max_active_per_target)
    query = _candidates_statement(session, per_pr, per_target)
    rows = session.execute(query, {"agent": agent_name, "names": list(node_types),
                                   "limit": limit}).all()
    found = [c for c in (_candidate(r) for r in rows) if acceptable(c)]
    prs = {c.pr for c in found}
    # Round-robin ranks a PR's candidates by what it holds plus their order: with one PR
    # (a big PR's steps, the common case of a quiet queue) and no cap, what it holds moves
    # every rank alike, so the read would change nothing.
    if not found or (len(prs) == 1 and not per_pr and not per_target):
        return found
    held_pr = _held(session, _HELD_BY_PR, prs, 2)
    held_target = _held(session, _HELD_BY_TARGET, prs, 4) if per_target else {}
    for c in found:
        c.held_by_pr, c.held_by_target = held_pr.get(c.pr, 0), held_target.get(c.target, 0)
    return found


def _candidates_statement(session: Session, per_pr: int, per_target: int) -> Select[Any]:
    """The candidates' statement: the prebuilt one unless caps are set (the usual case:
    building a statement costs a claim more than running it)."""
    pg = session.get_bind().dialect.name == "postgresql"
    if not per_pr and not per_target:
        return _CANDIDATES_LOCKED if pg else _CANDIDATES
    pr = func.coalesce(_J.pr, 0)
    leased = and_(_J.agent.is_not(None), _J.state.in_(jobstore.ACTIVE))
    at_cap = []
    if per_pr:
        at_cap.append(tuple_(_J.repo, pr).not_in(
            select(_J.repo, pr).where(leased).group_by(_J.repo, pr)
            .having(func.count(_J.id) >= per_pr)))
    if per_target:
        at_cap.append(tuple_(_J.repo, pr, _J.target, _J.repo_target).not_in(
            select(_J.repo, pr, _J.target, _J.repo_target).where(leased)
            .group_by(_J.repo, pr, _J.target, _J.repo_target)
            .having(func.count(_J.id) >= per_target)))
    query = _candidates_query(*at_cap)
    return query.with_for_update(skip_locked=True, of=_JOBS) if pg else query


def _candidate(r: Any) -> Candidate:
    """A candidate from a row of :func:`_candidates_query` (its holdings read later)."""
    key = (r[6], r[7] or 0)
    return Candidate(r[0], r[1], r[2], r[3], r[4], r[5], key, (*key, r[8], r[2]), 0, 0)


def _held(session: Session, query: Select[Any], prs: set[PrKey], width: int
          ) -> dict[Any, int]:
    """Active leased jobs of the PRs ``prs`` by the first ``width`` columns of ``query``
    (:data:`_HELD_BY_PR`, :data:`_HELD_BY_TARGET`), a job without a PR counted as PR 0.

    The statement asks for the repositories and the PR numbers apart, each by the index on
    ``(repo, pr)``: a tuple ``IN`` on ``coalesce(pr, 0)`` could use only ``repo`` of it, and
    read every job of a repository (all 2,000 in the benchmark) on each claim. The
    pairs that were not asked for (another repository's PR of the same number) are
    dropped here."""
    numbers = {n for _, n in prs}
    params = {"repos": sorted({r for r, _ in prs}), "prs": sorted(numbers),
              "no_pr": 0 in numbers}
    held: dict[Any, int] = {}
    for row in session.execute(query, params):
        key = (row[0], row[1] or 0, *row[2:width])
        if key[:2] in prs:
            held[key] = held.get(key, 0) + int(row[width])
    return held


def _candidates_query(*extra: ColumnElement[bool]) -> Select[Any]:
    pr = func.coalesce(_J.pr, 0)
    columns: list[Any] = [_J.id, _J.node_type, _J.repo_target, _J.agent_filter,
                          _J.pinned_agent, _J.priority, _J.repo, pr, _J.target]
    return (select(*columns)
            .where(*claimable(bindparam("agent", type_=String)),
                   _J.node_type.in_(bindparam("names", expanding=True)), *extra)
            .order_by(_J.priority.desc(), _J.id)
            .limit(bindparam("limit", type_=Integer)))


_CANDIDATES = _candidates_query()
_CANDIDATES_LOCKED = _CANDIDATES.with_for_update(skip_locked=True, of=_JOBS)


def _held_query(*columns: Any) -> Select[Any]:
    """Active leased jobs counted by ``repo``, ``pr`` and ``columns``, of the repositories
    ``repos`` and the PR numbers ``prs`` (or no PR, when ``no_pr``): see :func:`_held`."""
    of_prs = or_(_J.pr.in_(bindparam("prs", expanding=True)),
                 and_(bindparam("no_pr", type_=Boolean), _J.pr.is_(None)))
    return (select(_J.repo, _J.pr, *columns, func.count(_J.id))
            .where(_J.agent.is_not(None), _J.state.in_(jobstore.ACTIVE),
                   _J.repo.in_(bindparam("repos", expanding=True)), of_prs)
            .group_by(_J.repo, _J.pr, *columns))


_HELD_BY_PR = _held_query()
_HELD_BY_TARGET = _held_query(_J.target, _J.repo_target)


def warm(session: Session, config: Config) -> None:
    """Run the candidates' and the holdings' statements once (see ``leases.warm``)."""
    candidates(session, config, "", [""], 1)
    _held(session, _HELD_BY_PR, {("", 0)}, 2)
    _held(session, _HELD_BY_TARGET, {("", 0)}, 4)


def pick(found: Sequence[Candidate], wanted: int, config: Config) -> list[int]:
    """Up to ``wanted`` of ``found`` (the candidates the agent may take): round-robin by PR
    (a PR's n-th candidate ranks after every other PR's earlier ones, counting what each
    holds already), within the caps."""
    seen: Counter[PrKey] = Counter()
    ranked = []
    for c in found:
        ranked.append((-c.priority, c.held_by_pr + seen[c.pr], c.id, c))
        seen[c.pr] += 1
    ranked.sort(key=lambda r: r[:3])
    per_pr, per_target = config.pipelines.max_active_per_pr, config.pipelines.max_active_per_target
    took_pr: Counter[PrKey] = Counter()
    took_target: Counter[TargetKey] = Counter()
    taken: list[int] = []
    for *_, c in ranked:
        if per_pr and c.held_by_pr + took_pr[c.pr] >= per_pr:
            continue
        if per_target and c.held_by_target + took_target[c.target] >= per_target:
            continue
        taken.append(c.id)
        took_pr[c.pr] += 1
        took_target[c.target] += 1
        if len(taken) >= wanted:
            break
    return taken
