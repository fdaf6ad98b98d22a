"""The detached launcher of the local executor: runs one job and writes down how it ended.

:class:`layerbot.backends.local.LocalBackend` starts it as ``python -I <this file> <state
file>`` (``python -m layerbot.backends.local_launcher <state file>`` works as well) in a
session of its own, so it survives the bot being stopped or killed. It runs the job
script in yet another session (the job's process group, which the launcher is *not* part
of, so a signal to the job's group cannot take the launcher with it), enforces the time
limit, obeys cancellation (SIGTERM to the launcher) and records the outcome in the state
file.

Standard library only, and it must never import layerbot: it runs as a plain file in
isolated mode, starts in a few tens of milliseconds and depends on nothing but the
interpreter. The state-file helpers at the top are shared with ``local.py``.

Every change to a state file is a read-modify-write under an ``flock`` on a lock file
beside it, written to a temporary file and renamed over the old one, so readers without
the lock always see a whole file and the bot and the launcher never lose each other's
updates.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_VERSION = 1
STATE_DIR_NAME = ".layerbot"
STATE_FILE_NAME = "local.json"
LOCK_FILE_NAME = "local.lock"
LAUNCHER_LOG_NAME = "launcher.log"

#: How long a ``sudo -n`` call (starting the job, signalling it) may take.
SUDO_TIMEOUT_SECONDS = 30.0

#: Exit codes a shell would give for these cases, so reports read familiarly.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126

State = dict[str, Any]


# --- state files, shared with local.py ---------------------------------------------------


def state_file_for(job_dir: Path) -> Path:
    return job_dir / STATE_DIR_NAME / STATE_FILE_NAME


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file`` (created if needed) for the block."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_state(path: Path) -> State | None:
    """The state in ``path``; None if there is none. Raises ValueError if it is corrupt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt local job state {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"corrupt local job state {path}: not a version {STATE_VERSION} state")
    return data


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so nobody ever reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_state(path: Path, state: State) -> None:
    write_atomic(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def update_state(path: Path, change: Callable[[State], bool]) -> State | None:
    """Read, ``change`` in place and write back (if it returns True), all under the lock.

    Returns the state as it is afterwards, or None if there is no state file.
    """
    with locked(path.with_name(LOCK_FILE_NAME)):
        state = read_state(path)
        if state is not None and change(state):
            write_state(path, state)
        return state


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, None if gone.

    The start time tells a process from a later one that got the same pid.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def process_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether the process recorded as (pid, start_ticks) still runs (zombies do not)."""
    if not pid:
        return False
    stat = proc_stat(pid)
    if stat is None:
        return False
    letter, ticks = stat
    if letter in ("Z", "X"):
        return False
    return start_ticks is None or ticks == start_ticks


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def sudo_prefix(state: State) -> list[str]:
    """``sudo -n -u <job user> --`` when jobs run as another user through sudo (the bot is
    not root), else nothing (see layerbot/build/identity.py)."""
    run_as = state.get("run_as") or {}
    if run_as.get("switch") != "sudo":
        return []
    return ["sudo", "-n", "-u", str(run_as["name"]), "--"]


def signal_job_group(state: State, pgid: int, signum: int) -> None:
    """Signal the job's process group. Without root the bot may not signal the job user's
    processes itself, so ``kill`` runs as the job user: it can reach nothing but that user's
    processes, whatever pgid it is given."""
    prefix = sudo_prefix(state)
    if prefix:
        _kill_as(prefix, f"-{pgid}", signum)
    else:
        signal_group(pgid, signum)


def _kill_as(prefix: list[str], target: str, signum: int) -> None:
    """``kill`` as the job user: ``target`` is a pid, or ``-pgid`` for a process group."""
    try:
        done = subprocess.run([*prefix, "kill", "-s", signal_name(signum).removeprefix("SIG"),
                               "--", target], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=SUDO_TIMEOUT_SECONDS, check=False,
                              env=_sudo_env())
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"cannot run sudo to signal the job: {exc}", file=sys.stderr)
        return
    # A group that already ended is no news; sudo refusing is: the job would run on.
    if done.returncode != 0 and done.stderr.startswith("sudo:"):
        print(f"cannot signal the job as its user: {done.stderr.strip()} (see the sudoers "
              "rule in docs/security.md)", file=sys.stderr)


def _sudo_env() -> dict[str, str]:
    """sudo's own environment: nothing of the bot's (sudo resets the command's anyway)."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _read_pid(stream: Any, timeout: float) -> int | None:
    """The first line of ``stream`` as a pid, waiting at most ``timeout`` seconds."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0].strip()  # a pty may add "\r"
    return int(line) if line.isdigit() and int(line) > 1 else None


def exec_job(log_file: str, script: str) -> int:
    """As the job user, under sudo (see ``Launcher._start_via_sudo``): become a session of
    its own, report the pid, then become the job. Never returns on success."""
    env = json.loads(sys.stdin.read() or "{}")
    with contextlib.suppress(OSError):
        os.setsid()  # already a session leader under sudo's pty
    sys.stdout.write(f"{os.getpid()}\n")
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for extra in (null, fd):
        os.close(extra)
    try:
        os.execve(script, [script], {str(k): str(v) for k, v in env.items()})  # noqa: S606
    except OSError as exc:  # the launcher checked the script; this is a late surprise
        print(f"cannot run job script {script}: {exc.strerror}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --- the launcher ------------------------------------------------------------------------


def _become_subreaper() -> None:
    """Adopt the job's orphaned descendants (Linux), so they are reaped and can be killed.

    Without this, a background process the job leaves behind is re-parented to PID 1, which
    on some machines reaps late, and leaves zombies that look like a live process group.
    """
    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _adopted_children() -> list[int]:
    """Our direct children (as a subreaper, this includes the job's orphans)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                pids.extend(int(p) for p in (task / "children").read_text().split())
    return pids


def script_problem(script: Path, display: str, job_dir: Path) -> tuple[str, int] | None:
    """Why the script cannot be run (reason, shell-like exit code), or None if it can."""
    where = " in the job directory" if script.is_relative_to(job_dir) else ""
    if not script.exists():
        return f"job script {display} not found{where}", EXIT_NOT_FOUND
    if not script.is_file():
        return f"job script {display} is not a file{where}", EXIT_NOT_EXECUTABLE
    if not os.access(script, os.X_OK):
        return (
            f"job script {display} is not executable (git update-index --chmod=+x)",
            EXIT_NOT_EXECUTABLE,
        )
    return None


def _job_child(log_file: Path) -> None:
    """In the job's process, after the identity change: make sure root cannot be regained,
    then open the log as the job user and make it stdout and stderr."""
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise RuntimeError("the job process could regain root")
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class Launcher:
    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.stop_signal: int | None = None
        self.main_pid: int | None = None
        self.main_status: int | None = None
        self.pgid: int | None = None
        self.started_mono: float | None = None
        self.kill_at: float | None = None  # when the grace period after SIGTERM ends
        self.terminated_by: str | None = None  # "timeout" or "stop" once we stopped the job
        self.grace = 10.0
        self.state: State = {}  # as registered: who the job runs as, and how
        self._wake_r, self._wake_w = os.pipe()

    # Signals: handlers only note what arrived; the wake-up pipe interrupts select(), so a
    # signal that comes between a check and the wait is never missed.
    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def _on_stop(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def run(self) -> int:
        self._install_signals()
        _become_subreaper()
        state = self._register()
        if state is None or state.get("outcome") is not None:
            return 0
        self.state = state
        if state.get("cancel_requested_at"):
            self._finish(cancelled=True)
            return 0
        self.grace = float(state.get("grace_seconds") or self.grace)
        proc = self._start(state)
        if proc is None:
            return 0
        self._supervise(state.get("time_limit_seconds"))
        proc.returncode = self._returncode()  # we reaped it ourselves; keep Popen quiet
        self._clean_up_leftovers()
        self._finish()
        return 0

    def _register(self) -> State | None:
        stat = proc_stat(os.getpid())

        def change(state: State) -> bool:
            state["launcher"] = {
                "pid": os.getpid(),
                "start_ticks": stat[1] if stat else None,
                "host": socket.gethostname(),
            }
            return state.get("outcome") is None

        return update_state(self.state_file, change)

    def _start(self, state: State) -> subprocess.Popen[bytes] | None:
        job_dir = Path(state["job_dir"])
        script = Path(state["script"])
        display = state.get("script_display") or str(script)
        problem = script_problem(script, display, job_dir)
        if problem is not None:
            self._finish(error=problem[0], exit_code=problem[1])
            return None
        log_file = Path(state["log_file"])
        run_as = state.get("run_as")
        if run_as and sudo_prefix(state):
            return self._start_via_sudo(state, script, display, log_file)
        if run_as:
            return self._start_as(state, run_as, script, display, log_file)
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log = log_file.open("wb")
        except OSError as exc:
            self._finish(error=f"cannot open the log file {log_file}: {exc.strerror}")
            return None
        try:
            with log:
                proc = subprocess.Popen(
                    [str(script)],
                    cwd=job_dir,
                    env=dict(state.get("env") or {}),  # exactly this; nothing of ours
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the job's own process group, without us
                )
        except OSError as exc:
            self._not_started(exc, display)
            return None
        return self._started(proc)

    def _start_as(self, state: State, run_as: State, script: Path, display: str,
                  log_file: Path) -> subprocess.Popen[bytes] | None:
        """Start the job as the job user (the launcher runs as root).

        Popen sets the groups, gid and uid in the child; only then ``_job_child`` opens the
        log, as the job user: a log name that the PR made a symlink can only lead to what
        the job could write anyway, and nothing in the job directory is opened as root.
        """
        try:
            proc = subprocess.Popen(
                [str(script)],
                cwd=Path(state["job_dir"]),
                env=dict(state.get("env") or {}),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                user=int(run_as["uid"]),
                group=int(run_as["gid"]),
                extra_groups=[int(g) for g in run_as.get("groups") or []],
                preexec_fn=lambda: _job_child(log_file),
            )
        except subprocess.SubprocessError as exc:
            self._finish(error=f"cannot open the log file {log_file} as the job user: {exc}")
            return None
        except OSError as exc:
            self._not_started(exc, display)
            return None
        return self._started(proc)

    def _start_via_sudo(self, state: State, script: Path, display: str,
                        log_file: Path) -> subprocess.Popen[bytes] | None:
        """Start the job as the job user through sudo (the bot is not root).

        sudo runs this file again as the job user (:func:`exec_job`): it reads the job's
        environment from stdin (sudo passes no environment), makes its own session, tells
        us its pid (the job's process group) on stdout, opens the log as the job user with
        ``O_NOFOLLOW`` and execs the script. The launcher stays the bot's, so the job cannot
        touch its state; it signals the job's group as the job user (:func:`signal_job_group`).
        """
        argv = [*sudo_prefix(state), sys.executable, "-I", os.path.abspath(__file__),
                "--exec", str(log_file), str(script)]
        try:
            proc = subprocess.Popen(argv, cwd=Path(state["job_dir"]), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, env=_sudo_env())
        except OSError as exc:
            self._finish(error=f"cannot run sudo to start the job: {exc.strerror or exc}")
            return None
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(dict(state.get("env") or {})).encode())
        proc.stdin.close()
        pgid = _read_pid(proc.stdout, SUDO_TIMEOUT_SECONDS)
        proc.stdout.close()
        if pgid is None:
            proc.wait()
            assert proc.stderr is not None
            why = proc.stderr.read(2000).decode(errors="replace").strip() or "no answer"
            self._finish(error=f"cannot start the job as {state['run_as']['name']} through "
                               f"sudo: {why}", exit_code=EXIT_NOT_EXECUTABLE)
            return None
        assert proc.stderr is not None
        proc.stderr.close()
        return self._started(proc, pgid)  # sudo's pid is the child; the job has its group

    def _not_started(self, exc: OSError, display: str) -> None:
        hint = " (does it start with #!?)" if exc.errno == 8 else ""
        self._finish(
            error=f"cannot run job script {display}: {exc.strerror}{hint}",
            exit_code=EXIT_NOT_EXECUTABLE,
        )

    def _started(self, proc: subprocess.Popen[bytes],
                 pgid: int | None = None) -> subprocess.Popen[bytes]:
        """``pgid``: the job's process group when it is not the child's own pid (sudo)."""
        self.started_mono = time.monotonic()
        self.main_pid = proc.pid
        self.pgid = pgid or proc.pid
        self._record_start(proc.pid, self.pgid)
        return proc

    def _record_start(self, pid: int, pgid: int) -> None:
        stat = proc_stat(pid)

        def change(state: State) -> bool:
            state["job"] = {
                "pid": pid,
                "pgid": pgid,
                "start_ticks": stat[1] if stat else None,
                "started_at": now_iso(),
            }
            return True

        state = update_state(self.state_file, change)
        # A cancel that came between registering and starting: honour it now.
        if state is not None and state.get("cancel_requested_at") and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM

    def _reap(self) -> None:
        """Collect every exited child; note the job script's own status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_status = status

    def _signal_job(self, signum: int) -> None:
        assert self.pgid is not None
        signal_job_group(self.state, self.pgid, signum)

    def _terminate(self, why: str) -> None:
        self.terminated_by = why
        self._signal_job(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.grace

    def _escalate_if_due(self) -> None:
        if self.kill_at is not None and time.monotonic() >= self.kill_at and self.pgid:
            self._signal_job(signal.SIGKILL)
            self.kill_at = None

    def _supervise(self, time_limit: float | None) -> None:
        assert self.started_mono is not None
        deadline = self.started_mono + time_limit if time_limit else None
        while True:
            self._reap()
            if self.main_status is not None:
                return
            now = time.monotonic()
            if self.terminated_by is None:
                if self.stop_signal is not None:
                    self._terminate("stop")
                elif deadline is not None and now >= deadline:
                    self._terminate("timeout")
            self._escalate_if_due()
            self._wait(self._next_timeout(deadline))

    def _next_timeout(self, deadline: float | None) -> float:
        now = time.monotonic()
        waits = [60.0]
        if deadline is not None and self.terminated_by is None:
            waits.append(deadline - now)
        if self.kill_at is not None:
            waits.append(self.kill_at - now)
        return max(0.0, min(waits))

    def _wait(self, timeout: float) -> None:
        select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _clean_up_leftovers(self) -> None:
        """Stop whatever the job left running: its group, then orphans that left the group.

        Like a batch system, nothing of a job outlives it; gently first (SIGTERM), then
        SIGKILL when the grace period is over.
        """
        assert self.pgid is not None
        if group_alive(self.pgid) and self.kill_at is None and self.terminated_by is None:
            self._signal_job(signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace
        while group_alive(self.pgid) and self.kill_at is not None:
            if time.monotonic() >= self.kill_at:
                break
            self._wait(0.05)
            self._reap()
        self._signal_job(signal.SIGKILL)
        for pid in _adopted_children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # the job user's: only as root (or unisolated)
            if sudo_prefix(self.state):
                _kill_as(sudo_prefix(self.state), str(pid), signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while (group_alive(self.pgid) or _adopted_children()) and time.monotonic() < deadline:
            self._wait(0.02)
            self._reap()

    def _returncode(self) -> int:
        status = self.main_status or 0
        if os.WIFSIGNALED(status):
            return -os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)

    def _finish(
        self, *, cancelled: bool = False, error: str | None = None, exit_code: int | None = None
    ) -> None:
        """Write the outcome. Whether it counts as cancelled is decided under the lock."""
        code, signum = exit_code, None
        if self.main_status is not None:
            returncode = self._returncode()
            code, signum = (None, -returncode) if returncode < 0 else (returncode, None)
        elapsed = None if self.started_mono is None else time.monotonic() - self.started_mono
        max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux

        def change(state: State) -> bool:
            if state.get("outcome") is not None:
                return False
            asked = bool(state.get("cancel_requested_at"))
            was_cancelled = cancelled or (asked and self.terminated_by == "stop")
            reason = error
            if self.terminated_by == "stop" and not was_cancelled and reason is None:
                stopper = signal_name(self.stop_signal or signal.SIGTERM)
                reason = f"the launcher was stopped by {stopper}; the job was terminated"
            state["outcome"] = {
                "ended_at": now_iso(),
                "exit_code": code,
                "signal": signum,
                "signal_name": signal_name(signum) if signum else None,
                "timed_out": self.terminated_by == "timeout",
                "cancelled": was_cancelled,
                "error": reason,
                "lost": False,
                "max_rss_bytes": max_rss if self.main_status is not None else None,
                "elapsed_seconds": elapsed,
            }
            return True

        update_state(self.state_file, change)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:  # `layerbot doctor`: the launcher can be imported and started
        print("layerbot local launcher ok")
        return 0
    if len(args) == 3 and args[0] == "--exec":  # as the job user, under sudo
        return exec_job(args[1], args[2])
    if len(args) != 1:
        print("usage: python -m layerbot.backends.local_launcher STATE_FILE", file=sys.stderr)
        return 2
    return Launcher(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
