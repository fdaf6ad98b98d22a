"""Parsing the arguments of one command: tokens, keys and flags, and what to say about
the ones that do not fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerbot.core.commands.grammar import _ALL_KEYS, _TARGET_KEYS, ArgSpec, CommandSpec
from layerbot.core.commands.keyvalues import _VALUE_PARSERS
from layerbot.core.commands.markdown import code_span as _code
from layerbot.core.commands.rules import _check_combination
from layerbot.core.commands.state import _Acc, _Problem
from layerbot.core.commands.words import _close, _flag_key, _resolve_prefix


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
