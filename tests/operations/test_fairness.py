"""Fair claims on a real store (SQLite and PostgreSQL): round-robin by PR, the priority
label first, and the caps per PR and per target."""

from __future__ import annotations

from typing import Any

import pytest

from layerbot import clock
from layerbot.config import Config, load
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.store.db import Store
from layerbot.store.models import Job
from tests.operations.test_leases import add_agent, claim


def config(**pipelines: Any) -> Config:
    return load(None, overrides={
        "fleet": {"builtin_agent": False, "heartbeat_seconds": 1, "lease_seconds": 10},
        "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
                       {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}],
        "pipelines": pipelines})


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url)


def queue(store: Store, cfg: Config, pr: int, count: int, priority: int = 0,
          node: str = "zen2") -> list[int]:
    nt = next(n for n in cfg.node_types if n.name == node)
    target = PlannedTarget(nt, cfg.repo_targets[0], nt.cpu_target, None, nt.cpu_target)
    request = BuildRequest(repo="o/r", pr=pr, installation_id=None, head_sha="a" * 40,
                           base_ref="main", clone_url="-", command="t", requested_by="t",
                           priority=priority)
    with store.transaction() as s:
        return [j.id for j in record_build(s, cfg, request, [target] * count, clock.now())[1]]


def prs(store: Store, ids: list[int]) -> list[int | None]:
    with store.read() as s:
        return [s.get(Job, i).pr for i in ids]  # type: ignore[union-attr]


def test_a_big_pr_does_not_take_every_slot_before_a_small_one(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"], concurrency=4)
    queue(store, cfg, pr=1, count=20)
    (small,) = queue(store, cfg, pr=2, count=1)
    got = claim(store, cfg, "alpha", slots=4)
    assert small in got and prs(store, got).count(1) == 3


def test_the_pr_holding_fewest_jobs_is_served_first(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"], concurrency=5)
    big = queue(store, cfg, pr=1, count=20)
    assert claim(store, cfg, "alpha", slots=4) == big[:4]
    (small,) = queue(store, cfg, pr=2, count=1)
    assert claim(store, cfg, "alpha", slots=1) == [small]  # one slot: the next job is its


def test_the_priority_label_goes_first(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "alpha", ["zen2"], concurrency=2)
    queue(store, cfg, pr=1, count=5)
    urgent = queue(store, cfg, pr=3, count=2, priority=1)
    assert sorted(claim(store, cfg, "alpha", slots=2)) == urgent


def test_caps_per_pr_and_per_target(store: Store) -> None:
    cfg = config(max_active_per_pr=3, max_active_per_target=2)
    add_agent(store, cfg, "alpha", ["zen2", "zen3"], concurrency=50)
    zen2 = queue(store, cfg, pr=1, count=5)
    zen3 = queue(store, cfg, pr=1, count=5, node="zen3")
    got = claim(store, cfg, "alpha", slots=50)
    assert len(got) == 3 and len(set(got) & set(zen2)) == 2 and set(got) & set(zen3)
    assert claim(store, cfg, "alpha", slots=50) == []  # the PR holds its three
