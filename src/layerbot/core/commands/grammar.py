"""The grammar, as data: the argument and command specs and the table of commands.

The parser (``arguments``, ``parser``) and ``bot: help`` (``help``) are both generated from
:data:`COMMANDS`, so help never drifts from what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


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
