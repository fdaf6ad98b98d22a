"""The job list's SQL reads what the ORM reads, through SQLAlchemy and through sqlite3.

``joblist`` runs one SQL text on two kinds of connection and turns the driver's values into
summaries itself; these tests hold it to the models: the same jobs, in the same order, with
the same values (times with their zone, flags as booleans, the cluster of the job's agent),
for every filter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from layerbot import config as config_mod
from layerbot.config_file import quick_store_url
from layerbot.store.db import Store
from layerbot.store.joblist import (
    MAX_PAGE,
    JobFilter,
    JobPage,
    JobSummary,
    list_jobs,
    list_jobs_sqlite,
    sqlite_file,
)
from layerbot.store.models import Agent, Job
from tests.support.jobrows import seed_jobs

REPO = "EESSI/software-layer"
OTHER = "other/repo"

FILTERS = [
    JobFilter(),
    JobFilter(state=("failed", "running")),
    JobFilter(state=("exploded",)),
    JobFilter(target="zen"),
    JobFilter(target="amd/zen4"),
    JobFilter(target="zen%"),  # taken literally: no LIKE wildcards
    JobFilter(target="zen_"),
    JobFilter(target="_v1"),
    JobFilter(repo=OTHER),
    JobFilter(pr=3),
    JobFilter(instance="other"),
    JobFilter(state=("succeeded",), repo=REPO, instance="bench"),
    JobFilter(visible=frozenset()),
    JobFilter(visible=frozenset({OTHER})),
    JobFilter(visible=frozenset({REPO, OTHER}), target="sapphire"),
    JobFilter(agent="a-1"),
    JobFilter(agent="gone", state=("running", "succeeded")),
    JobFilter(agent="nobody"),
]
PAGES = [(50, 0), (5, 0), (7, 13), (10_000, 0), (3, -4), (0, 1000)]


def _seed(store: Store) -> None:
    seed_jobs(store, 40, repo=REPO, instance="bench")
    seed_jobs(store, 17, repo=OTHER, instance="other")
    _lease(store)


def _lease(store: Store) -> None:
    """Jobs held by two agents of two clusters, by an agent no longer in the table (no
    cluster), and by none."""
    at = datetime(2026, 11, 2, tzinfo=UTC)
    with store.transaction() as s:
        for name, cluster in (("a-1", "cluster-a"), ("b-1", "cluster-b")):
            s.add(Agent(name=name, cluster=cluster, created_by="t", created_at=at))
        s.flush()
        for i, agent in enumerate(("a-1", "b-1", "gone")):
            s.execute(update(Job).where(Job.id % 4 == i).values(agent=agent))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    _seed(store)
    yield store
    store.close()


def test_jobs_show_their_agent_and_its_cluster(store: Store) -> None:
    jobs = _listed(store, JobFilter(), MAX_PAGE, 0).jobs
    where = {(j.agent, j.cluster) for j in jobs}
    assert where == {("a-1", "cluster-a"), ("b-1", "cluster-b"), ("gone", None), (None, None)}


def _orm_page(store: Store, where: JobFilter, limit: int, offset: int) -> JobPage:
    """The page as the ORM's models read it, filtered in Python."""
    with store.read() as s:
        jobs = [JobSummary.model_validate(j)
                for j in s.scalars(select(Job).order_by(Job.id.desc()))]
    kept = [j for j in jobs if _matches(j, where)]
    limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
    return JobPage(jobs=kept[offset:offset + limit], total=len(kept), limit=limit,
                   offset=offset)


def _matches(job: JobSummary, where: JobFilter) -> bool:
    return ((where.visible is None or job.repo in where.visible)
            and (not where.state or job.state in where.state)
            and (not where.target or where.target in job.target)
            and where.repo in (None, job.repo) and where.pr in (None, job.pr)
            and where.instance in (None, job.instance) and where.agent in (None, job.agent))


def _listed(store: Store, where: JobFilter, limit: int, offset: int) -> JobPage:
    return list_jobs(store, state=where.state, target=where.target, repo=where.repo,
                     pr=where.pr, instance=where.instance, limit=limit, offset=offset,
                     visible=where.visible, agent=where.agent)


@pytest.mark.parametrize("where", FILTERS, ids=repr)
def test_the_list_is_what_the_models_read(store: Store, where: JobFilter) -> None:
    for limit, offset in PAGES:
        page = _listed(store, where, limit, offset)
        assert page == _orm_page(store, where, limit, offset), (limit, offset)
    assert all(j.created_at.utcoffset() is not None for j in _listed(store, where, 50, 0).jobs)


def test_the_sqlite_reader_answers_as_the_store(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = Store(f"sqlite:///{path}")
    _seed(store)
    for where in FILTERS:
        for limit, offset in PAGES:
            fast = list_jobs_sqlite(path, where, limit, offset)
            assert fast == _listed(store, where, limit, offset), (where, limit, offset)
            # The JSON that `layerbot jobs --json` prints, to the character.
            assert fast.model_dump_json() == _orm_page(store, where, limit,
                                                       offset).model_dump_json()
    store.close()


def test_a_file_without_the_jobs_table_is_left_to_the_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with pytest.raises(sqlite3.Error):
        list_jobs_sqlite(path, JobFilter())


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:////var/lib/layerbot/layerbot.db", "/var/lib/layerbot/layerbot.db"),
    ("sqlite:///relative.db", "relative.db"),
    ("sqlite:///:memory:", None),
    ("sqlite:///bot.db?timeout=5", None),
    ("sqlite+pysqlite:////x.db", None),
    ("postgresql+psycopg://u@localhost/layerbot", None),
])
def test_only_a_plain_sqlite_url_is_read_directly(url: str, path: str | None) -> None:
    assert sqlite_file(url) == (Path(path) if path else None)


@pytest.mark.parametrize("toml", [
    "",
    '[store]\nurl = "sqlite:///rel/bot.db"\n',
    '[store]\nurl = "sqlite:////abs/bot.db"\n',
    '[store]\nurl = "postgresql+psycopg://u@localhost/layerbot"\n',
    '[instance]\ndata_dir = "data"\n',
    '[instance]\nname = "a"\ndata_dir = "/srv/layerbot"\n[store]\nurl = ""\n',
], ids=["defaults", "relative-url", "absolute-url", "postgres", "data-dir", "empty-url"])
def test_the_quick_store_url_is_the_loaded_one(tmp_path: Path, toml: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conf" / "layerbot.toml"
    config.parent.mkdir()
    config.write_text(toml)
    assert quick_store_url(config) == config_mod.load(config).store_url
    monkeypatch.setenv("LAYERBOT_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    assert quick_store_url(None) == config_mod.load(None).store_url


@pytest.mark.parametrize("toml", ["[store\n", "store = 3\n", '[instance]\ndata_dir = 7\n'])
def test_a_file_only_a_full_load_can_judge_gets_no_quick_answer(tmp_path: Path,
                                                                toml: str) -> None:
    config = tmp_path / "layerbot.toml"
    config.write_text(toml)
    assert quick_store_url(config) is None
    assert quick_store_url(tmp_path / "missing.toml") is None
