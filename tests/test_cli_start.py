"""A fast CLI start (issue 10, item 8), checked by behaviour rather than by a stopwatch.

Start time is what a command imports. These tests run the real entry point in a fresh
interpreter and look at ``sys.modules`` afterwards: help and version must not load the
store, GitHub, S3 or the web stack, and `jobs` loads no web stack and no S3.
The help lines of the lazily loaded commands must be those of the commands themselves.
(``benchmarks/bench_cli.py`` measures the times.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from layerbot import cli

#: Packages that cost the most to import; none is needed to show help or the version.
#: (pydantic is not among them: typer itself uses it to convert parameters.)
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "githubkit", "boto3",
         "botocore", "httpx", "structlog", "layerbot.config", "layerbot.control",
         "layerbot.cli_ops", "layerbot.cli_deploy", "layerbot.cli_init")

_PROBE = """
import json, sys
sys.argv = ["layerbot", *json.loads(sys.argv[1])]
from layerbot.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run(args: list[str], cwd: Path | None = None) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    out, _, tail = done.stdout.rpartition("\n@@")
    result = json.loads(tail)
    return result["code"], set(result["modules"]), out + done.stderr


def _loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(r for r in roots if any(m == r or m.startswith(r + ".") for m in modules))


@pytest.mark.parametrize("args", [["--help"], [], ["version"]], ids=["help", "bare", "version"])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code, modules, out = _run(args)
    assert code in (0, 2), out  # bare `layerbot` shows help and exits 2 (no command)
    assert _loaded(modules, HEAVY) == [], out
    assert ("jobs" in out and "ingest" in out) if args != ["version"] else out.strip()


def test_help_lists_every_command_with_its_own_help_line() -> None:
    """The table's lines are what the commands say of themselves; no command is missing."""
    real = typer.Typer()
    modules = {c.module for c in cli.LAZY_COMMANDS}
    for module in sorted(modules):
        __import__(module, fromlist=["register"]).register(real)
    commands = typer.main.get_group(real).commands
    assert sorted(commands) == sorted(c.name for c in cli.LAZY_COMMANDS)
    assert "version" not in commands  # built eagerly: it is the root group's own
    for entry in cli.LAZY_COMMANDS:
        first_paragraph = (commands[entry.name].help or "").split("\n\n")[0]
        assert " ".join(first_paragraph.split()) == entry.summary, entry.name


def test_a_lazy_command_runs_and_a_typo_is_still_caught() -> None:
    code, _, out = _run(["token", "--help"])
    assert code == 0 and "create" in out and "revoke" in out, out
    code, _, out = _run(["jbos"])
    assert code == 2 and "No such command" in out, out
    assert "jobs" in out  # the suggestion sees the lazy commands too


def test_jobs_on_the_local_store_loads_no_web_stack_or_s3(tmp_path: Path) -> None:
    """(It still loads the store and, through ``control``, githubkit: see the benchmark.)"""
    config = tmp_path / "layerbot.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "bot.db"}"\n')
    code, modules, out = _run(["jobs", "--json", "--config", str(config)], cwd=tmp_path)
    assert code == 0, out
    assert json.loads(out)["total"] == 0
    assert _loaded(modules, ("fastapi", "starlette", "uvicorn", "boto3",
                             "layerbot.web", "layerbot.deploy", "layerbot.handlers")) == []
