"""Reading files from a job directory, which the job (PR code) controls.

A job can replace anything in its directory after the bot wrote it: a result or log file
with a symlink to a bot file (the bot would print it in a check run), with a FIFO (a plain
``open()`` blocks forever, and with it the reconciler of every job), with a huge file, or
make ``cfg/`` a symlink to another tree. So every read here:

* walks the path one component at a time relative to a directory fd, each opened with
  ``O_NOFOLLOW`` (a symlinked parent is refused as well as a symlinked file);
* opens the file with ``O_NONBLOCK | O_NOCTTY``, so a FIFO or device never blocks the open,
  and ``fstat``s the open descriptor: only a regular file is read (no check-then-open race);
* refuses files above a size cap, and reads at most that many bytes even if the file grows;
* runs in a daemon thread with a time limit, so a read that hangs (a stuck network file
  system, a FUSE mount the job made) costs the caller that limit and no more.

Anything else raises :class:`Refused`, whose message is a line for the job's report
("_bot_job12.result is a symlink: ignored"). Nothing here opens a file for writing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

T = TypeVar("T")

#: Time limit for reading one small file (result, test file, log tail).
READ_SECONDS = 10.0
#: Time limit for hashing one artifact: gigabytes at disk speed, but never unbounded.
HASH_SECONDS = 900.0
#: Artifacts above this are refused (EESSI tarballs are a few GiB).
MAX_ARTIFACT_BYTES = 64 * 1024**3
_CHUNK = 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(Exception):
    """A file of the job directory the bot will not read; ``str()`` is the report line."""


@dataclass(frozen=True)
class Entry:
    """A name in a directory, as ``lstat`` saw it (links are not followed)."""

    name: str
    regular: bool
    mtime: float


def bounded(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()`` in a daemon thread; :class:`Refused` if it takes longer than ``seconds``.

    A thread, not the caller's, because a read stuck in the kernel cannot be interrupted:
    the stuck thread is abandoned (daemon, so it never holds the process open) and the
    caller moves on to the other jobs.
    """
    box: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=run, name=f"read {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Refused(f"{what}: reading it took longer than {seconds:g} s: ignored")
    if error:
        raise error[0]
    return box[0]


def read_bytes(job_dir: Path, rel: str, max_bytes: int, seconds: float = READ_SECONDS) -> bytes:
    """The whole file ``rel`` (relative to ``job_dir``), if it is a regular file <= max_bytes."""

    def read() -> bytes:
        fd = _open_file(job_dir, rel)
        try:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise Refused(f"{rel} is {size} bytes, more than the {max_bytes} allowed: ignored")
            data = _read_upto(fd, max_bytes + 1)
        finally:
            os.close(fd)
        if len(data) > max_bytes:  # grew while we read it
            raise Refused(f"{rel} is more than the {max_bytes} bytes allowed: ignored")
        return data

    return bounded(read, seconds, rel)


def tail_bytes(job_dir: Path, rel: str, lines: int, *, block: int = 64 * 1024,
               max_bytes: int = 4 * 1024 * 1024, seconds: float = READ_SECONDS) -> bytes:
    """The end of ``rel`` holding its last ``lines`` lines (at most ``max_bytes`` of it).

    Read backwards in blocks, so a log of gigabytes costs no more than a small one.
    """

    def read() -> bytes:
        fd = _open_file(job_dir, rel)
        try:
            position = os.fstat(fd).st_size
            data = b""
            while position > 0 and data.count(b"\n") <= lines and len(data) < max_bytes:
                step = min(block, position)
                position -= step
                data = os.pread(fd, step, position) + data
            return data[-max_bytes:]
        finally:
            os.close(fd)

    return bounded(read, seconds, rel)


def size_and_sha256(job_dir: Path, rel: str, max_bytes: int = MAX_ARTIFACT_BYTES,
                    seconds: float = HASH_SECONDS) -> tuple[int, str]:
    """Size and sha256 of the regular file ``rel``, read in 1 MiB chunks."""

    def read() -> tuple[int, str]:
        fd = _open_file(job_dir, rel)
        try:
            if os.fstat(fd).st_size > max_bytes:
                raise Refused(f"{rel} is more than the {max_bytes} bytes allowed: ignored")
            digest = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise Refused(f"{rel} is more than the {max_bytes} bytes allowed: ignored")
            return size, digest.hexdigest()
        finally:
            os.close(fd)

    return bounded(read, seconds, rel)


def entries(job_dir: Path, seconds: float = READ_SECONDS) -> list[Entry]:
    """The names directly in ``job_dir`` (not followed), for finding result and log files."""

    def scan() -> list[Entry]:
        fd = os.open(job_dir, _DIR_FLAGS)
        try:
            with os.scandir(fd) as it:
                found = []
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    found.append(Entry(e.name, stat.S_ISREG(st.st_mode), st.st_mtime))
                return found
        finally:
            os.close(fd)

    try:
        return bounded(scan, seconds, str(job_dir))
    except OSError:
        return []


# --- opening ------------------------------------------------------------------------------


def _open_file(job_dir: Path, rel: str) -> int:
    """An fd of the regular file ``rel``; every component opened without following links."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise Refused(f"{rel} is not a path inside the job directory: ignored")
    try:
        dir_fd = os.open(job_dir, _DIR_FLAGS)
    except OSError as exc:
        raise Refused(f"{rel}: cannot open the job directory: {exc.strerror}") from None
    try:
        for i, part in enumerate(parts[:-1]):
            child = _step(dir_fd, part, "/".join(parts[: i + 1]), rel)
            os.close(dir_fd)
            dir_fd = child
        return _final(dir_fd, parts[-1], rel)
    finally:
        os.close(dir_fd)


def _step(dir_fd: int, part: str, shown: str, rel: str) -> int:
    """Open the directory ``part`` under ``dir_fd``, not following a link."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused(_why(dir_fd, part, shown, exc, f"(in the path of {rel})")) from None


def _final(dir_fd: int, name: str, rel: str) -> int:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused(_why(dir_fd, name, rel, exc, "")) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Refused(f"{rel} is {kind(mode)}, not a regular file: ignored")
    return fd


def _why(dir_fd: int, name: str, shown: str, exc: OSError, where: str) -> str:
    suffix = f" {where}" if where else ""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        what = kind(mode) if mode else "not a directory"
        return f"{shown} is {what}{suffix}: ignored"
    if exc.errno == errno.ENOENT:
        return f"{shown} does not exist{suffix}"
    return f"cannot read {shown}{suffix}: {exc.strerror}"


def kind(mode: int) -> str:
    """What a non-regular file is, for a report line (``a symlink``, ``a FIFO``, ...)."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_upto(fd: int, limit: int) -> bytes:
    chunks = []
    total = 0
    while total < limit and (chunk := os.read(fd, min(_CHUNK, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
