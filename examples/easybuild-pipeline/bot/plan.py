"""Writes the pipeline's plan: one step per easyconfig the PR's easystacks need built.

Run by bot/plan.sh in the job's checkout (the current directory). What it does:

1. Which easystacks: those the PR changes (from the ``<N>.diff`` the bot writes beside the
   checkout, else ``git diff base...HEAD`` with the base from ``cfg/job.cfg``); all of
   ``easystacks/`` when the PR's changes cannot be known.
2. Which easyconfigs are missing, in dependency order: ``eb --dry-run --robot`` on all of
   the easystacks' easyconfigs (``[ ]`` = to build, ``[x]`` = its module exists already).
3. What each one needs: ``eb --dry-run --robot <easyconfig>`` lists its whole dependency
   closure; the missing ones of it are steps of this plan. ``needs`` is that closure, not
   only the direct dependencies: a step gets the artifacts of the steps it names, and
   loading a module needs the modules of its dependencies' dependencies too.

EasyBuild's output is read line by line and anything but the overview lines is ignored; if
EasyBuild fails, the plan fails with its message (exit 1, no plan written).
Python standard library only: it runs on the system's python3.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

EB = os.environ.get("LAYERBOT_EB", "/opt/layerbot-easybuild/bin/eb")
EASYSTACK_DIR = "easystacks"
EASYCONFIG_DIR = "easyconfigs"
#: pipelines.max_steps of the contract: fail here with a clear message, not at the bot.
MAX_STEPS = 50
#: ``eb --dry-run``'s overview line: `` * [ ] /path/to/x-1.0.eb (module: x/1.0)``.
OVERVIEW_LINE = re.compile(
    r"^\s*\*\s+\[(?P<status>.)\]\s+(?P<path>\S+\.eb)\s+\(module:\s*(?P<module>[^)]+)\)\s*$"
)
#: Step ids: the contract's alphabet and length.
ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class PlanError(Exception):
    """Something the PR's author must fix (or EasyBuild refused): the plan fails with it."""


@dataclass(frozen=True)
class Entry:
    """One line of EasyBuild's dry-run overview."""

    path: Path  # the easyconfig file EasyBuild resolved
    module: str  # e.g. libgreet/1.0
    installed: bool


# ------------------------------------------------------------------ what the PR changes


def changed_paths(checkout: Path) -> set[str] | None:
    """Paths the PR adds or changes (relative to the checkout), None if unknown or if the
    build is not of a PR (`layerbot run` of a branch builds every easystack)."""
    cfg = job_cfg(checkout)
    if cfg.has_option("layerbot", "pr") and not cfg.get("layerbot", "pr").strip():
        return None  # the bot's job.cfg says this build is of a branch, not of a PR
    diffs = sorted(checkout.glob("[0-9]*.diff"))
    if diffs:
        # The bot's diff (as GitHub shows the PR: merge base to head).
        return paths_in_diff(diffs[0].read_text(errors="replace"))
    base = base_sha(checkout)
    if base and (checkout / ".git").exists():
        # The checkout may belong to another user (the bot's mirror): tell git it is safe
        # for this one read-only command instead of failing with "dubious ownership".
        proc = subprocess.run(
            ["git", "-c", "safe.directory=*", "diff", "--name-only", "--no-renames",
             "--no-ext-diff", "--no-textconv", "--diff-filter=d", f"{base}...HEAD"],
            cwd=checkout, capture_output=True, text=True, errors="replace", check=False,
        )
        if proc.returncode == 0:
            return {line for line in proc.stdout.splitlines() if line}
        print(f"plan: git diff {base}...HEAD failed ({proc.stderr.strip()}); "
              "taking every easystack", file=sys.stderr)
    return None


def paths_in_diff(text: str) -> set[str]:
    """Files a unified diff leaves at head (a deleted file is not there to build)."""
    paths = set()
    for line in text.splitlines():
        if line.startswith("+++ b/"):
            paths.add(line[len("+++ b/"):].rstrip("\t"))
    return paths


def job_cfg(checkout: Path) -> configparser.ConfigParser:
    """cfg/job.cfg as the bot wrote it (empty if it cannot be read)."""
    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read(checkout / "cfg" / "job.cfg")
    except configparser.Error:
        return configparser.ConfigParser(interpolation=None)
    return cfg


def base_sha(checkout: Path) -> str | None:
    """The PR's base commit as the bot wrote it in cfg/job.cfg ([layerbot] base_sha)."""
    value = job_cfg(checkout).get("layerbot", "base_sha", fallback="").strip()
    return value if re.fullmatch(r"[0-9a-fA-F]{7,64}", value) else None


def easystacks(checkout: Path) -> list[Path]:
    every = sorted(p for p in (checkout / EASYSTACK_DIR).glob("*.y*ml") if p.is_file())
    changed = changed_paths(checkout)
    if changed is None:
        print("plan: the PR's changes are unknown: taking every easystack", file=sys.stderr)
        return every
    return [p for p in every if p.relative_to(checkout).as_posix() in changed]


# ---------------------------------------------------------------------- easystack files


def read_easystack(path: Path) -> list[str]:
    """The easyconfig file names an easystack lists.

    EasyBuild reads easystacks with PyYAML, which its venv does not have; the format is
    simple enough to read here: a top-level ``easyconfigs:`` list of names. Per-entry
    ``options`` are refused rather than silently ignored.
    """
    names: list[str] = []
    in_list = False
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        if not line[0].isspace():
            if line != "easyconfigs:":
                raise PlanError(f"{where}: only a top-level 'easyconfigs:' list is supported")
            in_list = True
            continue
        item = re.fullmatch(r"\s+-\s+(?P<name>\S+?)(?P<colon>:?)", line)
        if not in_list or not item:
            raise PlanError(f"{where}: expected '  - <easyconfig>.eb', found {raw.strip()!r}"
                            " (per-easyconfig options are not supported)")
        name = item["name"].strip("'\"")
        if not name.endswith(".eb"):
            name += ".eb"
        names.append(name)
    return names


# ---------------------------------------------------------------------------- EasyBuild


def dry_run(checkout: Path, work: Path, easyconfigs: list[str]) -> list[Entry]:
    """``eb --dry-run --robot``: the easyconfigs and their dependencies, in build order."""
    as_root = ["--allow-use-as-root-and-accept-consequences"] if os.geteuid() == 0 else []
    cmd = [
        EB, *as_root,
        # Everything EasyBuild writes stays in a scratch directory of the job: nothing in
        # $HOME, nothing in a shared /tmp.
        f"--prefix={work / 'eb'}", f"--installpath={work / 'install'}",
        f"--tmpdir={work / 'tmp'}",
        f"--robot={checkout / EASYCONFIG_DIR}",
        "--dry-run", *easyconfigs,
    ]
    try:
        proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True,
                              errors="replace", check=False)
    except OSError as exc:
        raise PlanError(f"cannot run EasyBuild ({EB}): {exc}") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise PlanError(f"EasyBuild failed (exit {proc.returncode}) on "
                        f"{' '.join(easyconfigs)}:\n{tail(output)}")
    entries = []
    for line in output.splitlines():
        match = OVERVIEW_LINE.match(line)
        if match:  # banners, warnings and log-file notes are not overview lines
            entries.append(Entry(Path(match["path"]).resolve(), match["module"].strip(),
                                 installed=match["status"] == "x"))
    if not entries:
        raise PlanError(f"EasyBuild printed no build overview for {' '.join(easyconfigs)}:"
                        f"\n{tail(output)}")
    return entries


def tail(output: str, lines: int = 25) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------ the plan


def step_id(path: Path, taken: set[str]) -> str:
    base = ID_UNSAFE.sub("_", path.stem)[:60]
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def cache_key(checkout: Path, path: Path, needed_keys: list[str]) -> str:
    """Easyconfig name + a hash of what decides the artifact: the easyconfig, its sources
    kept in ``src/<name>-<version>/``, and the keys of the steps it is built against (a
    changed library rebuilds what links to it)."""
    digest = hashlib.sha256(path.read_bytes())
    sources = checkout / "src" / path.stem
    if sources.is_dir():
        for file in sorted(p for p in sources.rglob("*") if p.is_file()):
            digest.update(file.relative_to(sources).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    for key in sorted(needed_keys):
        digest.update(key.encode() + b"\0")
    return f"{path.stem}-{digest.hexdigest()[:16]}"


def command_for(checkout: Path, path: Path) -> str:
    # An easyconfig of the checkout by its relative path; one from EasyBuild's own
    # collection by its file name (step.sh's EasyBuild finds it again).
    ec = path.relative_to(checkout).as_posix() if path.is_relative_to(checkout) else path.name
    return f"bot/step.sh {shlex.quote(ec)}"


def make_plan(checkout: Path, work: Path) -> dict:
    stacks = easystacks(checkout)
    names = list(dict.fromkeys(n for stack in stacks for n in read_easystack(stack)))
    print(f"plan: easystacks {[s.name for s in stacks]}: {len(names)} easyconfig(s)",
          file=sys.stderr)
    if not names:
        return {"version": 1, "steps": []}

    overview = dry_run(checkout, work, names)
    missing = [e for e in overview if not e.installed]
    if len(missing) > MAX_STEPS:
        raise PlanError(f"{len(missing)} easyconfigs to build: more than {MAX_STEPS} steps; "
                        "split the easystack over several PRs")
    ids: dict[Path, str] = {}
    taken: set[str] = set()
    for entry in missing:
        ids[entry.path] = step_id(entry.path, taken)

    keys: dict[Path, str] = {}
    steps = []
    for entry in missing:  # dependency order: a step's needs already have their keys
        closure = dry_run(checkout, work, [str(entry.path)])
        needs = [e.path for e in closure if e.path != entry.path and e.path in ids]
        keys[entry.path] = cache_key(checkout, entry.path, [keys[p] for p in needs])
        steps.append({
            "id": ids[entry.path],
            "name": entry.module,
            "command": command_for(checkout, entry.path),
            "needs": [ids[p] for p in needs],
            "cache_key": keys[entry.path],
        })
    return {"version": 1, "steps": steps}


def main() -> int:
    target = os.environ.get("LAYERBOT_PLAN_FILE")
    if not target:
        print("plan: $LAYERBOT_PLAN_FILE is not set (run by layerbot as a plan script)",
              file=sys.stderr)
        return 2
    checkout = Path.cwd().resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="_plan-", dir=checkout) as work:
            plan = make_plan(checkout, Path(work))
    except PlanError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 1
    Path(target).write_text(json.dumps(plan, indent=2) + "\n")
    for step in plan["steps"]:
        needs = ", ".join(step["needs"]) or "nothing"
        print(f"plan: step {step['id']} ({step['name']}) needs {needs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
