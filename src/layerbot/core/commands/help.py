"""Markdown replies generated from the grammar: an error's explanation and ``bot: help``."""

from __future__ import annotations

import re

from layerbot.core.commands.grammar import COMMANDS, CommandSpec
from layerbot.core.commands.markdown import code_span as _code
from layerbot.core.commands.parsed import CommandError


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
