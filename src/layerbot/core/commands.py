"""The command grammar: one table of command specs, from which the parser and `bot: help` derive.

A comment holds commands one a line: ``bot: <command> [arguments]`` (``bot:`` and the command
word in any case). Lines in block quotes, fenced or indented code blocks and HTML comments are
not commands, so quoting or documenting a command never triggers it.

Parsing is total: every line that is, or looks like an attempt at, a command gives either a
:class:`Command` or a :class:`CommandError` carrying what is wrong and the closest valid form;
nothing here raises on user input, reads the clock or does I/O.

Build filters accept both syntaxes EESSI users know:

* ``for:arch=<cpu target>[,accel=<vendor/ccXX>] [on:arch=<pattern>[,accel=<pattern>]]`` (v0.9);
* ``arch:<pattern> accel:<pattern>`` (older), plus ``repo:``, ``inst:``, ``exportvariable:``.

Keys match by prefix of three letters or more (``repository:``, ``inst:``, ``architecture=``),
patterns are regular expressions matched in full, and in arch/accel values ``-`` means ``/``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "COMMANDS",
    "MAX_PATTERN_LENGTH",
    "ArgKind",
    "ArgSpec",
    "BuildFilters",
    "Command",
    "CommandError",
    "CommandSpec",
    "ParseResult",
    "accel_matches",
    "accelerator_list",
    "code_span",
    "command_spec",
    "compile_pattern",
    "help_text",
    "parse_comment",
    "parse_line",
    "pattern_matches",
    "render_error",
]

#: Longer patterns are refused: nobody needs them, and they bound the cost of matching.
MAX_PATTERN_LENGTH = 200


# --------------------------------------------------------------------------------------------
# The grammar, as data
# --------------------------------------------------------------------------------------------


class ArgKind(StrEnum):
    FILTER = "filter"  # key:value, selecting what to build or deploy
    JOB = "job"  # job:<number>
    FLAG = "flag"  # a bare word such as last_build or dry-run
    PIN = "pin"  # sha:<commit>, the commit the reviewer saw


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a command, as help shows it and as the parser accepts it."""

    #: Canonical name. For keys (FILTER, JOB) the full word, matched by a 3+ letter prefix.
    key: str
    kind: ArgKind
    syntax: str
    description: str
    #: The short form written back when rendering (``repo`` for ``repository``).
    written: str = ""
    repeatable: bool = False
    #: The pre-v0.9 EESSI syntax: accepted, documented apart, not shown in the usage line.
    legacy: bool = False

    @property
    def form(self) -> str:
        return self.written or self.key


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    args: tuple[ArgSpec, ...] = ()
    #: Full command lines; each must parse (the tests check it), and help shows them.
    examples: tuple[str, ...] = ()
    #: Groups of argument keys of which at most one may be given.
    exclusive: tuple[tuple[str, ...], ...] = ()
    #: Groups of argument keys that go together: all or none.
    together: tuple[tuple[str, ...], ...] = ()

    def arg(self, key: str) -> ArgSpec | None:
        return next((a for a in self.args if a.key == key), None)

    @property
    def keys(self) -> tuple[ArgSpec, ...]:
        return tuple(a for a in self.args if a.kind is not ArgKind.FLAG)

    @property
    def flags(self) -> tuple[ArgSpec, ...]:
        return tuple(a for a in self.args if a.kind is ArgKind.FLAG)

    @property
    def usage(self) -> str:
        """``bot: cancel [job:<id> | all]``: generated, so help never drifts from the parser."""
        parts: list[str] = [f"bot: {self.name}"]
        done: set[str] = set()
        for arg in self.args:
            if arg.legacy or arg.key in done:
                continue
            group = self._group_of(arg.key)
            done.update(group)
            shown = [a.syntax for a in self.args if a.key in group]
            joiner = " | " if any(arg.key in g for g in self.exclusive) else " "
            parts.append("[" + joiner.join(shown) + "]")
        return " ".join(parts)

    def _group_of(self, key: str) -> tuple[str, ...]:
        for group in (*self.exclusive, *self.together):
            if key in group:
                return group
        return (key,)


_FOR = ArgSpec(
    "for",
    ArgKind.FILTER,
    "for:arch=<cpu target>[,accel=<vendor/ccXX>[+<vendor/ccXX>...]]",
    "the target to build for; without `accel=` a CPU-only target; several accelerators "
    "joined by `+` make one job for all of them (see below)",
)
_ON = ArgSpec(
    "on",
    ArgKind.FILTER,
    "on:arch=<pattern>[,accel=<pattern>]",
    "build on other node types than the target's: a cross build (e.g. a GPU target on a CPU node)",
)
_ARCH = ArgSpec(
    "architecture",
    ArgKind.FILTER,
    "arch:<pattern>",
    "older syntax: node types whose CPU target matches",
    written="arch",
    legacy=True,
)
_ACCEL = ArgSpec(
    "accelerator",
    ArgKind.FILTER,
    "accel:<pattern>",
    "older syntax: node types whose accelerator matches",
    written="accel",
    legacy=True,
)
_REPO = ArgSpec(
    "repository",
    ArgKind.FILTER,
    "repo:<pattern>",
    "only the repository targets whose id matches",
    written="repo",
)
_INST = ArgSpec(
    "instance",
    ArgKind.FILTER,
    "inst:<pattern>",
    "only the bot instances whose name matches (others stay silent)",
    written="inst",
)


def _inst(what: str) -> ArgSpec:
    """``inst:`` on a command that answers: with several instances on a PR, one answers."""
    return replace(_INST, description=f"only the instances whose name matches {what}; "
                   "the others stay silent")
_EXPORT = ArgSpec(
    "exportvariable",
    ArgKind.FILTER,
    "exportvariable:VAR=value",
    "set a variable in the job's environment (only those the instance allows; may repeat)",
    repeatable=True,
)
_BATCH = ArgSpec(
    "batch",
    ArgKind.FILTER,
    "batch:OPTION=value",
    "a batch-system option for the jobs, e.g. batch:time=04:00:00 (only the options the "
    "instance allows; may repeat)",
    repeatable=True,
)


#: Pins the commit: a push between review and handling must not be built unseen.
_SHA = ArgSpec(
    "sha",
    ArgKind.PIN,
    "sha:<commit>",
    "build only if this commit (7 to 40 hex digits) is still the PR's head; else nothing "
    "is built",
)


def _job(description: str) -> ArgSpec:
    return ArgSpec("job", ArgKind.JOB, "job:<id>", description)


def _flag(word: str, description: str) -> ArgSpec:
    return ArgSpec(word, ArgKind.FLAG, word, description)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "build",
        "Build this PR's head for the targets the filters select; without filters, "
        "every target of every instance.",
        (_FOR, _ON, _REPO, _INST, _EXPORT, _BATCH, _SHA, _ARCH, _ACCEL),
        (
            "bot: build",
            "bot: build for:arch=x86_64/amd/zen2",
            "bot: build for:arch=x86_64-amd-zen3,accel=nvidia/cc80 repo:eessi.* inst:cluster-a",
            "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80 on:arch=x86_64/amd/zen3",
            "bot: build for:arch=aarch64/neoverse_v1 exportvariable:SKIP_TESTS=yes",
            "bot: build arch:zen2 repo:eessi-2023.06",
            "bot: build for:arch=x86_64/amd/zen4 batch:time=08:00:00",
            "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc70+nvidia/cc90 "
            "on:arch=x86_64/amd/zen3",
            "bot: build sha:1a2b3c4",
        ),
    ),
    CommandSpec("help", "Show this help.", (_inst("(one help instead of one each)"),),
                ("bot: help", "bot: help inst:cluster-a")),
    CommandSpec(
        "show_config",
        "Show what each instance can build: node types, CPU targets, accelerators, "
        "repository targets.",
        (_inst("(show only their configuration)"),),
        ("bot: show_config", "bot: show_config instance:cluster-a"),
    ),
    CommandSpec(
        "status",
        "Show the latest result of each target for the PR's current head.",
        (_flag("last_build", "only the jobs of the latest build, whatever commit it built"),
         _inst("(only their jobs)")),
        ("bot: status", "bot: status last_build", "bot: status inst:cluster-a"),
    ),
    CommandSpec(
        "cancel",
        "Cancel this PR's jobs that have not ended (by default those of the latest build).",
        (_job("only this job"), _flag("all", "every unfinished job of this PR"),
         _inst("(only their jobs are cancelled)")),
        ("bot: cancel", "bot: cancel job:1234", "bot: cancel all", "bot: cancel all inst:a"),
        exclusive=(("job", "all"),),
    ),
    CommandSpec(
        "rebuild",
        "Run this PR's jobs that did not succeed (the latest job of each target) again, "
        "at the current head of the PR.",
        (_job("only this job"),
         _flag("failed", "the jobs that did not succeed (the default; may be written)"), _SHA,
         _inst("(only their jobs run again)")),
        ("bot: rebuild", "bot: rebuild failed", "bot: rebuild job:1234",
         "bot: rebuild failed sha:1a2b3c4", "bot: rebuild failed inst:cluster-a"),
        exclusive=(("job", "failed"),),
    ),
    CommandSpec(
        "deploy",
        "Deploy the artefacts of this PR's successful jobs the filters select.",
        (
            replace(_FOR, description="only jobs built for this target"),
            replace(_REPO, description="only jobs for the repository targets whose id matches"),
            replace(_INST, description="only the instances whose name matches"),
            _flag("dry-run", "show what would be deployed, deploy nothing"),
            _flag("force", "deploy this job even if the deploy policy would skip it"),
            _job("the job to deploy (with force)"),
            replace(_ARCH, description="older syntax: only jobs whose CPU target matches"),
            replace(_ACCEL, description="older syntax: only jobs whose accelerator matches"),
        ),
        (
            "bot: deploy",
            "bot: deploy for:arch=x86_64/amd/zen2 dry-run",
            "bot: deploy force job:1234",
        ),
        together=(("force", "job"),),
    ),
    CommandSpec(
        "probe",
        "Ask every instance to answer: shows which are alive and what they can build.",
        (_inst("(probe only those)"),),
        ("bot: probe", "bot: probe inst:cluster-.*"),
    ),
)

_BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in COMMANDS}
_ALL_FLAGS: frozenset[str] = frozenset(a.key for s in COMMANDS for a in s.flags)
_ALL_KEYS: dict[str, ArgSpec] = {a.key: a for s in COMMANDS for a in s.keys}
#: Keys inside for:/on: values.
_TARGET_KEYS: tuple[str, ...] = ("architecture", "accelerator")
_TARGET_KEY_FORMS = {"architecture": "arch", "accelerator": "accel"}


def command_spec(name: str) -> CommandSpec:
    """The spec of a command by its canonical name (KeyError if there is none)."""
    return _BY_NAME[name]


# --------------------------------------------------------------------------------------------
# Parsed values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildFilters:
    """What a build (or deploy) command selects. Patterns are stored normalised (``-``→``/``)."""

    for_arch: str | None = None
    for_accel: str | None = None
    on_arch: str | None = None
    on_accel: str | None = None
    repo: str | None = None
    inst: str | None = None
    #: In the order written; names are unique.
    exportvariables: tuple[tuple[str, str], ...] = ()
    #: Batch-system options (``batch:time=04:00:00``), in the order written; names unique.
    batch_options: tuple[tuple[str, str], ...] = ()
    #: Written with the older ``arch:``/``accel:``. It changes the meaning: there an absent
    #: ``accel:`` means any accelerator, while ``for:arch=X`` alone means a CPU-only target.
    legacy: bool = False

    @property
    def accel_list(self) -> tuple[str, ...]:
        """The accelerators of ``for:...,accel=A+B+C`` (one job for all), else ``()``."""
        return accelerator_list(self.for_accel) if not self.legacy else ()

    @property
    def cross(self) -> bool:
        """``on:`` names other nodes than the target's own."""
        return self.on_arch is not None and (self.on_arch, self.on_accel) != (
            self.for_arch,
            self.for_accel,
        )

    @property
    def empty(self) -> bool:
        return self == BuildFilters() or self == BuildFilters(legacy=True)

    @property
    def exportvars(self) -> dict[str, str]:
        return dict(self.exportvariables)

    def tokens(self) -> list[str]:
        out: list[str] = []
        if self.legacy:
            out += [f"arch:{self.for_arch}"] if self.for_arch is not None else []
            out += [f"accel:{self.for_accel}"] if self.for_accel is not None else []
        elif self.for_arch is not None:
            out.append("for:" + _target_value(self.for_arch, self.for_accel))
        elif self.for_accel is not None:  # only built by hand; the parser always sets arch
            out.append(f"accel:{self.for_accel}")
        if self.on_arch is not None:
            out.append("on:" + _target_value(self.on_arch, self.on_accel))
        out += [f"repo:{self.repo}"] if self.repo is not None else []
        out += [f"inst:{self.inst}"] if self.inst is not None else []
        out += [f"exportvariable:{name}={value}" for name, value in self.exportvariables]
        out += [f"batch:{name}={value}" for name, value in self.batch_options]
        return out

    def render(self) -> str:
        return " ".join(self.tokens())


#: One accelerator written literally (``nvidia/cc90``, ``amd/gfx90a``): no regex syntax.
_LITERAL_ACCEL = re.compile(r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)+")


def accelerator_list(value: str | None) -> tuple[str, ...]:
    """``nvidia/cc70+nvidia/cc90`` -> its items; ``()`` for one accelerator or a pattern.

    EESSI's ``bot/build.sh`` reads such a ``+``-joined list from ``cfg/job.cfg`` and builds
    for every generation in one job. A ``+`` is also a regex quantifier, so a value is a list
    only when every item is a literal ``vendor/name`` (``nvidia/cc[78]0+`` stays a pattern).
    """
    if value is None or "+" not in value:
        return ()
    items = tuple(value.split("+"))
    if len(items) < 2 or not all(_LITERAL_ACCEL.fullmatch(item) for item in items):
        return ()
    return items


def accel_matches(pattern: str, accelerator: str) -> bool:
    """A filter's accelerator against a job's or node's: a list matches the same list (in
    any order), a pattern as usual."""
    wanted = accelerator_list(pattern)
    if wanted:
        return sorted(wanted) == sorted(accelerator_list(accelerator) or (accelerator,))
    return pattern_matches(pattern, accelerator)


def _target_value(arch: str, accel: str | None) -> str:
    return f"arch={arch}" + (f",accel={accel}" if accel is not None else "")


@dataclass(frozen=True)
class Command:
    """A valid command. ``line`` and ``lineno`` do not take part in equality."""

    name: str
    filters: BuildFilters = field(default_factory=BuildFilters)
    job_id: int | None = None
    #: Canonical flag words given: last_build, all, failed, dry-run, force.
    flags: frozenset[str] = frozenset()
    #: ``sha:`` as written, lower-cased: a prefix of the commit the author means.
    sha: str | None = None
    line: str = field(default="", compare=False)
    lineno: int = field(default=0, compare=False)

    @property
    def spec(self) -> CommandSpec:
        return _BY_NAME[self.name]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def last_build(self) -> bool:
        return "last_build" in self.flags

    @property
    def all(self) -> bool:
        return "all" in self.flags

    @property
    def failed(self) -> bool:
        return "failed" in self.flags

    @property
    def dry_run(self) -> bool:
        return "dry-run" in self.flags

    @property
    def force(self) -> bool:
        return "force" in self.flags

    def render(self) -> str:
        """The canonical line; it parses back to an equal command."""
        tokens: list[str] = [f"bot: {self.name}"]
        filter_tokens = self.filters.tokens()
        first_filter = next((a.key for a in self.spec.args if a.kind is ArgKind.FILTER), None)
        for arg in self.spec.args:
            if arg.key == first_filter:
                tokens += filter_tokens  # all filters render together, in a fixed order
            elif arg.kind is ArgKind.JOB and self.job_id is not None:
                tokens.append(f"job:{self.job_id}")
            elif arg.kind is ArgKind.FLAG and arg.key in self.flags:
                tokens.append(arg.key)
            elif arg.kind is ArgKind.PIN and self.sha is not None:
                tokens.append(f"sha:{self.sha}")
        return " ".join(tokens)


@dataclass(frozen=True)
class CommandError:
    """A line meant as a command that is not a valid one."""

    line: str
    lineno: int
    message: str
    #: The closest valid form, a whole line (may hold a <placeholder> when a value is missing).
    suggestion: str | None = None
    #: The command it was meant to be, when that is known.
    command: str | None = None


ParseResult = Command | CommandError


# --------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A user's pattern, case-insensitive; ValueError (with re's reason) if invalid.

    Patterns are anchored by matching with ``fullmatch`` (not by wrapping them, which would
    garble re's error positions and break a leading ``(?i)``).
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether the whole of ``value`` matches ``pattern`` (ValueError if it is invalid)."""
    return compile_pattern(pattern).fullmatch(value) is not None


def _pattern_problem(pattern: str) -> str | None:
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        return f"{_code(pattern)} is not a valid regular expression: {exc}"
    return None


@dataclass(frozen=True)
class _Char:
    char: str
    syntax: bool  # neither escaped nor inside a [...] class: `-` and `,` here are separators
    depth: int  # nesting in (...) and {...}


def _scan(value: str) -> tuple[list[_Char], bool]:
    """Classify a pattern's characters; also say whether it ends balanced.

    ``-`` is rewritten to ``/`` and ``,`` splits for:/on: items only where they are not regex
    syntax, so ``zen[2-4]`` and ``zen{2,3}`` keep their meaning.
    """
    out: list[_Char] = []
    escaped = in_class = False
    class_start = depth = 0
    for i, ch in enumerate(value):
        if escaped or ch == "\\" or in_class:
            out.append(_Char(ch, False, depth))
            if in_class and not escaped and ch == "]" and i > class_start + 1:
                in_class = value[class_start + 1 : i] == "^"  # `[^]` is still open
            escaped = not escaped and ch == "\\"
            continue
        if ch == "[":
            in_class, class_start = True, i
            out.append(_Char(ch, False, depth))
            continue
        if ch in ")}":
            depth = max(0, depth - 1)
        out.append(_Char(ch, True, depth))
        if ch in "({":
            depth += 1
    return out, not (escaped or in_class or depth)


def _normalise_target(value: str) -> str:
    """EESSI writes x86_64-amd-zen2 for x86_64/amd/zen2 (a `/` is awkward in some places)."""
    chars, _ = _scan(value)
    return "".join("/" if c.syntax and c.char == "-" else c.char for c in chars)


def _split_items(value: str) -> list[str]:
    chars, _ = _scan(value)
    items: list[str] = []
    current: list[str] = []
    for c in chars:
        if c.syntax and c.char == "," and c.depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(c.char)
    items.append("".join(current))
    return items


def _target_pattern_problem(value: str) -> str | None:
    if problem := _pattern_problem(value):
        return problem
    if not _scan(value)[1]:
        # An unbalanced `{` is a literal to Python's re, but would let a rendered
        # `arch=a{,accel=b` read differently; refuse it.
        return f"{_code(value)} has unbalanced brackets"
    return None


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


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------

#: A command line (EESSI: ``^bot:[ ]?(.*)$``; here also indented and in any case).
_COMMAND = re.compile(r"\s*bot:\s?(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
#: ``- bot: build`` in a list: meant as a command, but not one.
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|[0-9]{1,9}[.)])\s+bot:\s?(?P<rest>.*)", re.I | re.S)
#: ``bot build``, ``bot- build``, ``@bot build``: perhaps meant as a command.
_NEAR = re.compile(r"\s*[@/]?bot(?P<sep>[^\w\n]+)(?P<word>[^\W\d_][\w-]*)(?P<rest>.*)", re.I | re.S)


def parse_line(line: str, lineno: int = 1) -> ParseResult | None:
    """One line: a command, an error for a line meant as one, or None for anything else."""
    if m := _COMMAND.fullmatch(line):
        return _parse_command(m["rest"], line, lineno)
    if m := _LIST_ITEM.fullmatch(line):
        why = "a command must begin its line; remove the list marker"
        return _attempt(m["rest"], line, lineno, why)
    if m := _NEAR.fullmatch(line):
        return _attempt(
            m["word"] + m["rest"], line, lineno, f"a command begins with {_code('bot:')}"
        )
    return None


def _parse_command(rest: str, line: str, lineno: int) -> ParseResult:
    tokens = rest.split()
    if not tokens:
        return CommandError(line, lineno, f"no command after {_code('bot:')}", "bot: help")
    spec = _BY_NAME.get(_norm_word(tokens[0]))
    if spec is None:
        return _unknown_command(tokens, line, lineno)
    result = _parse_args(spec, tokens[1:])
    if isinstance(result, _Problem):
        suggestion = _suggest(spec, tokens[1:], result)
        return CommandError(line, lineno, result.message, suggestion, spec.name)
    return Command(
        name=spec.name,
        filters=result.filters(),
        job_id=result.job_id,
        flags=frozenset(result.flags),
        sha=result.sha,
        line=line,
        lineno=lineno,
    )


def _unknown_command(tokens: Sequence[str], line: str, lineno: int) -> CommandError:
    word = tokens[0]
    guess = _close(_norm_word(word), list(_BY_NAME))
    if guess is None:
        names = ", ".join(_code(name) for name in _BY_NAME)
        return CommandError(
            line, lineno, f"unknown command {_code(word)}; the commands are {names}", "bot: help"
        )
    spec = _BY_NAME[guess]
    return CommandError(
        line,
        lineno,
        f"unknown command {_code(word)}; did you mean {_code('bot: ' + guess)}?",
        _suggest_line(spec, tokens[1:]),
        guess,
    )


def _attempt(text: str, line: str, lineno: int, why: str) -> CommandError | None:
    """A line that is not a command but looks meant as one; prose that mentions bot is not."""
    tokens = text.split()
    if not tokens or not all(_looks_like_argument(t) for t in tokens[1:]):
        return None
    word = _norm_word(tokens[0])
    name = word if word in _BY_NAME else _close(word, list(_BY_NAME), cutoff=0.75)
    if name is None:
        return None
    if name != word:
        why += f", and {_code(tokens[0])} is not a command: did you mean {_code(name)}?"
    return CommandError(line, lineno, why, _suggest_line(_BY_NAME[name], tokens[1:]), name)


def _looks_like_argument(token: str) -> bool:
    return ":" in token or "=" in token or _flag_key(token) in {_flag_key(f) for f in _ALL_FLAGS}


def _suggest_line(spec: CommandSpec, args: Sequence[str]) -> str:
    result = _parse_args(spec, args)
    if isinstance(result, _Problem):
        return _suggest(spec, args, result)
    return _join(spec.name, args)


def _suggest(spec: CommandSpec, args: Sequence[str], problem: _Problem) -> str:
    """Apply fixes one after the other until the line parses: the closest valid form."""
    tokens = list(args)
    for _ in range(8):
        if problem.fix is None:
            break
        i, replacement = problem.fix
        tokens[i : i + 1] = replacement
        if problem.placeholder:
            return _join(spec.name, tokens)
        result = _parse_args(spec, tokens)
        if not isinstance(result, _Problem):
            return _join(spec.name, tokens)
        problem = result
    return spec.usage


def _join(name: str, tokens: Sequence[str]) -> str:
    return " ".join([f"bot: {name}", *tokens])


# --------------------------------------------------------------------------------------------
# Comments: which lines count
# --------------------------------------------------------------------------------------------

_FENCE_OPEN = re.compile(r"\s*(?P<fence>`{3,}|~{3,})(?P<info>.*)", re.S)
_QUOTE = re.compile(r"\s*>")


def parse_comment(text: str) -> list[ParseResult]:
    """Every command (or failed attempt at one) in a comment, in order."""
    results: list[ParseResult] = []
    for lineno, raw, visible in _visible_lines(text):
        result = parse_line(visible, lineno)
        if result is not None:
            results.append(replace(result, line=raw))
    return results


def _visible_lines(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, line as written, its text without HTML comments) of the lines that can
    hold commands: not in fenced or indented code, block quotes or HTML comments.

    A simplification of CommonMark that errs on the side of "not a command": any fence opens
    a block whatever its indentation, an unclosed fence or HTML comment runs to the end, and a
    line indented by 4+ columns after a blank line is code.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    fence: str | None = None
    in_comment = False
    in_code = False
    block_start = True  # whether an indented code block may start here
    for lineno, raw in enumerate(lines, 1):
        if fence is not None:
            if _closes(raw, fence):
                fence, block_start = None, True
            continue
        visible, in_comment = _strip_html_comments(raw, in_comment)
        if not visible.strip():
            block_start = True
            continue
        expanded = visible.expandtabs(4)
        if len(expanded) - len(expanded.lstrip(" ")) >= 4 and (block_start or in_code):
            in_code = True
            continue
        in_code = False
        if (fence := _opens(visible)) is not None or _QUOTE.match(visible):
            # A line after a quote is its lazy continuation when indented; treat as a break.
            block_start = True
            continue
        block_start = False
        yield lineno, raw, visible


def _opens(line: str) -> str | None:
    m = _FENCE_OPEN.fullmatch(line)
    if m is None or (m["fence"][0] == "`" and "`" in m["info"]):
        return None  # ```code``` on one line is a code span, not a fence
    return m["fence"]


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _strip_html_comments(line: str, inside: bool) -> tuple[str, bool]:
    out: list[str] = []
    pos = 0
    while True:
        if inside:
            end = line.find("-->", pos)
            if end < 0:
                return "".join(out), True
            pos, inside = end + 3, False
        start = line.find("<!--", pos)
        if start < 0:
            out.append(line[pos:])
            return "".join(out), False
        out.append(line[pos:start])
        pos, inside = start + 4, True


# --------------------------------------------------------------------------------------------
# Markdown: errors and help
# --------------------------------------------------------------------------------------------


def code_span(text: str, limit: int = 80) -> str:
    """An inline code span; user text inside one cannot @-mention or inject markdown."""
    text = " ".join(text.split())  # one line; a code span cannot hold a line break
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text:
        return "(nothing)"
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


_code = code_span


def _fenced(text: str) -> str:
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, run + 1)
    return f"{fence}\n{text}\n{fence}"


def render_error(error: CommandError) -> str:
    """The reply to a line that is not a valid command (markdown)."""
    parts = [
        f"Line {error.lineno} of your comment is not a command I can run:",
        "",
        f"> {_code(error.line.strip(), 200)}",
        "",
        _sentence(error.message),
    ]
    if error.suggestion:
        parts += ["", "The closest valid form:", "", _fenced(error.suggestion)]
    parts += ["", "Send `bot: help` for the commands and their arguments."]
    return "\n".join(parts)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def help_text() -> str:
    """The reply to ``bot: help`` (markdown), generated from :data:`COMMANDS`."""
    out = [
        "### layerbot commands",
        "",
        "Write each command on a line of its own, starting with `bot:`; one comment may hold "
        "several. Lines in quotes (`>`), code blocks and HTML comments are ignored.",
        "",
    ]
    for spec in COMMANDS:
        out += _help_section(spec)
    out += [
        "#### Filters",
        "",
        "Keys may be shortened to three letters or more (`repository:`, `inst:`, "
        "`architecture=`). Patterns are regular expressions matched against the whole value, "
        "ignoring case. In `arch` and `accel` values `-` stands for `/` "
        "(`x86_64-amd-zen2` is `x86_64/amd/zen2`). With `for:` and no `accel=` the target is "
        "CPU-only; with the older `arch:`, `accel:` each filter is optional.",
        "",
        "`inst:` works with every command: with several bot instances on a PR, only those "
        "whose name matches answer (or act); the others stay silent.",
        "",
        "#### Several accelerators in one job",
        "",
        "`for:arch=x86_64/amd/zen3,accel=nvidia/cc70+nvidia/cc90` makes one job that builds "
        "for every accelerator listed (its `cfg/job.cfg` holds "
        "`accelerator = nvidia/cc70+nvidia/cc90`). No node has them all, so the job runs on "
        "a CPU node: with `on:`, on a node type `on:` selects (e.g. `on:arch=x86_64/amd/zen3`, "
        "or `on:arch=...,accel=...` for a GPU node); without `on:`, on a node type of the "
        "`for:` CPU target that has no accelerator, as if `on:arch=<that target>` were "
        "written. Each accelerator must be written out (`vendor/name`, no pattern).",
    ]
    return "\n".join(out)


def _help_section(spec: CommandSpec) -> list[str]:
    lines = [f"#### `bot: {spec.name}`", "", spec.summary, "", _code(spec.usage, 1000), ""]
    lines += [f"- {_code(a.syntax)}: {a.description}" for a in spec.args]
    if spec.args:
        lines.append("")
    label = "Examples:" if len(spec.examples) > 1 else "Example:"
    return [*lines, label, "", _fenced("\n".join(spec.examples)), ""]
