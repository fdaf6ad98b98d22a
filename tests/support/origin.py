"""A real git repository standing in for the one on GitHub, with PR refs like GitHub's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "software-layer"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
}


class Origin:
    """``root/<owner>/<name>``: a work tree whose commits and refs the bot fetches."""

    def __init__(self, root: Path, repo: str, content: Path = EXAMPLE) -> None:
        self.path = root / repo
        self.path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        shutil.copytree(content, self.path, dirs_exist_ok=True)
        self.commit("initial content")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, env=env,
                              capture_output=True, text=True).stdout.strip()

    def commit(self, message: str, files: dict[str, str] | None = None,
               remove: tuple[str, ...] = ()) -> str:
        for name, text in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            if name.endswith(".sh"):
                target.chmod(0o755)
        for name in remove:
            self.git("rm", "-q", name)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def open_pr(self, number: int, files: dict[str, str] | None = None,
                remove: tuple[str, ...] = (), base: str = "main") -> str:
        """A branch off ``base`` with one commit, published as refs/pull/<n>/head."""
        self.git("checkout", "-q", "-B", f"pr-{number}", base)
        sha = self.commit(f"PR {number}", files, remove)
        self.git("update-ref", f"refs/pull/{number}/head", sha)
        self.git("checkout", "-q", base)
        return sha

    def push_pr(self, number: int, files: dict[str, str]) -> str:
        """A new commit on the PR branch (what a contributor's push does)."""
        self.git("checkout", "-q", f"pr-{number}")
        sha = self.commit(f"PR {number} update", files)
        self.git("update-ref", f"refs/pull/{number}/head", sha)
        self.git("checkout", "-q", "main")
        return sha

    def advance_base(self, files: dict[str, str], base: str = "main") -> str:
        self.git("checkout", "-q", base)
        return self.commit("base moves on", files)
