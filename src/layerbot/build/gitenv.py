"""How the bot runs git: a fixed, minimal environment and options that run nothing foreign.

Git is a program that runs other programs: hooks, filters (``smudge``/``clean``/``process``),
merge drivers, textconv and external diff tools, an fsmonitor, credential helpers, ssh
commands, pagers, GPG. Which of those it runs is decided by configuration (system, global,
repository) and attributes (system, global, ``$GIT_DIR/info/attributes``, the tree). The bot
runs git on mirrors shared by every PR of a repository and builds PR code next to them, so
none of that may come from anywhere but the bot itself (issue 9, item 4):

* the environment is **built, not inherited**: a fixed ``PATH``, ``LANG=C``, ``HOME`` that
  does not exist, no system or global configuration (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``), no system attributes, no replace objects, no prompt. No
  variable of the bot's own environment (secrets passed by environment included) reaches
  git or anything git starts;
* every command carries ``-c`` options that switch off hooks, the fsmonitor, the global
  attributes file, commit signing, credential helpers and the ssh command a repository's
  config could name, and restrict transports to the ones the bot uses (no ``ext::``).
  Diff commands also pass ``--no-ext-diff --no-textconv`` (see ``workspace.Mirrors.diff``).

Filters and merge drivers need both an attribute and a config entry naming the command; the
config of every repository the bot runs git in is written by the bot (``workspace``), and
``workspace`` checks the mirrors' config before it uses them, so neither half can be planted.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

#: The only directories git and the programs it starts (ssh, git-remote-https) are found in.
FIXED_PATH = "/usr/local/bin:/usr/bin:/bin"

#: The whole environment of every git process the bot starts (plus per-call additions such
#: as a fetch's credentials or a commit's identity).
BASE_ENV: Mapping[str, str] = {
    "PATH": FIXED_PATH,
    "LANG": "C",
    "LC_ALL": "C",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GCM_INTERACTIVE": "never",
    "GIT_OPTIONAL_LOCKS": "0",
}

#: ``-c`` options of every git command: whatever a repository's config says, git runs no
#: hook, no fsmonitor, no signing program, no credential helper and no ssh command of its
#: choosing, reads no global attributes file, and speaks no transport the bot does not use.
SAFE_OPTIONS: tuple[str, ...] = tuple(
    arg
    for option in (
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "core.attributesFile=/dev/null",
        "core.sshCommand=ssh",
        "core.pager=cat",
        "core.askPass=",
        "credential.helper=",
        "commit.gpgSign=false",
        "tag.gpgSign=false",
        "diff.external=",
        "merge.renormalize=false",
        "protocol.allow=never",
        "protocol.file.allow=always",
        "protocol.https.allow=always",
        "protocol.http.allow=always",
        "protocol.ssh.allow=always",
        "protocol.ext.allow=never",
    )
    for arg in ("-c", option)
)


@cache
def git_executable() -> str:
    """git's absolute path, looked up once on the fixed PATH (not the bot's own)."""
    return shutil.which("git", path=FIXED_PATH) or "/usr/bin/git"


def git_argv(args: Sequence[str], *, git_dir: Path | None = None) -> list[str]:
    """The full command line: git, the safe options, ``--git-dir`` if given, then ``args``."""
    argv = [git_executable(), *SAFE_OPTIONS]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    return argv


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``BASE_ENV`` plus ``extra``; nothing of the calling process's environment."""
    return {**BASE_ENV, **(extra or {})}


def run_git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> str:
    """Blocking git for the few places outside the event loop (``layerbot run``'s snapshot).

    Raises ``subprocess.CalledProcessError`` (with git's stderr) when git fails.
    """
    result = subprocess.run(
        git_argv(args, git_dir=git_dir),
        cwd=cwd,
        env=git_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return result.stdout.strip()
