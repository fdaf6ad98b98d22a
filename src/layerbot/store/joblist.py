"""The job list: one query behind `GET /api/jobs`, the dashboard's jobs and `layerbot jobs`.

The query is SQL text, not a SQLAlchemy expression, so that it runs on two kinds of
connection. The bot runs it on its store's SQLAlchemy connection (``list_jobs``), like every
other query. `layerbot jobs` on a SQLite store runs it on a connection of the standard
library's ``sqlite3`` (``list_jobs_sqlite``): importing SQLAlchemy alone takes longer than
the whole command may (issue 10: under 0.3 s), and so would the ORM models, the migrations
and the configuration's models. Both hand back the driver's own values (on SQLite, times are
text), which one function turns into the same ``JobSummary`` the models used to give:
``tests/store/test_joblist.py`` compares them with the ORM's, job by job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from layerbot.config_file import SQLITE_PREFIX

if TYPE_CHECKING:
    from layerbot.store.db import Store

MAX_PAGE = 200
#: The repositories a reader may see; None: all (see web/auth.py ``readable``).
Visible = frozenset[str] | None
#: Runs SQL with named parameters and returns the rows.
Run = Callable[[str, dict[str, Any]], Iterable[Sequence[Any]]]


class _Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobSummary(_Model):
    id: int
    build_id: int
    instance: str
    repo: str
    pr: int | None
    target: str
    repo_target: str
    node_type: str
    state: str
    reason: str | None
    head_sha: str
    backend_id: str | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    elapsed_seconds: float | None
    cpus: int | None
    core_hours: float | None
    redo_of: int | None
    cancel_requested: bool
    #: The agent that holds (or held) the job's lease, and its cluster (None: none yet).
    agent: str | None = None
    cluster: str | None = None


class JobPage(_Model):
    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int


#: The columns of ``jobs`` a summary shows, in the model's order.
COLUMNS = tuple(JobSummary.model_fields)
#: What is not a column of ``jobs``: the cluster is its agent's (as ``Job.cluster`` reads it).
_COMPUTED = {"cluster": "(SELECT agents.cluster FROM agents WHERE agents.name = jobs.agent)"}
_SELECT = ", ".join(f"{_COMPUTED[c]} AS {c}" if c in _COMPUTED else f"jobs.{c}"
                    for c in COLUMNS)
_TIMES = frozenset(name for name, field in JobSummary.model_fields.items()
                   if field.annotation in (datetime, datetime | None))


@dataclass(frozen=True)
class JobFilter:
    """Which jobs: all of these that are given; ``target`` is a part of the target name."""

    state: Sequence[str] = ()
    target: str | None = None
    repo: str | None = None
    pr: int | None = None
    instance: str | None = None
    visible: Visible = None
    agent: str | None = None


def list_jobs(store: Store, *, state: Sequence[str] = (), target: str | None = None,
              repo: str | None = None, pr: int | None = None, instance: str | None = None,
              limit: int = 50, offset: int = 0, visible: Visible = None,
              agent: str | None = None) -> JobPage:
    """Jobs, newest first; ``target`` matches a part of the target name."""
    where = JobFilter(state, target, repo, pr, instance, visible, agent)
    with store.read() as session:
        connection = session.connection()
        style = "pyformat" if connection.dialect.paramstyle == "pyformat" else "named"

        def run(sql: str, params: dict[str, Any]) -> Iterable[Sequence[Any]]:
            return connection.exec_driver_sql(sql, params).all()

        return read_page(run, style, where, limit, offset)


def list_jobs_sqlite(path: Path, where: JobFilter, limit: int = 50,
                     offset: int = 0) -> JobPage:
    """``list_jobs`` on a SQLite file, through ``sqlite3`` alone (see the module's doc).

    Read-only and without migrations: a store whose ``jobs`` table lacks a column raises
    ``sqlite3.Error``, and the caller opens the store in full (which migrates it)."""
    # timeout: wait for a writer's lock as the bot's own readers do (store/db.py).
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.execute("BEGIN")  # count and rows from one snapshot
        return read_page(lambda sql, params: connection.execute(sql, params).fetchall(),
                         "named", where, limit, offset)
    finally:
        connection.close()


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL; None for any other URL."""
    if not url.startswith(SQLITE_PREFIX) or "?" in url:
        return None
    path = url[len(SQLITE_PREFIX):]
    return Path(path) if path and not path.startswith(":memory:") else None


def read_page(run: Run, style: str, where: JobFilter, limit: int, offset: int) -> JobPage:
    """One page of jobs, newest first, and how many there are in all."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    condition, params = _where(where, style)
    count = run(f"SELECT count(id) FROM jobs WHERE {condition}", params)
    total = next(iter(count))[0] or 0
    rows = run(f"SELECT {_SELECT} FROM jobs WHERE {condition} "
               f"ORDER BY id DESC LIMIT {_mark('limit', style)} OFFSET {_mark('offset', style)}",
               {**params, "limit": limit, "offset": offset})
    return JobPage(jobs=[summary(row) for row in rows], total=total, limit=limit,
                   offset=offset)


def summary(row: Sequence[Any]) -> JobSummary:
    """A row of ``COLUMNS`` as the driver gives it, as the ORM's column types would read it."""
    values = dict(zip(COLUMNS, row, strict=True))
    for name in _TIMES:
        values[name] = _utc(values[name])
    return JobSummary.model_validate(values)


def _utc(value: datetime | str | None) -> datetime | None:
    # As store.models.UTCDateTime: SQLite keeps text without a zone, which is UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _where(where: JobFilter, style: str) -> tuple[str, dict[str, Any]]:
    """The condition (never empty: ``1 = 1`` for all jobs) and its parameters."""
    parts: list[str] = []
    params: dict[str, Any] = {}

    def among(column: str, values: Sequence[Any]) -> None:
        names = [f"{column}_{i}" for i in range(len(values))]
        params.update(zip(names, values, strict=True))
        marks = ", ".join(_mark(n, style) for n in names)
        parts.append(f"{column} IN ({marks})" if names else "1 = 0")

    def equal(column: str, value: Any) -> None:
        params[column] = value
        parts.append(f"{column} = {_mark(column, style)}")

    if where.visible is not None:
        among("repo", sorted(where.visible))
    if where.state:
        among("state", list(where.state))
    if where.target:
        # A part of the name, taken literally: % and _ are escaped (as SQLAlchemy's
        # ``contains(..., autoescape=True)`` does).
        escaped = where.target.replace("/", "//").replace("%", "/%").replace("_", "/_")
        params["target"] = f"%{escaped}%"
        parts.append(f"target LIKE {_mark('target', style)} ESCAPE '/'")
    if where.repo:
        equal("repo", where.repo)
    if where.pr is not None:
        equal("pr", where.pr)
    if where.instance:
        equal("instance", where.instance)
    if where.agent:
        equal("agent", where.agent)
    return " AND ".join(parts) or "1 = 1", params


def _mark(name: str, style: str) -> str:
    """A named parameter: ``:name`` (sqlite3) or ``%(name)s`` (psycopg)."""
    return f"%({name})s" if style == "pyformat" else f":{name}"
