"""Clean-up never follows a link (issue 9, item 3).

The attack: a job leaves a read-only directory holding a symlink to one of the bot's key
files. Removing the job directory fails on the read-only directory, and the old retry
handler "made the entry writable" with ``chmod(path)``, which followed the link and changed
the mode of the bot's key. The removal runs here as an unprivileged user (as a bot that is
not root does; root's unlink never fails on a read-only directory), on a tree shaped exactly
as a job leaves it, and the key keeps its mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbot.build.workspace import remove_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs to switch to nobody")

NOBODY = 65534



def _remove_as_nobody(path: Path) -> None:
    """remove_tree in a forked child that became nobody (the code is already imported)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            remove_tree(path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the removal failed"


def _as_nobody(tmp: Path, *paths: Path) -> None:
    for p in paths:
        os.lchown(p, NOBODY, NOBODY)
    os.chown(tmp, NOBODY, NOBODY)  # it removes "job" from here


def test_removal_never_chmods_through_a_symlink(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    key.chmod(0o400)
    job = tmp_path / "job"
    ro = job / "ro"
    ro.mkdir(parents=True)
    (ro / "link").symlink_to(key)
    # Only the link: the first failing unlink must be the link's (then the handler chmods it).
    _as_nobody(tmp_path, key, job, ro, ro / "link")
    ro.chmod(0o555)
    _remove_as_nobody(job)
    assert not job.exists(), "the job directory was not removed"
    assert oct(key.stat().st_mode & 0o7777) == oct(0o400), "the key's mode changed"
    assert key.read_text().startswith("-----BEGIN")


def test_removal_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    job = tmp_path / "job"
    job.mkdir()
    (job / "escape").symlink_to(outside, target_is_directory=True)
    remove_tree(job)
    assert not job.exists()
    assert (outside / "keep").read_text() == "keep"
