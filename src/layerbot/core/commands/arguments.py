"""Parsing the arguments of one command against its grammar entry, with a suggestion for
every mistake.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from layerbot.core.commands.grammar import (
    _ALL_KEYS,
    _TARGET_KEY_FORMS,
    _TARGET_KEYS,
    ArgSpec,
    CommandSpec,
)
from layerbot.core.commands.markdown import _code
from layerbot.core.commands.patterns import (
    _normalise_target,
    _pattern_problem,
    _split_items,
    _target_pattern_problem,
)
from layerbot.core.commands.values import (
    BuildFilters,
)

# --------------------------------------------------------------------------------------------
# Parsing the arguments of one command
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    message: str
    #: Replace token i by these tokens to get closer to a valid line.
    fix: tuple[int, tuple[str, ...]] | None = None
    #: The fix holds a <placeholder>: show it, do not parse it again.
    placeholder: bool = False


@dataclass
class _Acc:
    """Mutable accumulator while reading one line's arguments."""

    values: dict[str, str | None] = field(default_factory=dict)
    exports: list[tuple[str, str]] = field(default_factory=list)
    batch: list[tuple[str, str]] = field(default_factory=list)
    job_id: int | None = None
    sha: str | None = None
    flags: set[str] = field(default_factory=set)
    #: Token index of each argument key given, for messages and fixes.
    at: dict[str, int] = field(default_factory=dict)

    def filters(self) -> BuildFilters:
        v = self.values
        legacy = "architecture" in self.at or "accelerator" in self.at
        return BuildFilters(
            for_arch=v.get("for_arch"),
            for_accel=v.get("for_accel"),
            on_arch=v.get("on_arch"),
            on_accel=v.get("on_accel"),
            repo=v.get("repo"),
            inst=v.get("inst"),
            exportvariables=tuple(self.exports),
            batch_options=tuple(self.batch),
            legacy=legacy,
        )


_ValueParser = Callable[[_Acc, int, str], "_Problem | None"]


def _norm_word(word: str) -> str:
    return word.lower().replace("-", "_")


def _flag_key(word: str) -> str:
    """last_build, last-build and LastBuild all name the same flag."""
    return re.sub(r"[-_]", "", word.lower())


def _resolve_prefix(word: str, names: Sequence[str]) -> str | None:
    """EESSI's rule: a key may be shortened to any prefix of 3+ letters (or be whole)."""
    word = word.lower()
    for name in names:
        if name.startswith(word) and len(word) >= min(3, len(name)):
            return name
    return None


def _close(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(word.lower()[:60], list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def _parse_args(spec: CommandSpec, tokens: Sequence[str]) -> _Acc | _Problem:
    acc = _Acc()
    for i, token in enumerate(tokens):
        problem = _parse_token(spec, acc, i, token)
        if problem is not None:
            return problem
    return _check_combination(spec, acc, tokens)


def _parse_token(spec: CommandSpec, acc: _Acc, i: int, token: str) -> _Problem | None:
    if ":" in token:
        return _parse_keyed(spec, acc, i, token)
    flag = next((f.key for f in spec.flags if _flag_key(f.key) == _flag_key(token)), None)
    if flag is None:
        return _unexpected(spec, i, token)
    if flag in acc.flags:
        return _Problem(f"{_code(flag)} is given twice", (i, ()))
    acc.flags.add(flag)
    acc.at[flag] = i
    return None


def _parse_keyed(spec: CommandSpec, acc: _Acc, i: int, token: str) -> _Problem | None:
    raw_key, value = token.split(":", 1)
    arg = _resolve_arg(spec, raw_key)
    if arg is None:
        return _unknown_key(spec, i, raw_key, value)
    if arg.key in acc.at and not arg.repeatable:
        return _Problem(f"{_code(arg.form + ':')} is given twice", (i, ()))
    acc.at.setdefault(arg.key, i)
    if not value:
        return _Problem(
            f"{_code(raw_key + ':')} has no value; write {_code(arg.syntax)}",
            (i, (arg.syntax,)),
            placeholder=True,
        )
    return _VALUE_PARSERS[arg.key](acc, i, value)


def _resolve_arg(spec: CommandSpec, raw_key: str) -> ArgSpec | None:
    key = _resolve_prefix(raw_key, [a.key for a in spec.keys])
    return spec.arg(key) if key is not None else None


def _unknown_key(spec: CommandSpec, i: int, raw_key: str, value: str) -> _Problem:
    other = _resolve_prefix(raw_key, list(_ALL_KEYS))
    if other is not None:
        return _Problem(
            f"{_code(_ALL_KEYS[other].form + ':')} does not go with {_code('bot: ' + spec.name)}",
            (i, ()),
        )
    if not spec.keys:
        return _Problem(f"{_code('bot: ' + spec.name)} takes no arguments", (i, ()))
    # Compare with both the short and the full spelling: `repp` → repo, `instanse` → instance.
    spellings = {a.key: a.form for a in spec.keys} | {a.form: a.form for a in spec.keys}
    guess = _close(raw_key, list(spellings))
    if guess is None:
        return _Problem(f"unknown key {_code(raw_key)}; {_known_keys(spec)}", (i, ()))
    form = spellings[guess]
    return _Problem(
        f"unknown key {_code(raw_key)}; did you mean {_code(form + ':')}?",
        (i, (f"{form}:{value}",)),
    )


def _known_keys(spec: CommandSpec) -> str:
    return "known keys are " + ", ".join(_code(a.form + ":") for a in spec.keys)


def _unexpected(spec: CommandSpec, i: int, token: str) -> _Problem:
    if not spec.args:
        return _Problem(f"{_code('bot: ' + spec.name)} takes no arguments", (i, ()))
    if "=" in token:
        return _unexpected_assignment(spec, i, token)
    flags = {_flag_key(f.key): f.key for f in spec.flags}
    word = _flag_key(token)
    guess = next((f for k, f in flags.items() if k.startswith(word) and len(word) >= 3), None)
    guess = guess or flags.get(_close(word, list(flags)) or "")
    if guess is not None:
        return _Problem(
            f"unexpected argument {_code(token)}; did you mean {_code(guess)}?",
            (i, (guess,)),
        )
    if "/" in token and spec.arg("for") is not None:
        return _Problem(
            f"unexpected argument {_code(token)}; a target is written {_code('for:arch=' + token)}",
            (i, (f"for:arch={token}",)),
        )
    return _Problem(f"unexpected argument {_code(token)}", (i, ()))


def _unexpected_assignment(spec: CommandSpec, i: int, token: str) -> _Problem:
    """`arch=zen2` or `FOO=1` without the key and colon in front."""
    name, value = token.split("=", 1)
    if _resolve_prefix(name, _TARGET_KEYS) and spec.arg("for") is not None:
        fixed = f"for:{name}={value}"
    elif (arg := _resolve_arg(spec, name)) is not None:
        fixed = f"{arg.form}:{value}"
    elif spec.arg("exportvariable") is not None:
        fixed = f"exportvariable:{token}"
    else:
        return _Problem(f"unexpected argument {_code(token)}", (i, ()))
    return _Problem(
        f"unexpected argument {_code(token)}; did you mean {_code(fixed)}?", (i, (fixed,))
    )


# --- values of each key ------------------------------------------------------------------


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


# --- rules across arguments ----------------------------------------------------------------


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


