# ruff: noqa: E501 -- table rows are whole command lines; they read best unwrapped
"""Which (node type, repository target) pairs a build command selects."""

from __future__ import annotations

import pytest

from layerbot.config import NodeType, RepoTarget
from layerbot.core.commands import BuildFilters, Command, parse_line
from layerbot.core.targets import (
    Selection,
    describe_capabilities,
    select_targets,
    validate_exportvariables,
)

# An EESSI-like cluster: three CPU node types, one GPU node type, an Arm node type.
NODES = [
    NodeType(name="zen2", cpu_target="x86_64/amd/zen2"),
    NodeType(name="zen3", cpu_target="x86_64/amd/zen3"),
    NodeType(name="icelake", cpu_target="x86_64/intel/icelake", repo_targets=["eessi-2023.06"]),
    NodeType(name="zen3-a100", cpu_target="x86_64/amd/zen3", accelerator="nvidia/cc80"),
    NodeType(name="grace", cpu_target="aarch64/neoverse_v2", repo_targets=["eessi-2025.06"]),
]
REPOS = [RepoTarget(id="eessi-2023.06"), RepoTarget(id="eessi-2025.06")]
BOTH = ["eessi-2023.06", "eessi-2025.06"]


def select(line: str, instance: str = "cluster-a") -> Selection:
    command = parse_line(line)
    assert isinstance(command, Command), command
    return select_targets(command.filters, instance, NODES, REPOS)


def pairs(selection: Selection) -> list[tuple[str, str]]:
    return [(t.node_type.name, t.repo_target.id) for t in selection.targets]


# fmt: off
SELECT_CASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("bot: build",
     [("zen2", r) for r in BOTH] + [("zen3", r) for r in BOTH] + [("icelake", "eessi-2023.06")]
     + [("zen3-a100", r) for r in BOTH] + [("grace", "eessi-2025.06")]),
    ("bot: build for:arch=x86_64/amd/zen2", [("zen2", r) for r in BOTH]),
    # A CPU-only target: not the GPU node that has the same CPU.
    ("bot: build for:arch=x86_64-amd-zen3", [("zen3", r) for r in BOTH]),
    ("bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80", [("zen3-a100", r) for r in BOTH]),
    ("bot: build for:arch=x86_64/amd/zen3,accel=nvidia/.*", [("zen3-a100", r) for r in BOTH]),
    ("bot: build for:arch=X86_64/AMD/ZEN2", [("zen2", r) for r in BOTH]),
    ("bot: build for:arch=x86_64/amd/.*", [("zen2", r) for r in BOTH] + [("zen3", r) for r in BOTH]),
    ("bot: build for:arch=x86_64/.* repo:eessi-2023.06",
     [("zen2", "eessi-2023.06"), ("zen3", "eessi-2023.06"), ("icelake", "eessi-2023.06")]),
    ("bot: build repo:eessi-2025.*",
     [("zen2", "eessi-2025.06"), ("zen3", "eessi-2025.06"), ("zen3-a100", "eessi-2025.06"),
      ("grace", "eessi-2025.06")]),
    ("bot: build for:arch=aarch64/neoverse_v2", [("grace", "eessi-2025.06")]),
    # The older syntax: each filter optional, so arch: takes GPU nodes too.
    ("bot: build arch:x86_64/amd/zen3", [("zen3", r) for r in BOTH] + [("zen3-a100", r) for r in BOTH]),
    ("bot: build accel:nvidia/.*", [("zen3-a100", r) for r in BOTH]),
    ("bot: build arch:x86_64-intel-icelake repo:eessi-2023.06", [("icelake", "eessi-2023.06")]),
    ("bot: build inst:cluster-.* for:arch=x86_64/amd/zen2", [("zen2", r) for r in BOTH]),
    # on: equal to for: is no cross build.
    ("bot: build for:arch=x86_64/amd/zen2 on:arch=x86_64/amd/zen2", [("zen2", r) for r in BOTH]),
]
# fmt: on


@pytest.mark.parametrize(("line", "expected"), SELECT_CASES, ids=[c[0] for c in SELECT_CASES])
def test_selection(line: str, expected: list[tuple[str, str]]) -> None:
    selection = select(line)
    assert selection.for_this_instance
    assert pairs(selection) == expected
    assert selection.message is None
    for target in selection.targets:
        assert not target.cross
        assert target.cpu_target == target.build_on == target.node_type.cpu_target
        assert target.accelerator == target.node_type.accelerator


def test_cross_build_for_a_gpu_target_on_a_cpu_node() -> None:
    selection = select(
        "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80 on:arch=x86_64/amd/zen3"
    )
    assert pairs(selection) == [("zen3", r) for r in BOTH]
    for target in selection.targets:
        assert target.node_type.accelerator is None  # built on the CPU node ...
        assert (target.cpu_target, target.accelerator) == ("x86_64/amd/zen3", "nvidia/cc80")
        assert target.build_on == "x86_64/amd/zen3"  # ... for the GPU target
        assert target.cross


def test_cross_build_for_another_cpu() -> None:
    selection = select("bot: build for:arch=x86_64-amd-zen4 on:arch=x86_64-amd-zen3")
    assert pairs(selection) == [("zen3", r) for r in BOTH]
    target = selection.targets[0]
    assert (target.cpu_target, target.accelerator, target.build_on) == (
        "x86_64/amd/zen4",
        None,
        "x86_64/amd/zen3",
    )
    assert target.cross


def test_cross_build_on_a_gpu_node() -> None:
    selection = select(
        "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc90 on:arch=x86_64/amd/zen3,accel=nvidia/cc80"
    )
    assert pairs(selection) == [("zen3-a100", r) for r in BOTH]
    assert all(t.accelerator == "nvidia/cc90" and t.cross for t in selection.targets)


def test_cross_build_on_several_node_types_makes_each_target_once() -> None:
    selection = select("bot: build for:arch=x86_64/amd/zen4 on:arch=x86_64/.*")
    # zen2 (first configured) builds for both repositories; zen3 and icelake add nothing.
    assert pairs(selection) == [("zen2", r) for r in BOTH]


MULTI = "nvidia/cc70+nvidia/cc90+nvidia/cc100+nvidia/cc120"


@pytest.mark.parametrize(
    ("line", "nodes"),
    [
        # EESSI's newest form: on: names a CPU node by the last part of its target.
        (f"bot: build repo:eessi-2025.06 instance:cluster-a on:arch=zen3 for:arch=x86_64/amd/zen3,accel={MULTI}",
         [("zen3", "eessi-2025.06")]),
        # Without on:, a CPU node of the for: target (never the cc80 node of the same CPU).
        (f"bot: build for:arch=x86_64/amd/zen3,accel={MULTI}", [("zen3", r) for r in BOTH]),
        # on: may name a GPU node; it then builds the whole list there.
        (f"bot: build for:arch=x86_64/amd/zen3,accel={MULTI} on:arch=zen3,accel=nvidia/cc80",
         [("zen3-a100", r) for r in BOTH]),
        # Another CPU than the target's, as with one accelerator.
        (f"bot: build for:arch=x86_64/amd/zen3,accel={MULTI} on:arch=amd/zen2",
         [("zen2", r) for r in BOTH]),
    ],
)
def test_several_accelerators_make_one_job_each(line: str, nodes: list[tuple[str, str]]) -> None:
    selection = select(line)
    assert pairs(selection) == nodes
    for target in selection.targets:
        assert (target.cpu_target, target.accelerator) == ("x86_64/amd/zen3", MULTI)
        assert target.build_on == target.node_type.cpu_target and target.cross


def test_several_accelerators_without_a_cpu_node_of_the_target_say_so() -> None:
    selection = select("bot: build for:arch=x86_64/intel/icelake,accel=nvidia/cc70+nvidia/cc90 "
                       "on:arch=zen4")
    assert selection.targets == () and selection.message is not None
    assert "no node type matches" in selection.message


def test_short_on_arch_as_eessi_users_write_it() -> None:
    selection = select("bot: build on:arch=zen2 for:arch=x86_64/amd/zen2,accel=nvidia/cc80")
    assert pairs(selection) == [("zen2", r) for r in BOTH]
    assert all(t.accelerator == "nvidia/cc80" and t.cross for t in selection.targets)


def test_node_types_with_the_same_target_make_one_job() -> None:
    nodes = [*NODES, NodeType(name="zen2-b", cpu_target="x86_64/amd/zen2")]
    filters = BuildFilters(for_arch="x86_64/amd/zen2")
    selection = select_targets(filters, "a", nodes, REPOS)
    assert [t.node_type.name for t in selection.targets] == ["zen2", "zen2"]


def test_another_instance_stays_silent() -> None:
    selection = select("bot: build for:arch=x86_64/amd/zen2 inst:cluster-b")
    assert selection == Selection((), for_this_instance=False, message=None)


def test_instance_pattern_matches_in_full() -> None:
    assert not select("bot: build inst:cluster", instance="cluster-a").for_this_instance
    assert select("bot: build inst:CLUSTER-A", instance="cluster-a").for_this_instance


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("bot: build for:arch=riscv64/generic", "no node type matches"),
        ("bot: build for:arch=x86_64/amd/zen2,accel=amd/gfx90a", "no node type matches"),
        # patterns match the whole value, or a trailing part after a `/`, never a piece
        ("bot: build arch:md/zen3", "no node type matches"),
        ("bot: build arch:zen", "no node type matches"),
        ("bot: build repo:nope", "no repository target matches `repo:nope`"),
        (
            "bot: build for:arch=aarch64/neoverse_v2 repo:eessi-2023.06",
            "do not build for the matching repository targets",
        ),
    ],
)
def test_nothing_selected_says_what_this_instance_can_build(line: str, reason: str) -> None:
    selection = select(line)
    assert selection.for_this_instance and selection.targets == ()
    assert selection.message is not None
    assert "Instance `cluster-a` has nothing to build" in selection.message
    assert reason in selection.message
    assert describe_capabilities(NODES, REPOS) in selection.message


def test_capabilities_table() -> None:
    text = describe_capabilities(NODES, REPOS)
    assert "| node type | CPU target | accelerator | repository targets |" in text
    assert "| `zen2` | `x86_64/amd/zen2` | none | `eessi-2023.06`, `eessi-2025.06` |" in text
    assert "| `zen3-a100` | `x86_64/amd/zen3` | `nvidia/cc80` |" in text
    assert "| `icelake` | `x86_64/intel/icelake` | none | `eessi-2023.06` |" in text
    assert "`bot: build for:arch=x86_64/amd/zen2`" in text
    assert "no node types" in describe_capabilities([], REPOS)


def test_capabilities_example_parses_and_selects() -> None:
    gpu_first = [NODES[3], *NODES[:3]]
    text = describe_capabilities(gpu_first, REPOS)
    example = text.rsplit("`", 2)[1]
    command = parse_line(example)
    assert isinstance(command, Command)
    selection = select_targets(command.filters, "a", gpu_first, REPOS)
    assert {t.node_type.name for t in selection.targets} == {"zen3-a100"}


@pytest.mark.parametrize(
    ("variables", "allowed", "problems"),
    [
        ({"SKIP_TESTS": "yes"}, ["SKIP_TESTS"], []),
        ([("EESSI_VERSION", "2025.06")], ["SKIP_TESTS", "EESSI_*"], []),
        ({}, [], []),
        ({"PATH": "/tmp"}, ["SKIP_TESTS"], ["`PATH` may not be set; this instance allows"]),
        ({"A": "1"}, [], ["this instance allows no `exportvariable:`"]),
        ({"SKIP_TESTS": "a\x00b"}, ["SKIP_TESTS"], ["control characters"]),
        ({"SKIP_TESTS": "x" * 5000}, ["SKIP_TESTS"], ["longer than"]),
        ({"skip_tests": "1"}, ["SKIP_TESTS"], ["may not be set"]),  # names are case-sensitive
    ],
)
def test_exportvariables(
    variables: dict[str, str] | list[tuple[str, str]], allowed: list[str], problems: list[str]
) -> None:
    found = validate_exportvariables(variables, allowed)
    assert len(found) == len(problems)
    for text, expected in zip(found, problems, strict=True):
        assert expected in text


def test_exportvariables_from_a_command() -> None:
    command = parse_line("bot: build exportvariable:SKIP_TESTS=1 exportvariable:LD_PRELOAD=x")
    assert isinstance(command, Command)
    problems = validate_exportvariables(command.filters.exportvariables, ["SKIP_TESTS"])
    assert problems == ["`LD_PRELOAD` may not be set; this instance allows `SKIP_TESTS`"]
