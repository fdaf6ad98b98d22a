"""Hand a prepared job directory to the job user, and keep the bot's own files away from it.

Why this shape: the bot (root) prepares the job directory, then gives everything *inside* it
to the job user with ``lchown`` on an fd-based walk (``os.fwalk``, ``follow_symlinks=False``),
so a symlink committed in the PR can never redirect a chown to a file of the bot. The job
directory itself stays root's, group = the job user's group, mode ``01770``: the job can
create and change its files, but the sticky bit stops it from renaming or replacing what
the bot keeps there (``.layerbot/``, the launcher's state, root-owned and 0700).

Without root (``JobUser.switch`` is SUDO) nothing can be chowned. The site makes the bot's
user a member of the job user's group (docs/security.md); the bot then gives the tree to
that *group* (``lchown`` with the uid unchanged, ``g+rwX`` on everything but links) and
makes the job directory its own, group-shared, ``03770``: setgid, so what the job creates
stays in the group the bot can read, and sticky, so the job cannot replace the bot's files.
The job user is not in the bot's group, so the bot's own files stay out of its reach.

The data directory becomes ``0711`` (traversable, not listable): a job reaches its own job
directory and reads the mirrors its checkout borrows objects from (root-owned, so not
writable), nothing else. The SQLite database is made ``0600``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from pathlib import Path

from layerbot.build.identity import JobUser, Switch
from layerbot.build.safe_remove import remove_tree

#: Kept by the bot inside the job directory; never the job's.
BOT_STATE_DIR = ".layerbot"
#: How long the job user's ``rm -rf`` of a job directory may take.
REMOVE_TIMEOUT_SECONDS = 600


class HandOverFailed(Exception):
    """The job directory could not be given to the job user (the message says what to fix)."""


def hand_over(job_dir: Path, user: JobUser) -> None:
    """Give the contents of ``job_dir`` to ``user``; see the module docstring."""
    try:
        _hand_over(job_dir, user)
    except OSError as exc:
        hint = (f"; the bot's user must be a member of the group of {user.name} "
                "(docs/security.md)" if user.switch is Switch.SUDO else "")
        raise HandOverFailed(f"cannot give the job directory to {user.name}: "
                             f"{exc.strerror or exc} ({exc.filename}){hint}") from None


def _hand_over(job_dir: Path, user: JobUser) -> None:
    remove_tree(job_dir / BOT_STATE_DIR)  # a PR's own ".layerbot" is not the bot's
    if user.switch is Switch.SUDO:
        return _share_with_group(job_dir, user)
    for _root, dirs, files, root_fd in os.fwalk(job_dir, follow_symlinks=False):
        for name in dirs + files:
            os.chown(name, user.uid, user.gid, dir_fd=root_fd, follow_symlinks=False)
    os.chown(job_dir, 0, user.gid, follow_symlinks=False)
    os.chmod(job_dir, 0o1770)  # noqa: S103 (group = the job user only; sticky)


def _share_with_group(job_dir: Path, user: JobUser) -> None:
    """The bot is not root: the job user's group gets the tree (see the module docstring)."""
    for _root, dirs, files, root_fd in os.fwalk(job_dir, follow_symlinks=False):
        for name in dirs + files:
            info = os.lstat(name, dir_fd=root_fd)
            if stat.S_ISLNK(info.st_mode):
                continue  # a link's own mode means nothing, and chmod would follow it
            os.chown(name, -1, user.gid, dir_fd=root_fd, follow_symlinks=False)
            extra = stat.S_IRWXG if stat.S_ISDIR(info.st_mode) else (
                stat.S_IRGRP | stat.S_IWGRP | (stat.S_IXGRP if info.st_mode & stat.S_IXUSR else 0))
            os.chmod(name, stat.S_IMODE(info.st_mode) | extra, dir_fd=root_fd,
                     follow_symlinks=False)
    os.chown(job_dir, -1, user.gid, follow_symlinks=False)
    os.chmod(job_dir, 0o3770)  # noqa: S103 (group = the job user's; setgid and sticky)


def secure_data_dir(data_dir: Path, db_files: list[Path]) -> None:
    """Data dir traversable only; the database only the bot's."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(data_dir, 0o711)  # noqa: S103 (traverse only, see docstring)
    for path in db_files:
        with contextlib.suppress(FileNotFoundError):
            if not path.is_symlink():
                os.chmod(path, 0o600)


def remove_job_dir(job_dir: Path, user: JobUser | None) -> None:
    """Remove a job directory whatever the job left in it.

    As root (or unisolated) the bot removes everything itself. Without root it cannot
    remove what the job user created in directories of its own (mode 0755, say), so the job
    user removes first what it can (``rm -rf`` through the same sudo rule; rm never follows
    a link), then the bot removes the rest, which is its own.
    """
    if user is not None and user.switch is Switch.SUDO and os.path.lexists(job_dir):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*user.sudo_prefix(), "rm", "-rf", "--one-file-system", "--",
                            os.path.abspath(job_dir)], cwd="/", capture_output=True,
                           timeout=REMOVE_TIMEOUT_SECONDS, check=False)
    remove_tree(job_dir)
