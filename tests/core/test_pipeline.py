"""The plan a plan script writes (hostile input) and the graph rules over a pipeline."""

from __future__ import annotations

import json
from typing import Any

import pytest

from layerbot.core.pipeline import (
    PlanError,
    PlanLimits,
    StepStatus,
    critical_path,
    dependents,
    find_cycle,
    need_variable,
    parse_plan,
    progress,
    topological_order,
)

LIMITS = PlanLimits(max_steps=5, max_bytes=4096, max_time_minutes=60, max_cpus=8,
                    max_memory_mb=1000, overridable=("time", "partition"))


def plan(*steps: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"version": 1, "steps": list(steps), **extra}).encode()


def step(id: str, *needs: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "command": f"make {id}", "needs": list(needs), **extra}


def problems(raw: bytes, limits: PlanLimits = LIMITS) -> str:
    with pytest.raises(PlanError) as err:
        parse_plan(raw, limits)
    return str(err.value)


def test_a_valid_plan_is_read_with_its_resources_and_cache_keys() -> None:
    got = parse_plan(plan(step("a", cache_key="GCC-13"),
                          step("b", "a", name="HDF5", resources={
                              "time_minutes": 30, "cpus": 4, "memory_mb": 512,
                              "options": {"partition": "big"}})), LIMITS)
    assert [s.id for s in got.steps] == ["a", "b"]
    assert got.step("a").cache_key == "GCC-13"
    b = got.step("b")
    assert (b.title, b.needs) == ("HDF5", ["a"])
    assert b.resources.batch_options() == {"partition": "big", "cpus": "4", "mem": "512M"}


@pytest.mark.parametrize(("raw", "says"), [
    (plan(step("a", "b"), step("b", "c"), step("c", "a")),
     "the steps' needs form a cycle: a -> b -> c -> a"),
    (plan(step("a", "nowhere")), "step 'a' needs 'nowhere', which is not in the plan"),
    (plan(step("a", "a")), "step 'a' needs itself"),
    (plan(*[step(f"s{i}") for i in range(6)]), "the plan has 6 steps; at most 5"),
    (plan(step("a", command="x" * 5000)), "is 5,"),  # bytes, before it is even parsed
    (plan(step("a"), step("a")), "step id 'a' is used twice"),
    (plan(step("../etc")), "step id '../etc': use letters"),
    (plan(step("a", resources={"time_minutes": 61})), "asks for 61 minutes; the site "
     "allows 60"),
    (plan(step("a", resources={"cpus": 9})), "asks for 9 CPUs"),
    (plan(step("a", resources={"memory_mb": 1001})), "asks for 1001 MB"),
    (plan(step("a", resources={"options": {"account": "x"}})),
     "the batch option 'account' is not one the site lets builds set"),
    (plan(step("a"), surprise=1), "surprise: Extra inputs are not permitted"),
    (b"{not json", "the plan is not JSON"),
    (json.dumps({"version": 2, "steps": [step("a")]}).encode(), "version: Input should be 1"),
    (plan({"id": "a"}), "steps.0.command: Field required"),
])
def test_an_invalid_plan_says_what_is_wrong(raw: bytes, says: str) -> None:
    assert says in problems(raw)


def test_a_reserved_batch_option_is_refused_even_when_overridable() -> None:
    limits = PlanLimits(overridable=("time", "job-name"))
    assert "job-name" in problems(plan(step("a", resources={"options": {"job-name": "x"}})),
                                  limits)


def test_graph_order_dependents_and_cycles() -> None:
    needs = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    assert topological_order(needs) == ["a", "e", "b", "c", "d"]
    assert dependents(needs, ["b"]) == {"d"}
    assert dependents(needs, ["a"]) == {"b", "c", "d"}
    assert find_cycle(needs) is None
    assert find_cycle({"x": ["y"], "y": ["x"]}) == ["x", "y", "x"]
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"x": ["y"], "y": ["x"]})


def test_the_critical_path_is_the_longest_chain_by_duration() -> None:
    needs = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    path, total = critical_path(needs, {"a": 10, "b": 5, "c": 30, "d": 1})
    assert (path, total) == (["a", "c", "d"], 41)


def test_progress_counts_steps_by_status() -> None:
    got = progress({"a": StepStatus.DONE, "b": StepStatus.REUSED, "c": StepStatus.RUNNING,
                    "d": StepStatus.WAITING},
                   {"a": [], "b": [], "c": ["a"], "d": ["c", "b"]}, {"a": 3, "c": 4})
    assert got.summary() == "2/4 done (1 reused), 1 running, 1 waiting"
    assert got.critical_path == ["a", "c", "d"]
    assert not got.finished


def test_a_needed_step_is_named_in_the_environment_safely() -> None:
    assert need_variable("hdf5-1.14.x") == "LAYERBOT_NEED_HDF5_1_14_X"
