"""Removing a tree a job may have shaped, without ever following a link (issue 9, item 3).

``shutil.rmtree`` walks with file descriptors and never follows links, but the usual
"make it writable and retry" error handler did ``chmod(path)``, which follows a symlink: a
job that left ``ro/link -> <the bot's key>`` in a read-only directory had the bot chmod its
own key. Here the retry only changes the *directory* that holds the entry, opened with
``O_NOFOLLOW`` and changed through its descriptor (``fchmod``), and a symlink is never
chmodded (removing it needs only its directory to be writable).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _writable_dir(path: str) -> None:
    """Add u+wx to the directory ``path`` itself; nothing if it is (now) a link."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, os.fstat(fd).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        finally:
            os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a tree, file or link) without following any link."""

    def retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        _writable_dir(os.path.dirname(target))
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(target).st_mode):
                _writable_dir(target)
        func(target)

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    shutil.rmtree(path, onerror=retry)
