"""The values of each key (job:, sha:, for:, on:, patterns, exportvariable:, batch:)."""

from __future__ import annotations

import re

from layerbot.core.commands.grammar import _TARGET_KEY_FORMS, _TARGET_KEYS
from layerbot.core.commands.markdown import code_span as _code
from layerbot.core.commands.patterns import (
    _normalise_target,
    _pattern_problem,
    _split_items,
    _target_pattern_problem,
)
from layerbot.core.commands.state import _Acc, _Problem, _ValueParser
from layerbot.core.commands.words import _close, _resolve_prefix


def _parse_job(acc: _Acc, i: int, value: str) -> _Problem | None:
    if not re.fullmatch(r"[0-9]{1,18}", value):
        digits = re.sub(r"[^0-9]", "", value)[:18]
        fix = (i, (f"job:{digits}",)) if digits else (i, ("job:<id>",))
        return _Problem(
            f"the job id must be a number, e.g. {_code('job:1234')} (got {_code(value)})",
            fix,
            placeholder=not digits,
        )
    acc.job_id = int(value)
    return None


def _parse_sha(acc: _Acc, i: int, value: str) -> _Problem | None:
    """7 hex digits at least: GitHub's short form, and too many to hit a head by chance."""
    if not re.fullmatch(r"[0-9a-fA-F]{7,40}", value):
        return _Problem(
            f"{_code('sha:')} takes 7 to 40 hex digits of a commit, e.g. "
            f"{_code('sha:1a2b3c4')} (got {_code(value)})",
            (i, ("sha:<commit>",)),
            placeholder=True,
        )
    acc.sha = value.lower()
    return None


def _parse_for(acc: _Acc, i: int, value: str) -> _Problem | None:
    return _parse_target(acc, i, value, "for")


def _parse_on(acc: _Acc, i: int, value: str) -> _Problem | None:
    return _parse_target(acc, i, value, "on")


def _parse_target(acc: _Acc, i: int, value: str, which: str) -> _Problem | None:
    """The value of for: or on:, ``arch=<pattern>[,accel=<pattern>]``."""
    items = _split_items(value)
    parsed: dict[str, str] = {}
    for n, item in enumerate(items):
        problem = _parse_target_item(item, n, parsed, which)
        if problem is not None:
            fixed = _replace_item(items, n, problem.fix[1] if problem.fix else ())
            return _Problem(problem.message, (i, (f"{which}:{fixed}",)), problem.placeholder)
    if "architecture" not in parsed:
        return _Problem(
            f"{_code(which + ':')} needs {_code('arch=')}, e.g. "
            f"{_code(which + ':arch=x86_64/amd/zen3,accel=nvidia/cc80')}",
            (i, (f"{which}:arch=<cpu target>,{value}",)),
            placeholder=True,
        )
    acc.values[f"{which}_arch"] = parsed["architecture"]
    acc.values[f"{which}_accel"] = parsed.get("accelerator")
    return None


def _replace_item(items: list[str], n: int, replacement: tuple[str, ...]) -> str:
    return ",".join([*items[:n], *replacement, *items[n + 1 :]])


def _parse_target_item(item: str, n: int, parsed: dict[str, str], which: str) -> _Problem | None:
    """One ``key=value`` of for:/on:. The returned fix replaces the item itself."""
    if "=" not in item:
        return _target_item_without_key(item, n, which)
    raw_key, raw_value = item.split("=", 1)
    key = _resolve_prefix(raw_key, _TARGET_KEYS)
    if key is None:
        guess = _close(raw_key, ["arch", "accel"])
        hint = f"; did you mean {_code(guess)}?" if guess else f"; use {_code('arch=')}"
        fix = (0, (f"{guess}={raw_value}",) if guess else ())
        return _Problem(f"unknown key {_code(raw_key)} in {_code(which + ':')}{hint}", fix)
    form = _TARGET_KEY_FORMS[key]
    placeholder = _placeholder(which, form)
    if key in parsed:
        return _Problem(f"{_code(form + '=')} is given twice in {_code(which + ':')}", (0, ()))
    if not raw_value:
        return _Problem(
            f"{_code(which + ':' + form)} has no value; write "
            f"{_code(f'{which}:{form}={placeholder}')}",
            (0, (f"{form}={placeholder}",)),
            placeholder=True,
        )
    pattern = _normalise_target(raw_value)
    if problem := _target_pattern_problem(pattern):
        return _Problem(problem, (0, (f"{form}=<pattern>",)), placeholder=True)
    parsed[key] = pattern
    return None


def _placeholder(which: str, form: str) -> str:
    if which == "on":
        return "<pattern>"
    return "<cpu target>" if form == "arch" else "<vendor/ccXX>"


def _target_item_without_key(item: str, n: int, which: str) -> _Problem:
    if key := _resolve_prefix(item, _TARGET_KEYS) if item else None:
        form = _TARGET_KEY_FORMS[key]
        placeholder = _placeholder(which, form)
        return _Problem(
            f"{_code(which + ':' + item)} has no value; write "
            f"{_code(f'{which}:{form}={placeholder}')}",
            (0, (f"{form}={placeholder}",)),
            placeholder=True,
        )
    if not item:
        return _Problem(f"an empty item in {_code(which + ':')}", (0, ()))
    form = "arch" if n == 0 else "accel"
    return _Problem(
        f"{_code(item)} in {_code(which + ':')} needs a key: {_code(f'{form}={item}')}",
        (0, (f"{form}={item}",)),
    )


def _pattern_parser(slot: str, *, target: bool = False) -> _ValueParser:
    def parse(acc: _Acc, i: int, value: str) -> _Problem | None:
        pattern = _normalise_target(value) if target else value
        problem = _target_pattern_problem(pattern) if target else _pattern_problem(pattern)
        if problem is not None:
            form = {"for_arch": "arch", "for_accel": "accel"}.get(slot, slot)
            return _Problem(problem, (i, (f"{form}:<pattern>",)), placeholder=True)
        acc.values[slot] = pattern
        return None

    return parse


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_export(acc: _Acc, i: int, value: str) -> _Problem | None:
    name, sep, var_value = value.partition("=")
    if not sep:
        return _Problem(
            f"{_code('exportvariable:')} needs {_code('VAR=value')} (got {_code(value)})",
            (i, (f"exportvariable:{value}=<value>",)),
            placeholder=True,
        )
    if not _VAR_NAME.fullmatch(name):
        return _Problem(
            f"{_code(name)} is not a variable name (letters, digits and _, not starting "
            "with a digit)",
            (i, (f"exportvariable:<VAR>={var_value}",)),
            placeholder=True,
        )
    if any(existing == name for existing, _ in acc.exports):
        return _Problem(f"variable {_code(name)} is set twice", (i, ()))
    acc.exports.append((name, var_value))
    return None


_OPTION_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _parse_batch(acc: _Acc, i: int, value: str) -> _Problem | None:
    name, sep, option_value = value.partition("=")
    if not sep or not option_value or any(c.isspace() for c in option_value):
        return _Problem(
            f"{_code('batch:')} needs {_code('OPTION=value')} (got {_code(value)})",
            (i, (f"batch:{name or '<option>'}=<value>",)),
            placeholder=True,
        )
    if not _OPTION_NAME.fullmatch(name):
        return _Problem(
            f"{_code(name)} is not a batch option name (lower-case letters, digits, - and _)",
            (i, (f"batch:<option>={option_value}",)),
            placeholder=True,
        )
    if any(existing == name for existing, _ in acc.batch):
        return _Problem(f"batch option {_code(name)} is set twice", (i, ()))
    acc.batch.append((name, option_value))
    return None


_VALUE_PARSERS: dict[str, _ValueParser] = {
    "job": _parse_job,
    "sha": _parse_sha,
    "for": _parse_for,
    "on": _parse_on,
    "architecture": _pattern_parser("for_arch", target=True),
    "accelerator": _pattern_parser("for_accel", target=True),
    "repository": _pattern_parser("repo"),
    "instance": _pattern_parser("inst"),
    "exportvariable": _parse_export,
    "batch": _parse_batch,
}
