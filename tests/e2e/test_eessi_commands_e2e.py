"""EESSI's newest command forms through a real `layerbot serve` (local backend, real git):
several accelerators in one job, and `inst:`/`instance:` on every command (issue 10)."""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import Session, start_session
from tests.support.webhooks import DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")
MULTI = "nvidia/cc70+nvidia/cc90+nvidia/cc100+nvidia/cc120"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with start_session(
        tmp_path_factory.mktemp("eessi-commands"), instance="eessi-bot-mc-aws",
        extra={"node_types": [{"name": "zen3-a100", "cpu_target": "x86_64/amd/zen3",
                               "accelerator": "nvidia/cc80"},
                              {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}],
               "repo_targets": [{"id": "eessi.io-2025.06-software",
                                 "name": "software.eessi.io", "version": "2025.06"}]},
    ) as session:
        yield session


def test_several_accelerators_build_in_one_job_on_the_cpu_node(env: Session) -> None:
    env.pr(1)
    env.comment(1, "bot: build repo:eessi.io-2025.06-software instance:eessi-bot-mc-aws "
                   f"on:arch=zen3 for:arch=x86_64/amd/zen3,accel={MULTI}")
    reply = env.build_reply(1)
    assert "1/1 done, 1 succeeded" in reply.body
    [job] = env.jobs(1)
    assert job["node_type"] == "zen3"  # the CPU node on: names, not the cc80 node
    cfg = configparser.ConfigParser()
    cfg.read(Path(job["job_dir"], "cfg", "job.cfg"))
    assert cfg["architecture"]["accelerator"] == MULTI  # as EESSI's bot/build.sh reads it
    assert cfg["architecture"]["software_subdir"] == "x86_64/amd/zen3"


def test_commands_for_another_instance_get_neither_reaction_nor_reply(env: Session) -> None:
    env.pr(2)
    other = env.comment(2, "bot: show_config inst:eessi-bot-surf\nbot: status instance:surf\n"
                           "bot: probe inst:eessi-bot-rug\nbot: help instance:other\n"
                           "bot: build for:arch=x86_64/amd/zen3 instance:eessi-bot-surf")
    mine = env.comment(2, "bot: show_config instance:eessi-bot-mc-aws")
    env.fake.wait_for(lambda: env.fake.reactions(mine) == ["eyes"] and env.replies(2),
                      timeout=30)
    [reply] = env.replies(2)
    assert "This instance can build:" in reply.body
    assert env.fake.reactions(other) == []
    assert env.jobs(2) == []
