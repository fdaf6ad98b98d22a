"""The local executor: runs jobs on this machine, the embedded default backend.

Each job runs under a detached launcher (:mod:`layerbot.backends.local_launcher`) in a
session of its own, so jobs keep running when the bot stops, crashes or restarts. All state
lives in files, none in memory:

- ``<job_dir>/.layerbot/local.json``: the job's state file (request, start, outcome);
  written only under an flock on ``local.lock`` beside it, atomically (temp + rename).
- ``<state_dir>/queue/<submit time ns>-<job id>``: a symlink to the state file of every
  job that has not been seen to end yet; sorted by name it is the submission order.
- ``<state_dir>/index/<instance>/<job id>``: a symlink to the job directory, for :meth:`find`.

The backend id is the job directory's absolute path, so a new :class:`LocalBackend` over the
same directories (after a restart) finds every job again.

Dependencies (``SubmitRequest.after_ok``) are recorded in the dependent's state file and
resolved by the scheduling pass from the state files of the jobs it needs (found by their
backend ids, so also long after they left the queue, or under another backend object):
while one has not ended the job waits without taking a slot; once all succeeded it is
eligible like any pending job; once one ended otherwise, the pass gives it a "cancelled"
outcome and it is never launched.

Jobs start at a scheduling pass (submit, poll). So that a dependent (or a job waiting for
a slot) does not wait for the next poll, this object also runs a pass when a launcher it
started exits cleanly (:meth:`LocalBackend._watch`); launchers started by an earlier bot
process are noticed at the next poll, so there the reconcile interval
(``backend.poll_seconds``) bounds the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from layerbot import log
from layerbot.backends import local_launcher
from layerbot.backends.base import (
    JOB_ID_PLACEHOLDER,
    BackendState,
    Check,
    JobStatus,
    Partition,
    Resources,
    SubmitError,
    SubmitRequest,
    dependency_failed_reason,
)
from layerbot.backends.local_launcher import (
    LAUNCHER_LOG_NAME,
    LOCK_FILE_NAME,
    STATE_VERSION,
    State,
    locked,
    now_iso,
    proc_stat,
    process_alive,
    read_state,
    signal_job_group,
    state_file_for,
    update_state,
    write_state,
)
from layerbot.build.handover import HandOverFailed, hand_over
from layerbot.build.identity import JobUser
from layerbot.config import LocalBackendConfig

#: The launcher runs by its file path, in isolated mode (``python -I``): it needs only the
#: standard library, so it does not import layerbot's package (and its dependencies) on
#: every job start, and nothing in its environment or working directory can change what it
#: imports. (``python -m layerbot.backends.local_launcher`` works too.)
LAUNCHER_PATH = Path(local_launcher.__file__).resolve()
LOST_REASON = "the job's process ended without a result (killed from outside?)"
DEFAULT_LOG_NAME = "job.log"

_log = log.get("local")


@dataclass(frozen=True)
class _Seen:
    """What one pass read for a job: its state, or why it could not be read."""

    state: State | None
    error: str | None = None
    #: A pending job that waits for this job it needs (backend id) to end.
    waiting_for: str | None = None


@dataclass(frozen=True)
class _Pending:
    """A pending job as the pass found it."""

    entry: Path  # its queue entry
    state_file: Path
    state: State


class LocalBackend:
    """Runs jobs on this machine, at most ``config.max_concurrent`` at a time."""

    name = "local"

    def __init__(
        self,
        config: LocalBackendConfig,
        state_dir: Path,
        *,
        kill_grace_seconds: float = 10.0,
        launch_timeout_seconds: float = 30.0,
        python: str = sys.executable,
        job_user: JobUser | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        #: Who jobs run as (the launcher drops to it); None: unisolated, which the operator
        #: allowed explicitly (see build/identity.py).
        self.job_user = job_user
        #: Between SIGTERM and SIGKILL on cancel, time limit and clean-up.
        self.kill_grace_seconds = kill_grace_seconds
        #: How long a launched job may go without its launcher recording itself.
        self.launch_timeout_seconds = launch_timeout_seconds
        self.python = python
        self.calls = 0
        # Launchers this instance started, kept only to reap them (no zombies); never
        # needed to find a job again.
        self._launchers: dict[str, subprocess.Popen[bytes]] = {}
        self._launchers_lock = threading.Lock()

    # --- paths -----------------------------------------------------------------------------

    @property
    def _queue_dir(self) -> Path:
        return self.state_dir / "queue"

    @property
    def _index_dir(self) -> Path:
        return self.state_dir / "index"

    @property
    def _lock_file(self) -> Path:
        return self.state_dir / LOCK_FILE_NAME

    def _index_entry(self, job_id: int, instance: str) -> Path:
        return self._index_dir / quote(instance, safe="") / str(job_id)

    def _ensure_dirs(self) -> None:
        for directory in (self._queue_dir, self._index_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # --- the Backend protocol --------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> str:
        self.calls += 1
        return await asyncio.to_thread(self._submit, request)

    async def release(self, backend_ids: Sequence[str]) -> None:
        """Nothing is ever held here: jobs start as soon as a slot is free."""

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        return await asyncio.to_thread(self._find, job_id, instance, job_dir)

    async def poll(self, backend_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        self.calls += 1
        return await asyncio.to_thread(self._poll, list(backend_ids))

    async def cancel(self, backend_id: str) -> None:
        self.calls += 1
        await asyncio.to_thread(self._cancel, backend_id)

    async def resources(self) -> Resources:
        running = await asyncio.to_thread(self._running_count)
        cpus = os.cpu_count() or 1
        partition = Partition(
            name="local",
            state="up",
            nodes_idle=0 if running else 1,
            nodes_allocated=1 if running else 0,
            nodes_down=0,
            cpus_total=cpus,
            cpus_idle=max(0, cpus - running),
            default=True,
        )
        return Resources(backend=self.name, partitions=(partition,))

    async def check(self) -> list[Check]:
        checks = [await asyncio.to_thread(self._check_state_dir), _check_proc()]
        checks.append(await self._check_launcher())
        if self.job_user is not None and self.job_user.sudo_prefix():
            checks.append(await self._check_launcher(as_job_user=True))
        return checks

    # --- submit ----------------------------------------------------------------------------

    def _submit(self, request: SubmitRequest) -> str:
        job_dir = Path(os.path.abspath(request.job_dir))
        if not job_dir.is_dir():
            raise SubmitError(f"the job directory {job_dir} does not exist")
        state = self._new_state(request, job_dir)
        if self.job_user is not None:
            try:
                hand_over(job_dir, self.job_user)
            except HandOverFailed as exc:
                raise SubmitError(str(exc)) from None
            state["run_as"] = asdict(self.job_user)
            # The bot's HOME is not the job's (and not reachable by it): its own directory.
            name = self.job_user.name
            state["env"] = {**state["env"], "HOME": str(job_dir), "USER": name,
                            "LOGNAME": name}
        state_file = state_file_for(job_dir)
        self._ensure_dirs()
        with locked(self._lock_file):
            state_file.parent.mkdir(mode=0o700, exist_ok=True)
            with locked(state_file.with_name(LOCK_FILE_NAME)):
                old = _read_or_none(state_file)
                if old is not None and old.get("outcome") is None:
                    raise SubmitError(
                        f"{job_dir} already has a local job that has not ended "
                        f"(job {old.get('job_id')}); cancel it first"
                    )
                write_state(state_file, state)
            # State first, then the index and the queue entry: a pass that sees the entry
            # always finds the state.
            _symlink(self._index_entry(request.job_id, request.instance), job_dir)
            _symlink(self._queue_dir / state["queue_entry"], state_file)
        self._schedule()
        return str(job_dir)

    def _new_state(self, request: SubmitRequest, job_dir: Path) -> State:
        script = _inside(job_dir, request.script)
        log_file = _inside(job_dir, _expand_job_id(request.log_file, request.job_id))
        limit = request.time_limit_seconds
        if limit is not None and limit <= 0:
            raise SubmitError(f"the time limit must be positive, not {limit} s")
        display = str(script.relative_to(job_dir)) if script.is_relative_to(job_dir) else script
        return {
            "version": STATE_VERSION,
            "backend": self.name,
            "job_id": request.job_id,
            "instance": request.instance,
            "job_dir": str(job_dir),
            "script": str(script),
            "script_display": str(display),
            "env": {**request.env, **slurm_like_env(request.job_id, job_dir)},
            "time_limit_seconds": limit,
            "grace_seconds": self.kill_grace_seconds,
            "log_file": str(log_file),
            "cpus": _cpus(request.options),
            "after_ok": _dependencies(request.after_ok, job_dir),
            "submitted_at": now_iso(),
            "queue_entry": f"{time.time_ns():020d}-{request.job_id}",
            "launched_at": None,
            "cancel_requested_at": None,
            "launcher": None,
            "job": None,
            "outcome": None,
        }

    # --- the pass: read every active job once, start pending ones --------------------------

    def _schedule(self, *, start: bool = True) -> dict[str, _Seen]:
        """One pass over the queue: read each active job's state once, notice launchers
        that died, and start pending jobs (in submission order) while slots are free.

        Returns what was read, by backend id, so poll need not read those files again.
        """
        self._ensure_dirs()
        seen: dict[str, _Seen] = {}
        running = 0
        pending: list[_Pending] = []
        with locked(self._lock_file):
            for entry in sorted(self._queue_dir.iterdir()):
                if entry.name.startswith("."):
                    continue  # a link being written
                try:
                    state_file = Path(os.readlink(entry))
                except OSError:
                    continue  # not ours
                backend_id = str(state_file.parent.parent)
                result = self._examine(entry, state_file, seen)
                if result is None:
                    continue
                seen[backend_id] = result
                state = result.state
                if state is None or state.get("outcome") is not None:
                    entry.unlink(missing_ok=True)  # ended: no longer takes part in scheduling
                elif state.get("launched_at"):
                    running += 1
                else:
                    pending.append(_Pending(entry, state_file, state))
            if start:
                eligible = self._resolve_dependencies(pending, seen)
                for state_file in eligible[: max(0, self.config.max_concurrent - running)]:
                    launched = self._launch(state_file)
                    seen[str(state_file.parent.parent)] = _Seen(launched)
        self._reap_launchers()
        return seen

    # --- dependencies ----------------------------------------------------------------------

    def _resolve_dependencies(self, pending: list[_Pending], seen: dict[str, _Seen]) -> list[Path]:
        """The pending jobs that may start now, in submission order.

        A job waiting for a job it needs is left out (it takes no slot) and noted in
        ``seen`` for its status; one whose dependency did not succeed is given a cancelled
        outcome here, under the pass's lock, so it can never be launched afterwards.
        """
        eligible: list[Path] = []
        for job in pending:
            backend_id = str(job.state_file.parent.parent)
            waiting_for, failed = self._dependency_verdict(job.state, seen)
            if failed is not None:
                state = update_state(job.state_file, partial(_cancel_unmet, reason=failed))
                seen[backend_id] = _Seen(state)
                if state is None or state.get("outcome") is not None:
                    job.entry.unlink(missing_ok=True)
            elif waiting_for is not None:
                seen[backend_id] = _Seen(job.state, waiting_for=waiting_for)
            else:
                eligible.append(job.state_file)
        return eligible

    def _dependency_verdict(
        self, state: State, seen: Mapping[str, _Seen]
    ) -> tuple[str | None, str | None]:
        """(a job it still waits for, why it can never start); (None, None): it may start.

        A job that did not succeed decides at once, even while others still run: the
        dependent cannot start anyway, and is told so as early as possible.
        """
        waiting_for = None
        for dependency in state.get("after_ok") or []:
            try:
                found = seen.get(dependency) or self._read_unqueued(dependency)
            except OSError:  # unreadable: as good as missing
                found = _Seen(None)
            dep_state = found.state
            outcome = dep_state.get("outcome") if dep_state is not None else None
            if dep_state is None:
                return None, dependency_failed_reason(dependency, BackendState.UNKNOWN)
            if outcome is None:
                waiting_for = waiting_for or dependency
                continue
            ended, _ = _ended_state(outcome, dep_state.get("time_limit_seconds"))
            if ended is not BackendState.COMPLETED:
                return None, dependency_failed_reason(dependency, ended)
        return waiting_for, None

    # --- waking up when a job ends ---------------------------------------------------------

    def _watch(self, backend_id: str, proc: subprocess.Popen[bytes]) -> None:
        """Reap a launcher this object started, and run a scheduling pass when it exits
        cleanly, so dependents and queued jobs start at once instead of at the next poll.

        Only after a clean exit (the launcher wrote the outcome): a launcher that was killed
        leaves a lost job, which the next poll reports and deals with. A daemon thread per
        running job (at most max_concurrent of them); the pass is the same one as submit's
        and poll's, under the same flock, so running it from here changes nothing but when.
        """

        def wait_and_schedule() -> None:
            returncode = proc.wait()
            with self._launchers_lock:
                if self._launchers.get(backend_id) is proc:
                    del self._launchers[backend_id]
            if returncode != 0 or not self.state_dir.is_dir():
                return
            try:
                self._schedule()
            except Exception as exc:  # the next poll runs the pass anyway
                _log.warning("scheduling pass after a job ended failed", error=str(exc))

        threading.Thread(target=wait_and_schedule, name=f"local-watch-{proc.pid}",
                         daemon=True).start()

    def _examine(self, entry: Path, state_file: Path, seen: Mapping[str, _Seen]) -> _Seen | None:
        """The state behind a queue entry (None: a stale entry, now removed)."""
        try:
            state = read_state(state_file)
        except ValueError as exc:
            entry.unlink(missing_ok=True)
            return _Seen(None, str(exc))
        if state is not None and (
            state.get("queue_entry") != entry.name or str(state_file.parent.parent) in seen
        ):
            entry.unlink(missing_ok=True)  # left over from an earlier run in the same dir
            return None
        if state is not None and state.get("launched_at") and state.get("outcome") is None:
            reason = self._lost_reason(state)
            if reason is not None:
                state = self._mark_lost(state_file, reason)
        return _Seen(state)

    def _lost_reason(self, state: State) -> str | None:
        """Why a launched job without an outcome is lost, or None if it is still alive."""
        launcher = state.get("launcher")
        if launcher is None:
            launched = datetime.fromisoformat(state["launched_at"])
            age = (datetime.now(UTC) - launched).total_seconds()
            if age < self.launch_timeout_seconds:
                return None  # the bot died between starting the launcher and recording it
            return f"the launcher did not start (see {_launcher_log(state)})"
        if process_alive(launcher.get("pid"), launcher.get("start_ticks")):
            return None
        if state.get("job") is None:
            return f"the launcher exited without starting the job (see {_launcher_log(state)})"
        return LOST_REASON

    def _mark_lost(self, state_file: Path, reason: str) -> State | None:
        """Record a lost job as FAILED; stop what is left of it, since nobody supervises it."""

        def change(state: State) -> bool:
            if state.get("outcome") is not None:
                return False  # the launcher wrote its outcome after all
            job = state.get("job") or {}
            if job.get("pgid") and process_alive(job.get("pid"), job.get("start_ticks")):
                signal_job_group(state, job["pgid"], signal.SIGKILL)
            state["outcome"] = _outcome(error=reason, lost=True)
            return True

        return update_state(state_file, change)

    def _launch(self, state_file: Path) -> State | None:
        """Start the launcher of a pending job; returns its state afterwards."""
        claimed = False

        def claim(state: State) -> bool:
            nonlocal claimed
            if state.get("launched_at") or state.get("outcome") is not None:
                return False
            state["launched_at"] = now_iso()
            claimed = True
            return True

        state = update_state(state_file, claim)
        if not claimed or state is None:
            return state
        try:
            proc = self._spawn_launcher(state_file)
        except OSError as exc:
            error = f"cannot start the local launcher: {exc.strerror or exc}"
            return update_state(state_file, lambda s: _set_outcome(s, error=error))
        backend_id = str(state_file.parent.parent)
        with self._launchers_lock:
            self._launchers[backend_id] = proc
        state = update_state(state_file, lambda s: _record_launcher(s, proc.pid))
        self._watch(backend_id, proc)
        return state

    def _spawn_launcher(self, state_file: Path) -> subprocess.Popen[bytes]:
        log = state_file.with_name(LAUNCHER_LOG_NAME)
        with log.open("ab") as out:
            return subprocess.Popen(
                [*launcher_command(self.python), str(state_file)],
                cwd=self.state_dir,  # not the job dir: its files must not shadow modules
                env=launcher_env(),  # not ours: the job could read it in /proc/<pid>/environ
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: survives the bot
            )

    def _reap_launchers(self) -> None:
        with self._launchers_lock:
            for backend_id, proc in list(self._launchers.items()):
                if proc.poll() is not None:
                    del self._launchers[backend_id]

    def _running_count(self) -> int:
        seen = self._schedule(start=False)
        return sum(
            1
            for s in seen.values()
            if s.state and s.state.get("launched_at") and s.state.get("outcome") is None
        )

    # --- poll ------------------------------------------------------------------------------

    def _poll(self, backend_ids: list[str]) -> dict[str, JobStatus]:
        seen = self._schedule()
        statuses: dict[str, JobStatus] = {}
        for backend_id in backend_ids:
            found = seen.get(backend_id) or self._read_unqueued(backend_id)
            statuses[backend_id] = job_status(backend_id, found.state, found.error, self.config,
                                              waiting_for=found.waiting_for)
        return statuses

    def _read_unqueued(self, backend_id: str) -> _Seen:
        """A job the pass did not see: ended, or queued under another state_dir."""
        found = _read_seen(backend_id)
        state = found.state
        if state is not None and state.get("launched_at") and state.get("outcome") is None:
            reason = self._lost_reason(state)
            if reason is not None:
                return _Seen(self._mark_lost(state_file_for(Path(backend_id)), reason))
        return found

    # --- cancel ----------------------------------------------------------------------------

    def _cancel(self, backend_id: str) -> None:
        state_file = state_file_for(Path(backend_id))
        state = _read_or_none(state_file)
        if state is None or state.get("outcome") is not None:
            return
        state = update_state(state_file, _request_cancel)
        if state is None or state.get("outcome") is not None:
            return  # it was pending (now cancelled) or ended meanwhile
        launcher = state.get("launcher") or {}
        # Signal the launcher only once it has started the job: before that it may not have
        # its handlers yet (SIGTERM would kill it outright), and it checks the request
        # itself, under the lock, when it records the job's start.
        if state.get("job") and process_alive(launcher.get("pid"), launcher.get("start_ticks")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(launcher["pid"], signal.SIGTERM)  # it stops the job's group
        if self._wait_for_outcome(state_file, self.kill_grace_seconds + 3.0):
            return
        self._take_over_cancel(state_file)

    def _wait_for_outcome(self, state_file: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _read_or_none(state_file)
            if state is None or state.get("outcome") is not None:
                return True
            time.sleep(0.05)
        return False

    def _take_over_cancel(self, state_file: Path) -> None:
        """The launcher did not answer: stop the job's group ourselves."""
        state = _read_or_none(state_file) or {}
        job = state.get("job") or {}
        if job.get("pgid") and process_alive(job.get("pid"), job.get("start_ticks")):
            signal_job_group(state, job["pgid"], signal.SIGKILL)
        launcher = state.get("launcher") or {}
        if not process_alive(launcher.get("pid"), launcher.get("start_ticks")):
            update_state(state_file, lambda s: _set_outcome(s, cancelled=True))
        # else: the launcher is alive and will record the end now that the job is dead.

    # --- find ------------------------------------------------------------------------------

    def _find(self, job_id: int, instance: str, expected: Path) -> str | None:
        try:
            job_dir = Path(os.readlink(self._index_entry(job_id, instance)))
        except OSError:
            return None
        if job_dir != Path(os.path.abspath(expected)):
            return None  # an earlier directory of this job: not the one being asked about
        state = _read_or_none(state_file_for(job_dir))
        if state is None or state.get("job_id") != job_id or state.get("instance") != instance:
            return None
        return str(job_dir)

    # --- check -----------------------------------------------------------------------------

    def _check_state_dir(self) -> Check:
        try:
            self._ensure_dirs()
            with tempfile.NamedTemporaryFile(dir=self.state_dir, prefix=".check-"):
                pass
        except OSError as exc:
            return Check(
                "local state directory",
                False,
                f"{self.state_dir} is not writable: {exc.strerror or exc}",
                "create it and make it writable by the bot's user, or set instance.data_dir",
            )
        return Check("local state directory", True, f"{self.state_dir} is writable")

    async def _check_launcher(self, as_job_user: bool = False) -> Check:
        """The launcher starts; ``as_job_user``: and sudo lets the bot start it as the job
        user, which is how every job starts when the bot is not root."""
        user = self.job_user if as_job_user else None
        prefix = user.sudo_prefix() if user else []
        name = f"local launcher as {user.name} (sudo)" if user else "local launcher"
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix,
                *launcher_command(self.python),
                "--check",
                env=launcher_env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        except (OSError, TimeoutError) as exc:
            return Check(name, False, f"cannot run {self.python}: {exc}", "check the installation")
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            return Check(
                name,
                False,
                f"{' '.join(prefix)} {self.python} {LAUNCHER_PATH} failed: {text[-300:]}".strip(),
                "allow it with the sudoers rule of docs/security.md" if prefix else
                "reinstall layerbot; the launcher needs only the interpreter's standard library",
            )
        return Check(name, True, f"{self.python} {LAUNCHER_PATH} starts")


# --- pure helpers --------------------------------------------------------------------------


def launcher_command(python: str) -> list[str]:
    return [python, "-I", str(LAUNCHER_PATH)]


def launcher_env() -> dict[str, str]:
    """The launcher's whole environment: none of the bot's (secrets included), since the
    job runs as the same user and could read it in /proc/<launcher pid>/environ."""
    return {"PATH": os.defpath}


def job_status(
    backend_id: str,
    state: State | None,
    error: str | None,
    config: LocalBackendConfig,
    *,
    waiting_for: str | None = None,
) -> JobStatus:
    """What a job's state file says, as a :class:`JobStatus`; ``waiting_for``: the job it
    needs that the pass found has not ended yet."""
    if state is None:
        reason = error or f"no local job state ({state_file_for(Path(backend_id))} is gone)"
        return JobStatus(backend_id, BackendState.UNKNOWN, reason=reason)
    launcher = state.get("launcher") or {}
    job = state.get("job") or {}
    common: dict[str, Any] = {
        "cpus": state.get("cpus") or 1,
        "node": launcher.get("host") or socket.gethostname(),
        "started_at": _time(job.get("started_at")),
    }
    outcome = state.get("outcome")
    if outcome is not None:
        return _ended_status(backend_id, outcome, state.get("time_limit_seconds"), common)
    if not state.get("launched_at"):
        reason = (f"Dependency: waiting for job {waiting_for} it needs" if waiting_for
                  else f"waiting for a free slot (max_concurrent = {config.max_concurrent})")
        return JobStatus(backend_id, BackendState.PENDING, reason=reason, **common)
    if not job:
        return JobStatus(backend_id, BackendState.PENDING, reason="starting", **common)
    started = common["started_at"]
    elapsed = (datetime.now(UTC) - started).total_seconds() if started else None
    return JobStatus(backend_id, BackendState.RUNNING, elapsed_seconds=elapsed, **common)


def _ended_status(
    backend_id: str, outcome: State, limit: float | None, common: dict[str, Any]
) -> JobStatus:
    signum = outcome.get("signal")
    code = outcome.get("exit_code")
    if signum:
        code = 128 + signum  # as a shell reports it
    state, reason = _ended_state(outcome, limit)
    return JobStatus(
        backend_id,
        state,
        exit_code=code,
        reason=reason,
        ended_at=_time(outcome.get("ended_at")),
        elapsed_seconds=outcome.get("elapsed_seconds"),
        max_rss_bytes=outcome.get("max_rss_bytes"),
        **common,
    )


def _ended_state(outcome: State, limit: float | None) -> tuple[BackendState, str | None]:
    if outcome.get("cancelled"):
        return BackendState.CANCELLED, str(outcome.get("reason") or "cancelled")
    if outcome.get("timed_out"):
        return BackendState.TIMEOUT, f"time limit of {limit:g} s reached"
    if outcome.get("error"):
        return BackendState.FAILED, str(outcome["error"])
    if outcome.get("signal"):
        return BackendState.FAILED, f"killed by signal {outcome.get('signal_name')}"
    code = outcome.get("exit_code")
    if code == 0:
        return BackendState.COMPLETED, None
    return BackendState.FAILED, f"exit code {code}"


def _outcome(
    *, cancelled: bool = False, error: str | None = None, lost: bool = False,
    reason: str | None = None,
) -> State:
    """An outcome written by the bot (the launcher never ran, or died); ``reason``: why a
    cancelled job was cancelled, if not by a cancel request."""
    return {
        "ended_at": now_iso(),
        "exit_code": None,
        "signal": None,
        "signal_name": None,
        "timed_out": False,
        "cancelled": cancelled,
        "error": error,
        "lost": lost,
        "max_rss_bytes": None,
        "elapsed_seconds": None,
        **({"reason": reason} if reason else {}),
    }


def _set_outcome(state: State, *, cancelled: bool = False, error: str | None = None) -> bool:
    if state.get("outcome") is not None:
        return False
    state["outcome"] = _outcome(cancelled=cancelled, error=error)
    return True


def _cancel_unmet(state: State, reason: str) -> bool:
    """A pending job whose dependency did not succeed: cancelled, never launched."""
    if state.get("outcome") is not None or state.get("launched_at"):
        return False
    state["outcome"] = _outcome(cancelled=True, reason=reason)
    return True


def _request_cancel(state: State) -> bool:
    if state.get("outcome") is not None:
        return False
    if not state.get("launched_at"):
        state["cancel_requested_at"] = now_iso()
        state["outcome"] = _outcome(cancelled=True)  # never started: cancelled at once
        return True
    if state.get("cancel_requested_at"):
        return False  # asked before; the caller signals again, which is harmless
    state["cancel_requested_at"] = now_iso()
    return True


def _record_launcher(state: State, pid: int) -> bool:
    """Note the launcher's pid at once, so its death is noticed even before it registers."""
    if state.get("launcher") is not None:
        return False  # it registered itself already
    stat = proc_stat(pid)
    state["launcher"] = {
        "pid": pid,
        "start_ticks": stat[1] if stat else None,
        "host": socket.gethostname(),
    }
    return True


def _read_or_none(state_file: Path) -> State | None:
    try:
        return read_state(state_file)
    except ValueError:
        return None


def _read_seen(backend_id: str) -> _Seen:
    try:
        return _Seen(read_state(state_file_for(Path(backend_id))))
    except ValueError as exc:
        return _Seen(None, str(exc))


# --- EESSI compatibility: what a Slurm job sees, under the same names ----------------------


def slurm_like_env(job_id: int, job_dir: Path) -> dict[str, str]:
    """The Slurm variables EESSI's job scripts use, with layerbot's job id as the job id.

    EESSI's check scripts find their files as ``slurm-${SLURM_JOB_ID}.out`` and
    ``_bot_job${SLURM_JOB_ID}.result``; with these a script written for Slurm runs
    unchanged on the local executor. They win over the job's own environment, as on Slurm.
    """
    ident = str(job_id)
    return {"SLURM_JOB_ID": ident, "SLURM_JOBID": ident, "SLURM_SUBMIT_DIR": str(job_dir),
            "SLURM_JOB_NAME": f"layerbot-{ident}"}


def _expand_job_id(log_file: Path | None, job_id: int) -> Path:
    """The log file's name with JOB_ID_PLACEHOLDER replaced, as sbatch does with %j."""
    if log_file is None:
        return Path(DEFAULT_LOG_NAME)
    return log_file.with_name(log_file.name.replace(JOB_ID_PLACEHOLDER, str(job_id)))


def _inside(job_dir: Path, path: Path) -> Path:
    """An absolute path: relative ones are relative to the job directory."""
    return Path(os.path.abspath(job_dir / path))


def _dependencies(after_ok: Sequence[str], job_dir: Path) -> list[str]:
    """The backend ids (job directories) a job needs, as absolute paths, as poll gets them."""
    needed = [os.path.abspath(b) for b in after_ok]
    if str(job_dir) in needed:
        raise SubmitError("a job cannot depend on itself")
    return list(dict.fromkeys(needed))


def _cpus(options: Mapping[str, str]) -> int:
    value = options.get("cpus", "1")
    try:
        cpus = int(value)
    except ValueError:
        raise SubmitError(f"cpus must be a whole number, not {value!r}") from None
    if cpus < 1:
        raise SubmitError(f"cpus must be at least 1, not {cpus}")
    return cpus


def _symlink(link: Path, target: Path) -> None:
    """Create or replace ``link`` atomically."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _launcher_log(state: State) -> str:
    return str(Path(state["job_dir"]) / ".layerbot" / LAUNCHER_LOG_NAME)


def _check_proc() -> Check:
    if proc_stat(os.getpid()) is None:
        return Check(
            "/proc",
            False,
            "cannot read /proc/<pid>/stat: jobs whose launcher dies are not noticed",
            "run the local executor on Linux with /proc mounted",
        )
    return Check("/proc", True, "process start times are readable")
