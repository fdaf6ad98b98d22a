"""Hand a prepared job directory to the job user, and keep the bot's own files away from it.

Why this shape: the bot (root) prepares the job directory, then gives everything *inside* it
to the job user with ``lchown`` on an fd-based walk (``os.fwalk``, ``follow_symlinks=False``),
so a symlink committed in the PR can never redirect a chown to a file of the bot. The job
directory itself stays root's, group = the job user's group, mode ``01770``: the job can
create and change its files, but the sticky bit stops it from renaming or replacing what
the bot keeps there (``.layerbot/``, the launcher's state, root-owned and 0700).

The data directory becomes ``0711`` (traversable, not listable): a job reaches its own job
directory and reads the mirrors its checkout borrows objects from (root-owned, so not
writable), nothing else. The SQLite database is made ``0600``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from layerbot.build.identity import JobUser
from layerbot.build.safe_remove import remove_tree

#: Kept by the bot inside the job directory; never the job's.
BOT_STATE_DIR = ".layerbot"


def hand_over(job_dir: Path, user: JobUser) -> None:
    """Give the contents of ``job_dir`` to ``user``; see the module docstring."""
    remove_tree(job_dir / BOT_STATE_DIR)  # a PR's own ".layerbot" is not the bot's
    for _root, dirs, files, root_fd in os.fwalk(job_dir, follow_symlinks=False):
        for name in dirs + files:
            os.chown(name, user.uid, user.gid, dir_fd=root_fd, follow_symlinks=False)
    os.chown(job_dir, 0, user.gid, follow_symlinks=False)
    os.chmod(job_dir, 0o1770)  # noqa: S103 (group = the job user only; sticky)


def secure_data_dir(data_dir: Path, db_files: list[Path]) -> None:
    """Data dir traversable only; the database only the bot's."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(data_dir, 0o711)  # noqa: S103 (traverse only, see docstring)
    for path in db_files:
        with contextlib.suppress(FileNotFoundError):
            if not path.is_symlink():
                os.chmod(path, 0o600)
