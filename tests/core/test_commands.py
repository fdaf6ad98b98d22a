# ruff: noqa: E501 -- table rows are whole command lines; they read best unwrapped
"""The command grammar: a table of realistic comments, the help text, and properties."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbot.core.commands import (
    COMMANDS,
    BuildFilters,
    Command,
    CommandError,
    ParseResult,
    command_spec,
    help_text,
    parse_comment,
    parse_line,
    render_error,
)


@dataclass(frozen=True)
class Err:
    """An expected error: words its message contains, and the suggested line."""

    contains: str
    suggestion: str | None = None


def summary(result: ParseResult) -> str | CommandError:
    return result.render() if isinstance(result, Command) else result


def check(text: str, expected: list[str | Err]) -> None:
    results = parse_comment(text)
    assert len(results) == len(expected), [summary(r) for r in results]
    for result, want in zip(results, expected, strict=True):
        if isinstance(want, Err):
            assert isinstance(result, CommandError), result
            assert want.contains.lower() in result.message.lower(), result.message
            if want.suggestion is not None:
                assert result.suggestion == want.suggestion
        else:
            assert isinstance(result, Command), result
            assert result.render() == want


# fmt: off
CASES: list[tuple[str, str, list[str | Err]]] = [
    ("plain build", "bot: build for:arch=x86_64/amd/zen2",
     ["bot: build for:arch=x86_64/amd/zen2"]),
    ("several commands among prose",
     "Thanks for the PR!\nbot: build for:arch=x86_64/amd/zen2\nand also\nbot: status\nbot: help",
     ["bot: build for:arch=x86_64/amd/zen2", "bot: status", "bot: help"]),
    ("case of bot: and the command word", "Bot: BUILD\nBOT: Show_Config",
     ["bot: build", "bot: show_config"]),
    ("no space after the colon, leading spaces", "bot:build\n   bot:  status last_build",
     ["bot: build", "bot: status last_build"]),
    ("block quotes are not commands",
     "> bot: build\n>> bot: build\n  > bot: cancel all\nbot: status",
     ["bot: status"]),
    ("fenced code with and without language",
     "```\nbot: build\n```\n```bash\nbot: build\n```\n~~~text\nbot: probe\n~~~\nbot: help",
     ["bot: help"]),
    ("a longer fence is closed only by a fence as long",
     "````\n```\nbot: build\n```\nbot: build\n````\nbot: probe", ["bot: probe"]),
    ("an unclosed fence runs to the end", "bot: help\n```\nbot: build", ["bot: help"]),
    ("a code span on one line is not a fence", "```bot: build```\nbot: probe", ["bot: probe"]),
    ("indented code after a blank line", "Example:\n\n    bot: build\n\tbot: build\nbot: probe",
     ["bot: probe"]),
    ("an indented line continuing a paragraph is text",
     "Please run\n    bot: status", ["bot: status"]),
    ("HTML comments, one line and several",
     "<!-- bot: build -->\n<!--\nbot: build\n-->\nbot: help <!-- note -->", ["bot: help"]),
    ("Windows line endings", "Hi\r\nbot: build for:arch=x86_64/amd/zen2\r\nbot: status\r\n",
     ["bot: build for:arch=x86_64/amd/zen2", "bot: status"]),
    ("- stands for / in arch and accel",
     "bot: build for:arch=x86_64-amd-zen3,accel=nvidia-cc80",
     ["bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80"]),
    ("- inside a character class keeps its meaning", "bot: build for:arch=x86_64/amd/zen[2-4]",
     ["bot: build for:arch=x86_64/amd/zen[2-4]"]),
    ("keys by prefix of 3+ letters, in any case",
     "bot: build FOR:ARCHITECTURE=x86_64/amd/zen2,ACCELERATOR=nvidia/cc80 "
     "repository:eessi.* instance:cluster-a expo:A=1",
     ["bot: build for:arch=x86_64/amd/zen2,accel=nvidia/cc80 repo:eessi.* inst:cluster-a "
      "exportvariable:A=1"]),
    ("the older syntax", "bot: build arch:x86_64-intel-icelake accel:nvidia/cc80 repo:eessi-2023.06",
     ["bot: build arch:x86_64/intel/icelake accel:nvidia/cc80 repo:eessi-2023.06"]),
    ("older syntax by prefix", "bot: build architecture:zen2 acc:amd/gfx90a ins:a",
     ["bot: build arch:zen2 accel:amd/gfx90a inst:a"]),
    ("a cross build", "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80 on:arch=x86_64/amd/zen3",
     ["bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80 on:arch=x86_64/amd/zen3"]),
    ("exportvariable repeats", "bot: build exportvariable:A=1 exportvariable:B=x=y",
     ["bot: build exportvariable:A=1 exportvariable:B=x=y"]),
    ("the other commands",
     "bot: show-config\nbot: cancel all\nbot: cancel job:42\nbot: rebuild failed\n"
     "bot: deploy repo:eessi.* dry_run\nbot: deploy force job:007\nbot: probe",
     ["bot: show_config", "bot: cancel all", "bot: cancel job:42", "bot: rebuild failed",
      "bot: deploy repo:eessi.* dry-run", "bot: deploy force job:7", "bot: probe"]),
    ("a typo in the command", "bot: biuld for:arch=x86_64/amd/zen2",
     [Err("unknown command `biuld`; did you mean `bot: build`?",
          "bot: build for:arch=x86_64/amd/zen2")]),
    ("no colon", "bot build for:arch=zen2", [Err("begins with `bot:`", "bot: build for:arch=zen2")]),
    ("a dash instead of the colon", "bot- build", [Err("begins with `bot:`", "bot: build")]),
    ("no colon and a typo", "Bot statsu last_build",
     [Err("did you mean `status`", "bot: status last_build")]),
    ("prose that mentions the bot is not a command",
     "bot is broken today\nThe bot build failed again\nbot build failed on zen2\nrobot: build",
     []),
    ("missing value", "bot: build for:arch",
     [Err("has no value", "bot: build for:arch=<cpu target>")]),
    ("empty value", "bot: build repo:", [Err("has no value", "bot: build repo:<pattern>")]),
    ("unknown key in for:", "bot: build for:arch=zen2,acel=nvidia/cc80",
     [Err("unknown key `acel`", "bot: build for:arch=zen2,accel=nvidia/cc80")]),
    ("unknown top-level key", "bot: build repp:eessi", [Err("did you mean `repo:`", "bot: build repo:eessi")]),
    ("job id not a number", "bot: cancel job:abc",
     [Err("job id must be a number", "bot: cancel job:<id>")]),
    ("invalid regex", "bot: build repo:eessi[", [Err("not a valid regular expression")]),
    ("arch= without for:", "bot: build arch=zen2", [Err("did you mean `for:arch=zen2`", "bot: build for:arch=zen2")]),
    ("a target without for:arch=", "bot: build x86_64/amd/zen2",
     [Err("for:arch=x86_64/amd/zen2", "bot: build for:arch=x86_64/amd/zen2")]),
    ("accel without key", "bot: build for:arch=zen2,nvidia/cc80",
     [Err("needs a key", "bot: build for:arch=zen2,accel=nvidia/cc80")]),
    ("on: needs for:", "bot: build on:arch=zen3", [Err("needs `for:arch=...`")]),
    ("a cross build needs one target", "bot: build for:arch=zen.* on:arch=zen3",
     [Err("must name one target")]),
    ("both syntaxes at once", "bot: build arch:zen2 for:arch=zen3",
     [Err("cannot be combined", "bot: build for:arch=zen3")]),
    ("exclusive arguments", "bot: cancel job:1 all", [Err("cannot go together", "bot: cancel job:1")]),
    ("force needs a job", "bot: deploy force", [Err("needs `job:<id>`", "bot: deploy force job:<id>")]),
    ("a job needs force", "bot: deploy job:12", [Err("needs `force`", "bot: deploy force job:12")]),
    ("a flag of another command", "bot: status last", [Err("did you mean `last_build`", "bot: status last_build")]),
    ("arguments to help", "bot: help me", [Err("unexpected argument `me`", "bot: help")]),
    ("arguments to show_config", "bot: show_config all", [Err("unexpected argument `all`", "bot: show_config")]),
    ("nothing after bot:", "bot:", [Err("no command", "bot: help")]),
    ("a list marker", "- bot: build for:arch=zen2", [Err("list marker", "bot: build for:arch=zen2")]),
    ("a code span at the start is documentation", "`bot: build` builds", []),
    ("unknown command without a close match", "Bot: I think this is wrong",
     [Err("unknown command `I`", "bot: help")]),
    ("an empty comment", "", []),
    ("sha: pins the commit, lower-cased, rendered last",
     "bot: build sha:ABCDEF1 for:arch=x86_64/amd/zen2",
     ["bot: build for:arch=x86_64/amd/zen2 sha:abcdef1"]),
    ("sha: with a full commit id", "bot: build sha:" + "a" * 40, ["bot: build sha:" + "a" * 40]),
    ("sha: on rebuild", "bot: rebuild failed sha:1234567", ["bot: rebuild failed sha:1234567"]),
    ("sha: shorter than 7 hex digits", "bot: build sha:abc123",
     [Err("7 to 40 hex digits", "bot: build sha:<commit>")]),
    ("sha: that is not hex", "bot: build sha:main", [Err("7 to 40 hex digits")]),
    ("sha: given twice", "bot: build sha:1234567 sha:89abcde", [Err("given twice")]),
    ("sha: does not go with deploy", "bot: deploy sha:1234567", [Err("does not go with")]),
    # --- Realistic comments from EESSI/software-layer PRs (issue 10): accelerator lists, on:,
    # instance:/inst: on every command. Sources: PRs #1541, #1305, #1462, #1499, #903, #1338.
    ("EESSI #1541: several GPU generations in one job, on a CPU node",
     "bot: build repo:eessi.io-2025.06-software instance:eessi-bot-mc-aws on:arch=zen3 for:arch=x86_64/amd/zen3,accel=nvidia/cc70+nvidia/cc90+nvidia/cc100+nvidia/cc120",
     ["bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc70+nvidia/cc90+nvidia/cc100+nvidia/cc120 on:arch=zen3 repo:eessi.io-2025.06-software inst:eessi-bot-mc-aws"]),
    ("an accelerator list without on:, dashes for slashes",
     "bot: build for:arch=x86_64-amd-zen4,accel=nvidia-cc80+nvidia-cc90",
     ["bot: build for:arch=x86_64/amd/zen4,accel=nvidia/cc80+nvidia/cc90"]),
    ("an AMD accelerator list", "bot: build for:arch=x86_64/amd/zen4,accel=amd/gfx90a+amd/gfx942+amd/gfx1100 on:arch=zen4",
     ["bot: build for:arch=x86_64/amd/zen4,accel=amd/gfx90a+amd/gfx942+amd/gfx1100 on:arch=zen4"]),
    ("an accelerator list needs one CPU target",
     "bot: build for:arch=x86_64/amd/zen.*,accel=nvidia/cc70+nvidia/cc90",
     [Err("with several accelerators `for:` must name one target", "bot: build for:arch=<cpu target>")]),
    ("a + that is a regex quantifier stays a pattern (no list)",
     "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc[78]0+",
     ["bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc[78]0+"]),
    ("EESSI #1541: instance: and for: with one accelerator, two instances",
     "bot: build repo:eessi.io-2025.06-software instance:eessi-bot-surf for:arch=x86_64/intel/icelake,accel=nvidia/cc80\n"
     "bot: build repo:eessi.io-2025.06-software instance:eessi-bot-rug for:arch=x86_64/amd/zen5,accel=nvidia/cc120",
     ["bot: build for:arch=x86_64/intel/icelake,accel=nvidia/cc80 repo:eessi.io-2025.06-software inst:eessi-bot-surf",
      "bot: build for:arch=x86_64/amd/zen5,accel=nvidia/cc120 repo:eessi.io-2025.06-software inst:eessi-bot-rug"]),
    ("EESSI #1462: on: with a full target and generic targets",
     "bot: build repo:eessi.io-2025.06-software instance:eessi-bot-mc-aws on:arch=x86_64/generic for:arch=x86_64/generic,accel=nvidia/cc70",
     ["bot: build for:arch=x86_64/generic,accel=nvidia/cc70 on:arch=x86_64/generic repo:eessi.io-2025.06-software inst:eessi-bot-mc-aws"]),
    ("EESSI #903: the older syntax with instance: first",
     "bot: build instance:eessi-bot-casparvl repo:eessi.io-2023.06-software arch:zen4 accel:nvidia/cc90",
     ["bot: build arch:zen4 accel:nvidia/cc90 repo:eessi.io-2023.06-software inst:eessi-bot-casparvl"]),
    ("inst: and instance: on every command that answers",
     "bot: show_config inst:eessi-bot-rug\nbot: status instance:eessi-bot-surf\nbot: probe inst:eessi-bot-.*\n"
     "bot: help instance:eessi-bot-jsc\nbot: status last_build inst:a\nbot: cancel all ins:a\nbot: rebuild failed inst:a",
     ["bot: show_config inst:eessi-bot-rug", "bot: status inst:eessi-bot-surf", "bot: probe inst:eessi-bot-.*",
      "bot: help inst:eessi-bot-jsc", "bot: status last_build inst:a", "bot: cancel all inst:a", "bot: rebuild failed inst:a"]),
    ("a typo in instance:", "bot: show_config instanse:eessi-bot-rug",
     [Err("did you mean `inst:`", "bot: show_config inst:eessi-bot-rug")]),
    ("repo: does not go with show_config", "bot: show_config repo:eessi.io-2023.06-software",
     [Err("does not go with")]),
    ("inst: given twice", "bot: status inst:a instance:b", [Err("given twice")]),
]
# fmt: on


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_comments(text: str, expected: list[str | Err]) -> None:
    check(text, expected)


def test_parsed_fields_and_line_numbers() -> None:
    text = "hello\r\n\r\nbot: build for:arch=x86_64-amd-zen3,accel=nvidia/cc80 on:arch=zen3 x:1\r\n"
    text += "bot: build for:arch=x86_64/amd/zen3,accel=nvidia/cc80 on:arch=x86_64/amd/zen3 "
    text += "repo:eessi.* inst:a exportvariable:A=1 exportvariable:B=2"
    error, command = parse_comment(text)
    assert isinstance(error, CommandError) and error.lineno == 3
    assert isinstance(command, Command)
    assert command.lineno == 4
    assert command.line.startswith("bot: build for:arch=x86_64/amd/zen3")
    assert command.filters == BuildFilters(
        for_arch="x86_64/amd/zen3",
        for_accel="nvidia/cc80",
        on_arch="x86_64/amd/zen3",
        repo="eessi.*",
        inst="a",
        exportvariables=(("A", "1"), ("B", "2")),
    )
    assert command.filters.cross
    assert command.filters.exportvars == {"A": "1", "B": "2"}


def test_flags_and_job() -> None:
    deploy = parse_line("bot: deploy force job:12 dry-run")
    assert isinstance(deploy, Command)
    assert (deploy.force, deploy.dry_run, deploy.job_id) == (True, True, 12)
    assert deploy.render() == "bot: deploy dry-run force job:12"
    status = parse_line("bot: status last-build")
    assert isinstance(status, Command) and status.last_build


def test_on_equal_to_for_is_not_cross() -> None:
    command = parse_line("bot: build for:arch=x86_64/amd/zen2 on:arch=x86_64-amd-zen2")
    assert isinstance(command, Command)
    assert not command.filters.cross


def test_legacy_marks_the_filters() -> None:
    old = parse_line("bot: build arch:zen2")
    new = parse_line("bot: build for:arch=zen2")
    assert isinstance(old, Command) and isinstance(new, Command)
    assert old.filters.legacy and not new.filters.legacy
    assert old != new  # an absent accel: means "any" in the older syntax, "none" in the new


def test_error_reply() -> None:
    error = parse_line("bot: biuld for:arch=x86_64/amd/zen2 @someone", 3)
    assert isinstance(error, CommandError)
    reply = render_error(error)
    assert "> `bot: biuld for:arch=x86_64/amd/zen2 @someone`" in reply  # quoted, in a code span
    assert "did you mean `bot: build`?" in reply
    assert "```\nbot: build" in reply
    assert "`bot: help`" in reply
    assert parse_comment(reply) == []  # the bot's own reply holds no live command


def test_error_reply_with_backticks() -> None:
    error = parse_line("bot: build repo:``x[")
    assert isinstance(error, CommandError)
    reply = render_error(error)
    assert "> ```bot: build repo:``x[```" in reply  # a span longer than any run inside it
    assert parse_comment(reply) == []


# --- help ---------------------------------------------------------------------------------


def test_help_lists_every_command_and_argument() -> None:
    text = help_text()
    for spec in COMMANDS:
        assert f"#### `bot: {spec.name}`" in text
        assert spec.usage in text
        for arg in spec.args:
            assert arg.syntax in text


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: s.name)
def test_every_example_parses(spec: object) -> None:
    assert spec in COMMANDS
    name = command_spec(getattr(spec, "name")).name  # noqa: B009
    for example in command_spec(name).examples:
        result = parse_line(example)
        assert isinstance(result, Command) and result.name == name, (example, result)


def test_every_line_in_help_code_blocks_parses() -> None:
    blocks = re.findall(r"^```\n(.*?)\n```$", help_text(), flags=re.S | re.M)
    lines = [line for block in blocks for line in block.split("\n")]
    assert len(lines) == sum(len(s.examples) for s in COMMANDS)
    for line in lines:
        assert isinstance(parse_line(line), Command), line


def test_help_holds_no_live_command() -> None:
    assert parse_comment(help_text()) == []


# --- properties ---------------------------------------------------------------------------

_WORDS = [s.name for s in COMMANDS] + ["biuld", "stauts", "show-config", "Build", "depoly", "x"]
_TOKENS = [
    "for:arch=x86_64/amd/zen2",
    "for:arch=x86_64-amd-zen3,accel=nvidia/cc80",
    "for:arch=zen{2,3}",
    "for:arch=zen[2-4],accel=amd-gfx90a",
    "on:arch=x86_64/amd/zen3",
    "on:arch=x86_64/.*,accel=nvidia/.*",
    "arch:x86_64/.*",
    "accel:nvidia/cc80",
    "repo:eessi.*",
    "repository:eessi-2023.06",
    "inst:cluster-a",
    "exportvariable:A=1",
    "exportvariable:B=x=y",
    "job:12",
    "job:abc",
    "all",
    "failed",
    "last_build",
    "dry-run",
    "force",
    "for:arch",
    "for:",
    "acel:x",
    "sha:1a2b3c4",
    "sha:zz",
]
_FREE = st.text(
    alphabet=st.sampled_from(list("abz09:=,-/.*[](){}\\|?+`<>!_ ")), min_size=0, max_size=12
)
_PREFIXES = ["bot:", "bot: ", "Bot: ", "BOT:", "  bot: ", "bot ", "bot- ", "@bot ", "- bot: "]


@st.composite
def command_lines(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(_PREFIXES))
    word = draw(st.sampled_from(_WORDS))
    tokens = draw(st.lists(st.one_of(st.sampled_from(_TOKENS), _FREE), max_size=5))
    return prefix + " ".join([word, *tokens])


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_round_trip(results: list[ParseResult]) -> None:
    for result in results:
        if isinstance(result, Command):
            line = result.render()
            assert parse_line(line) == result, line
            assert parse_comment(line) == [result], line
        else:
            assert isinstance(result.message, str) and result.message
            assert isinstance(render_error(result), str)


@FAST
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    results = parse_comment(text)
    assert [(r, r.lineno, r.line) for r in results] == [
        (r, r.lineno, r.line) for r in parse_comment(text)
    ]
    _assert_round_trip(results)


@FAST
@given(st.lists(st.one_of(command_lines(), st.text(max_size=20)), max_size=6))
def test_command_like_lines_never_raise_and_round_trip(lines: list[str]) -> None:
    text = "\n".join(lines)
    results = parse_comment(text)
    assert results == parse_comment(text)
    _assert_round_trip(results)


@settings(FAST, max_examples=50)
@given(
    st.sampled_from(["x86_64/amd/zen2", "x86_64-amd-zen3", "aarch64/neoverse_v1", "x86_64/.*"]),
    st.none() | st.sampled_from(["nvidia/cc80", "nvidia-cc90", "amd/gfx90a"]),
    st.none() | st.sampled_from(["eessi.*", "eessi-2023.06"]),
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True),
        st.text(alphabet="abc=,:/1", max_size=5),
        max_size=3,
    ),
)
def test_valid_builds_parse_and_round_trip(
    arch: str, accel: str | None, repo: str | None, exports: dict[str, str]
) -> None:
    tokens = ["bot: build", f"for:arch={arch}" + (f",accel={accel}" if accel else "")]
    tokens += [f"repo:{repo}"] if repo else []
    tokens += [f"exportvariable:{k}={v}" for k, v in exports.items()]
    result = parse_line(" ".join(tokens))
    assert isinstance(result, Command), result
    assert result.filters.for_arch == arch.replace("-", "/")
    assert result.filters.exportvars == exports
    _assert_round_trip([result])


def test_batch_options_parse_render_and_validate() -> None:
    from layerbot.core.commands import Command, parse_comment
    from layerbot.core.targets import validate_batch_options

    (cmd,) = parse_comment("bot: build for:arch=x86_64/amd/zen2 batch:time=04:00:00 batch:mem=8G")
    assert isinstance(cmd, Command)
    assert cmd.filters.batch_options == (("time", "04:00:00"), ("mem", "8G"))
    assert parse_comment(cmd.render()) == [cmd]
    assert validate_batch_options(cmd.filters.batch_options, ["time", "mem"], "slurm") == []
    (problem,) = validate_batch_options(cmd.filters.batch_options, ["time"], "slurm")
    assert "`mem`" in problem and "allowed: `time`" in problem
    assert "none on this instance (local backend)" in validate_batch_options(
        cmd.filters.batch_options, [], "local")[0]


def test_accelerator_lists_are_literal_items_joined_by_plus() -> None:
    from layerbot.core.commands import accel_matches, accelerator_list

    assert accelerator_list("nvidia/cc70+nvidia/cc90") == ("nvidia/cc70", "nvidia/cc90")
    assert accelerator_list("nvidia/cc90") == ()
    assert accelerator_list("nvidia/cc[78]0+") == ()  # a regex, not a list
    assert accelerator_list("nvidia/cc70+") == ()
    assert accelerator_list("nvidia/.*+amd/gfx90a") == ()
    # a list selects the job built for that list, in any order; never a single accelerator
    assert accel_matches("nvidia/cc90+nvidia/cc70", "nvidia/cc70+nvidia/cc90")
    assert not accel_matches("nvidia/cc70+nvidia/cc90", "nvidia/cc70")
    assert not accel_matches("nvidia/cc70+nvidia/cc90", "nvidia/cc70+nvidia/cc90+nvidia/cc100")
    assert accel_matches("nvidia/.*", "nvidia/cc80")


def test_help_says_how_an_accelerator_list_chooses_its_node_type() -> None:
    text = help_text()
    assert "accel=nvidia/cc70+nvidia/cc90" in text
    assert "with `on:`" in text and "without `on:`" in text
    assert "`inst:` works with every command" in text
    for spec in COMMANDS:
        assert spec.arg("instance") is not None, spec.name
