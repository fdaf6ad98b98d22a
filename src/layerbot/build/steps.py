"""A pipeline's files on the agent: the plan a plan job wrote, and the artifact store.

Both are read from job directories, which belong to the job: the plan file is read like any
result file (no links followed, size-bounded, time-bounded: :mod:`layerbot.build.hostile`),
and a finished step's ``step-output/`` is copied into the agent's artifact store the same
way, refusing links, FIFOs and devices.

Why a store and not the job directory itself: every job runs as the same job user, so a
later job (of any PR) could rewrite what a finished step left in its own directory. Steps
that need it, in this PR or (through the cache) in another one, read the store's copy, which
belongs to the bot and is read-only to jobs. A step's dependents in the same run start on
the batch system's word (``afterok``), before the bot has seen the step end, so they read
the step's own directory; that is the same PR's code, which could change them anyway.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from layerbot.build import hostile
from layerbot.core.pipeline import PLAN_FILE, STEP_OUTPUT, Plan, PlanError, PlanLimits, parse_plan

#: At most this much is copied from one step's output (files and bytes).
MAX_OUTPUT_FILES = 100_000
MAX_OUTPUT_BYTES = hostile.MAX_ARTIFACT_BYTES

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def read_plan(job_dir: Path, limits: PlanLimits) -> Plan:
    """The plan the job wrote (PlanError: missing, refused or invalid)."""
    if not os.path.lexists(job_dir / PLAN_FILE):
        raise PlanError([f"the plan script wrote no {PLAN_FILE} ($LAYERBOT_PLAN_FILE)"])
    try:
        raw = hostile.read_bytes(job_dir, PLAN_FILE, limits.max_bytes)
    except hostile.Refused as exc:
        raise PlanError([str(exc)]) from None
    except OSError as exc:
        raise PlanError([f"{PLAN_FILE} cannot be read: {exc.strerror or exc}"]) from None
    return parse_plan(raw, limits)


@dataclass(frozen=True)
class Stored:
    path: Path
    files: int
    bytes: int


class OutputRefused(Exception):
    """What a step left in its output that the bot will not copy (the step fails)."""


def stored(store: Path, job_id: int) -> Path | None:
    """The artifact directory of a finished step, if the store has it (complete: it only
    appears under its name once copied)."""
    path = store / str(job_id)
    return path if path.is_dir() else None


def collect_output(job_dir: Path, store: Path, job_id: int) -> Stored:
    """Copy ``job_dir/step-output`` into ``store/<job_id>`` (idempotent: a copy already
    there is kept). Raises OutputRefused for a link, FIFO or device, or too much."""
    if (done := stored(store, job_id)) is not None:
        return Stored(done, *_count(done))
    store.mkdir(parents=True, exist_ok=True)
    os.chmod(store, 0o755)  # noqa: S103 (jobs read it; only the bot writes)
    partial = store / f".{job_id}.{uuid.uuid4().hex}"
    partial.mkdir(mode=0o755)
    try:
        counts = [0, 0]
        try:
            src = os.open(job_dir / STEP_OUTPUT, _DIR)
        except FileNotFoundError:
            src = None  # a step may leave nothing: its artifact is empty
        except OSError as exc:
            raise OutputRefused(f"{STEP_OUTPUT} is not a directory ({exc.strerror})") from None
        if src is not None:
            try:
                _copy_dir(src, partial, STEP_OUTPUT, counts)
            finally:
                os.close(src)
        os.rename(partial, store / str(job_id))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Stored(store / str(job_id), counts[0], counts[1])


def _copy_dir(src_fd: int, dest: Path, shown: str, counts: list[int]) -> None:
    with os.scandir(src_fd) as it:
        names = [(e.name, e.stat(follow_symlinks=False).st_mode) for e in it]
    for name, mode in names:
        where = f"{shown}/{name}"
        if stat.S_ISDIR(mode):
            child = os.open(name, _DIR, dir_fd=src_fd)
            try:
                (dest / name).mkdir(mode=0o755)
                _copy_dir(child, dest / name, where, counts)
            finally:
                os.close(child)
        elif stat.S_ISREG(mode):
            _copy_file(src_fd, name, dest / name, where, counts)
        else:
            raise OutputRefused(f"{where} is {hostile.kind(mode)}: a step's output may hold only "
                                "files and directories")


def _copy_file(src_fd: int, name: str, dest: Path, shown: str, counts: list[int]) -> None:
    fd = os.open(name, _FILE, dir_fd=src_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between the listing and the open
            raise OutputRefused(f"{shown} is {hostile.kind(st.st_mode)}")
        counts[0] += 1
        counts[1] += st.st_size
        if counts[0] > MAX_OUTPUT_FILES or counts[1] > MAX_OUTPUT_BYTES:
            raise OutputRefused(f"a step's output may hold at most {MAX_OUTPUT_FILES:,} files "
                                f"and {MAX_OUTPUT_BYTES:,} bytes")
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out, \
                os.fdopen(os.dup(fd), "rb") as inp:
            shutil.copyfileobj(inp, out, 1024 * 1024)
    finally:
        os.close(fd)


def _count(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(root, n)).st_size
    return files, size
