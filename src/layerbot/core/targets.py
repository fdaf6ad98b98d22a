"""Which (node type, repository target) pairs a build command selects on this instance.

Pure: the parsed filters, the instance name and the configured node types and repository
targets in, a :class:`Selection` out.

Meaning of the filters (see :class:`~layerbot.core.commands.BuildFilters`):

* ``for:arch=X[,accel=Y]`` is the target. Without ``on:`` it selects the node types whose
  CPU target matches X and whose accelerator matches Y; without ``accel=`` only node types
  with no accelerator (a CPU-only target: a GPU node would build a different target).
* With ``on:arch=Z[,accel=W]`` differing from ``for:`` (a cross build), the jobs run on the
  node types matching Z (and W; none given: no accelerator) and build exactly X/Y.
* ``for:arch=X,accel=A+B+C`` (several accelerators) is ONE job whose accelerator is the
  ``+``-joined list, as EESSI's ``bot/build.sh`` expects in ``cfg/job.cfg``. No node has
  every generation, so it is always built elsewhere: with ``on:`` on the node types ``on:``
  selects; without, on the node types of CPU target X that have no accelerator (as if
  ``on:arch=X`` were written). A CPU node suffices to compile for GPUs, and choosing one
  GPU generation's nodes for all would be arbitrary.
* The older ``arch:``/``accel:`` filter node types independently; absent means any.
* An arch pattern matches a node's CPU target in full, or a trailing part of it after a
  ``/``: EESSI's users write ``on:arch=zen3`` for ``x86_64/amd/zen3`` (EESSI searches
  anywhere in the value; layerbot keeps the anchor, so ``zen3`` never matches ``zen30``).
* ``repo:`` filters repository targets by id; ``inst:`` the instance by name.

All patterns match the whole value, ignoring case.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from layerbot.config import NodeType, RepoTarget
from layerbot.core.commands import BuildFilters, accel_matches, code_span, pattern_matches

__all__ = [
    "Selection",
    "Target",
    "arch_matches",
    "describe_capabilities",
    "names_this",
    "select_targets",
    "validate_batch_options",
    "validate_exportvariables",
]


@dataclass(frozen=True)
class Target:
    """One job to make: build for (cpu_target, accelerator) on a node of ``node_type``."""

    node_type: NodeType
    repo_target: RepoTarget
    cpu_target: str
    accelerator: str | None
    #: The CPU target of the node the job runs on (differs from cpu_target in a cross build).
    build_on: str
    cross: bool


@dataclass(frozen=True)
class Selection:
    targets: tuple[Target, ...]
    #: False when ``inst:`` names other instances: this one says nothing at all.
    for_this_instance: bool
    #: Markdown for the reply when this instance selects nothing; None otherwise.
    message: str | None = None


def select_targets(
    filters: BuildFilters,
    instance: str,
    node_types: Sequence[NodeType],
    repo_targets: Sequence[RepoTarget],
    *,
    also_named: Collection[str] = (),
    capabilities: str | None = None,
) -> Selection:
    """``also_named``: the fleet's agents and clusters, which ``inst:`` may name too (the
    caller then passes only their node types); ``capabilities``: what to list when nothing
    is selected (default: ``node_types`` as one instance's)."""
    if filters.inst is not None and not names_this(filters.inst, instance, also_named):
        return Selection((), for_this_instance=False)
    nodes = [n for n in node_types if _node_selected(filters, n)]
    repos = [r for r in repo_targets if filters.repo is None or pattern_matches(filters.repo, r.id)]
    targets = _dedupe(t for node in nodes for t in _targets_of(filters, node, repos))
    if targets:
        return Selection(tuple(targets), for_this_instance=True)
    why = _why_nothing(filters, instance, nodes, repos)
    listed = capabilities or describe_capabilities(node_types, repo_targets)
    message = f"{why}\n\n{listed}"
    return Selection((), for_this_instance=True, message=message)


def names_this(pattern: str, instance: str, also_named: Collection[str] = ()) -> bool:
    """Whether ``inst:<pattern>`` names this bot: its instance, or an agent or cluster of
    its fleet."""
    return any(pattern_matches(pattern, n) for n in (instance, *also_named))


def _node_selected(filters: BuildFilters, node: NodeType) -> bool:
    if filters.legacy:
        return _optional(filters.for_arch, node.cpu_target) and _optional_accel(
            filters.for_accel, node.accelerator
        )
    if filters.cross:
        arch, accel = filters.on_arch, filters.on_accel
    elif filters.accel_list:
        arch, accel = filters.for_arch, None  # a CPU node of the for: target
    else:
        arch, accel = filters.for_arch, filters.for_accel
    if arch is None:  # no for: at all: every node type
        return _optional_accel(accel, node.accelerator)
    return arch_matches(arch, node.cpu_target) and _exact_accel(accel, node.accelerator)


def arch_matches(pattern: str, cpu_target: str) -> bool:
    """The whole target, or a trailing part after a ``/`` (``zen3``, ``amd/zen3``)."""
    parts = cpu_target.split("/")
    return any(pattern_matches(pattern, "/".join(parts[i:])) for i in range(len(parts)))


def _optional(pattern: str | None, value: str) -> bool:
    return pattern is None or arch_matches(pattern, value)


def _optional_accel(pattern: str | None, accelerator: str | None) -> bool:
    """An absent filter takes any node; a given one only nodes with a matching accelerator."""
    if pattern is None:
        return True
    return accelerator is not None and accel_matches(pattern, accelerator)


def _exact_accel(pattern: str | None, accelerator: str | None) -> bool:
    """In for:/on:, no ``accel=`` means a node without accelerator."""
    if pattern is None:
        return accelerator is None
    return _optional_accel(pattern, accelerator)


def _targets_of(
    filters: BuildFilters, node: NodeType, repos: Sequence[RepoTarget]
) -> Iterable[Target]:
    if (filters.cross or filters.accel_list) and filters.for_arch is not None:
        # The parser guarantees for: names one target (no pattern) in a cross build.
        cpu, accel = filters.for_arch, filters.for_accel
    else:
        cpu, accel = node.cpu_target, node.accelerator
    cross = (cpu, accel) != (node.cpu_target, node.accelerator)
    for repo in repos:
        if not node.repo_targets or repo.id in node.repo_targets:
            yield Target(node, repo, cpu, accel, node.cpu_target, cross)


def _dedupe(targets: Iterable[Target]) -> list[Target]:
    """One job per (target, os, repository): with several matching node types (two
    partitions of zen2 nodes, or a cross build's `on:arch=.*`) the first configured wins."""
    seen: set[tuple[str, str | None, str, str]] = set()
    out: list[Target] = []
    for t in targets:
        key = (t.cpu_target, t.accelerator, t.node_type.os, t.repo_target.id)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _why_nothing(
    filters: BuildFilters,
    instance: str,
    nodes: Sequence[NodeType],
    repos: Sequence[RepoTarget],
) -> str:
    shown = code_span(filters.render(), 200) if not filters.empty else "this build"
    if not nodes:
        reason = "no node type matches"
    elif not repos:
        reason = f"no repository target matches {code_span(f'repo:{filters.repo}')}"
    else:
        reason = "the matching node types do not build for the matching repository targets"
    return f"Instance {code_span(instance)} has nothing to build for {shown}: {reason}."


def describe_capabilities(
    node_types: Sequence[NodeType], repo_targets: Sequence[RepoTarget]
) -> str:
    """What an instance can build, as a markdown table (also the core of `bot: show_config`)."""
    if not node_types:
        return "This instance has no node types configured, so it builds nothing."
    all_ids = [r.id for r in repo_targets]
    rows = [
        "This instance can build:",
        "",
        "| node type | CPU target | accelerator | repository targets |",
        "| --- | --- | --- | --- |",
    ]
    for node in node_types:
        repos = ", ".join(_cell(i) for i in (node.repo_targets or all_ids)) or "(none)"
        accel = _cell(node.accelerator) if node.accelerator else "none"
        rows.append(f"| {_cell(node.name)} | {_cell(node.cpu_target)} | {accel} | {repos} |")
    first = node_types[0]
    example = f"bot: build for:arch={first.cpu_target}"
    if first.accelerator:
        example += f",accel={first.accelerator}"
    rows += ["", f"For example: `{example}`"]
    return "\n".join(rows)


def _cell(value: str) -> str:
    # Config values, but a `|` or backtick would still break the table.
    return "`" + value.replace("`", "'").replace("|", "\\|") + "`"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_EXPORT_VALUE = 4096


def validate_exportvariables(
    variables: Mapping[str, str] | Iterable[tuple[str, str]], allowed: Sequence[str]
) -> list[str]:
    """Problems with the ``exportvariable:`` settings of a command; empty when all are fine.

    ``allowed`` holds names, or shell-style patterns such as ``EESSI_*``.
    """
    items = list(variables.items()) if isinstance(variables, Mapping) else list(variables)
    problems: list[str] = []
    for name, value in items:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
            problems.append(_not_allowed(name, allowed))
        elif _CONTROL.search(value):
            problems.append(f"the value of {code_span(name)} holds control characters")
        elif len(value) > MAX_EXPORT_VALUE:
            problems.append(
                f"the value of {code_span(name)} is longer than {MAX_EXPORT_VALUE} characters"
            )
    return problems


def _not_allowed(name: str, allowed: Sequence[str]) -> str:
    if not allowed:
        return (
            f"{code_span(name)}: this instance allows no `exportvariable:` "
            "(build.allowed_exportvars is empty)"
        )
    names = ", ".join(code_span(a) for a in allowed)
    return f"{code_span(name)} may not be set; this instance allows {names}"


def validate_batch_options(options: Sequence[tuple[str, str]], allowed: Sequence[str],
                           backend: str) -> list[str]:
    """Problems with ``batch:`` options: each must be one the configuration lets commands set."""
    problems = []
    for name, _value in options:
        if name not in allowed:
            may = (", ".join(code_span(a) for a in allowed) if allowed
                   else f"none on this instance ({backend} backend)")
            problems.append(f"batch option {code_span(name)} may not be set by a command; "
                            f"allowed: {may}")
    return problems
