"""A fast CLI start (issue 10, item 8), checked by behaviour rather than by a stopwatch.

Start time is what a command imports. These tests run the real entry point in a fresh
interpreter and look at ``sys.modules`` afterwards: help and version must not load the
store, GitHub, S3, the web stack, rich or pydantic; `jobs` on a local SQLite store loads
none of these but pydantic (typer converts its options with it), nor SQLAlchemy, the
configuration's models or the controller. The help lines of the lazily loaded commands
must be those of the commands themselves. (``benchmarks/bench_cli.py`` measures the times.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from layerbot.cli import main as cli
from layerbot.store.db import Store
from layerbot.store.joblist import list_jobs
from tests.support.jobrows import seed_jobs

#: Packages that cost the most to import; none is needed to list jobs of a local store.
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "githubkit", "boto3",
         "botocore", "httpx", "structlog", "asyncio", "layerbot.config", "layerbot.control",
         # the store's SQLAlchemy side (the job list's one SQL text lives beside it)
         "layerbot.store.db", "layerbot.store.models", "layerbot.store.migrations",
         "layerbot.app.hardening", "layerbot.log", "layerbot.cli.deploy",
         "layerbot.cli.init")
#: Needed by no help and no version: rich draws tables, typer converts values with pydantic
#: (see cli/lazy.py).
NOT_FOR_HELP = (*HEAVY, "rich", "pydantic", "typer._adapters", "layerbot.cli.ops",
                "layerbot.store.joblist")

_PROBE = """
import json, sys
sys.argv = ["layerbot", *json.loads(sys.argv[1])]
from layerbot.cli.main import main
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
    assert _loaded(modules, NOT_FOR_HELP) == [], out
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


def test_jobs_of_a_local_sqlite_store_are_read_without_the_store(tmp_path: Path) -> None:
    """The rows through sqlite3, the store's URL from the file alone (store/joblist.py)."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    store = Store(url)
    seed_jobs(store, 30)
    (tmp_path / "layerbot.toml").write_text(f'[store]\nurl = "{url}"\n')
    args = ["jobs", "--json", "--state", "failed", "--limit", "2", "--offset", "1"]
    code, modules, out = _run(args, cwd=tmp_path)
    assert code == 0, out
    expected = list_jobs(store, state=["failed"], limit=2, offset=1)
    assert json.loads(out) == json.loads(expected.model_dump_json())
    assert _loaded(modules, (*HEAVY, "rich")) == [], out
    code, modules, out = _run(["jobs", "--pr", "3"], cwd=tmp_path)  # a table: rich
    assert code == 0 and "jobs 1–5 of 5" in out, out
    assert _loaded(modules, HEAVY) == [], out
    store.close()


def test_jobs_of_a_store_not_made_yet_go_the_full_way(tmp_path: Path) -> None:
    """No file yet: the store is made and migrated, as `layerbot jobs` always did."""
    config = tmp_path / "layerbot.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "bot.db"}"\n')
    code, modules, out = _run(["jobs", "--json", "--config", str(config)], cwd=tmp_path)
    assert code == 0, out
    assert json.loads(out)["total"] == 0
    assert _loaded(modules, ("fastapi", "starlette", "uvicorn", "boto3",
                             "layerbot.web", "layerbot.deploy", "layerbot.handlers")) == []
