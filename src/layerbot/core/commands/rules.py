"""Rules across the arguments of one command: legacy mix, on: needs for:, cross targets,
exclusive and joint groups.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerbot.core.commands.grammar import CommandSpec
from layerbot.core.commands.markdown import code_span as _code
from layerbot.core.commands.state import _Acc, _Problem


def _check_combination(spec: CommandSpec, acc: _Acc, tokens: Sequence[str]) -> _Acc | _Problem:
    checks = (_check_legacy_mix, _check_on_needs_for, _check_cross_target, _check_groups)
    for check in checks:
        problem = check(spec, acc, tokens)
        if problem is not None:
            return problem
    return acc


def _check_legacy_mix(spec: CommandSpec, acc: _Acc, tokens: Sequence[str]) -> _Problem | None:
    legacy = [acc.at[k] for k in ("architecture", "accelerator") if k in acc.at]
    if legacy and ("for" in acc.at or "on" in acc.at):
        return _Problem(
            f"{_code('arch:')}/{_code('accel:')} (the older syntax) cannot be combined with "
            f"{_code('for:')}/{_code('on:')}; say it all in {_code('for:arch=...,accel=...')}",
            (min(legacy), ()),
        )
    return None


def _check_on_needs_for(spec: CommandSpec, acc: _Acc, tokens: Sequence[str]) -> _Problem | None:
    if "on" in acc.at and "for" not in acc.at:
        i = acc.at["on"]
        return _Problem(
            f"{_code('on:')} says where to build; it needs {_code('for:arch=...')}, "
            "the target to build for",
            (i, ("for:arch=<cpu target>", tokens[i])),
            placeholder=True,
        )
    return None


_REGEX_SYNTAX = frozenset(".^$*+?{}[]\\|()")


def _check_cross_target(spec: CommandSpec, acc: _Acc, tokens: Sequence[str]) -> _Problem | None:
    """A cross build makes exactly the target for:, so for: must name one, not a pattern.

    So does a list of accelerators (``accel=A+B``): no node has them all, so the job is
    always built on another node than its target, like a cross build.
    """
    filters = acc.filters()
    if not (filters.cross or filters.accel_list):
        return None
    kind = (f"in a cross build (with {_code('on:')})" if filters.cross
            else "with several accelerators")
    for value in (filters.for_arch, None if filters.accel_list else filters.for_accel):
        if value is not None and _REGEX_SYNTAX.intersection(value):
            return _Problem(
                f"{kind} {_code('for:')} must name one target, not a pattern ({_code(value)})",
                (acc.at["for"], ("for:arch=<cpu target>",)),
                placeholder=True,
            )
    return None


def _check_groups(spec: CommandSpec, acc: _Acc, tokens: Sequence[str]) -> _Problem | None:
    for group in spec.exclusive:
        given = sorted((acc.at[k], k) for k in group if k in acc.at)
        if len(given) > 1:
            shown = " and ".join(_code(_shown(spec, k)) for _, k in given)
            return _Problem(f"{shown} cannot go together; choose one", (given[-1][0], ()))
    for group in spec.together:
        present = [k for k in group if k in acc.at]
        missing = [k for k in group if k not in acc.at]
        if present and missing:
            i = acc.at[present[0]]
            needed = [_shown(spec, k) for k in missing]
            # Written in the spec's order: `force job:<id>`, not `job:<id> force`.
            order = [a.key for a in spec.args if a.key in (present[0], *missing)]
            fixed = tuple(tokens[i] if k == present[0] else _shown(spec, k) for k in order)
            return _Problem(
                f"{_code(_shown(spec, present[0]))} needs "
                + " and ".join(_code(n) for n in needed),
                (i, fixed),
                placeholder=any("<" in n for n in needed),
            )
    return None


def _shown(spec: CommandSpec, key: str) -> str:
    arg = spec.arg(key)
    return arg.syntax if arg is not None else key
