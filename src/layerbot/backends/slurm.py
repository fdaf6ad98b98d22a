"""The Slurm backend: sbatch, one squeue (+ at most one sacct) per poll, scancel, sinfo.

Every Slurm call is an argv list run as an asyncio subprocess; the command names come
from ``backend.slurm`` and may carry a prefix (``sbatch = "ssh -o BatchMode=yes login
sbatch"``), so the bot can also drive a site from outside. What the commands print is
turned into layerbot's types by the pure functions of :mod:`slurm_parse`.

Robustness, in short (docs/slurm.md has the measurements behind each point):

- Jobs are tagged: ``--job-name=layerbot-<instance>-<job id>`` and
  ``--comment=layerbot:<instance>:<job id>``; find, poll and cancel only ever act on
  jobs whose tag names the expected layerbot job, so other jobs of the same user, and a
  Slurm id handed to another job after a slurmctld crash, are never touched.
- slurmctld down: poll, cancel and resources raise :class:`BackendUnavailable` (the
  reconciler backs off); submit and find wait for it for up to
  ``unavailable_wait_seconds`` (a queued job stays queued meanwhile), then raise it; a
  release that cannot reach it is retried at the next poll.
- The job gets exactly ``request.env`` (plus Slurm's SLURM_* variables): ``--export=NIL``
  keeps the bot's own environment (its secrets) on the bot's host, and the batch script,
  given on stdin, runs the job script under ``env -i``.
- Dependencies (``request.after_ok``) are Slurm's: ``--dependency=afterok:<id>:<id>
  --kill-on-invalid-dep=yes``, together with the hold (a released job still waits for
  them). Slurm ignores ids it no longer knows (measured, 22.05: ``afterok:<unknown id>``
  runs at once), so a job it needs that already left slurmctld is checked in accounting
  at submit: one that did not succeed refuses the submission (:meth:`_check_needed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from layerbot import log
from layerbot.backends import slurm_parse as sp
from layerbot.backends.base import (
    JOB_ID_PLACEHOLDER,
    BackendState,
    BackendUnavailable,
    Check,
    JobStatus,
    Resources,
    SubmitError,
    SubmitRequest,
    dependency_failed_reason,
)
from layerbot.build import hostile
from layerbot.build.handover import HandOverFailed, hand_over
from layerbot.build.identity import JobUser
from layerbot.config import NodeType, SlurmBackendConfig

_log = log.get("slurm")

#: Variables of the bot's environment that would change what the Slurm commands do
#: (SBATCH_PARTITION, SQUEUE_FORMAT, ...) or, via --export=NIL, reach the job (SLURM_*).
_DROPPED_ENV_PREFIXES = ("SBATCH_", "SQUEUE_", "SACCT_", "SINFO_", "SCANCEL_", "SLURM_")
_KEPT_SLURM_ENV = frozenset({"SLURM_CONF"})
DEFAULT_LOG_NAME = "job.log"
#: How much of a failed job's log to read for slurmstepd's "Exceeded job memory limit".
LOG_PROBE_BYTES = 64 * 1024
FIND_LOOKBACK_DAYS = 14

T = TypeVar("T")


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class _Refused(BackendUnavailable):
    """A Slurm command cannot be run or refuses a query: waiting will not help (the
    reconciler still backs off, and doctor says what is wrong)."""


class _SingleFlight(Generic[T]):
    """Callers that ask while a call is in flight share its answer (one scheduler call).

    Safe for find/cancel: a snapshot started before a caller asked can only miss jobs this
    process submits after it asked, and those are never the ones it asks about.
    """

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._task: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._task)


class _Batch(Generic[T]):
    """Names asked for within ``window`` seconds of each other are looked up with one
    call (the submitter looks up every job of a build at once); every caller gets the
    whole answer and picks its own.

    The call starts after the last name joined, so its answer is never older than a
    caller's question.
    """

    def __init__(self, fetch: Callable[[list[str]], Awaitable[T]], window: float = 0.01) -> None:
        self._fetch = fetch
        self._window = window
        self._pending: tuple[set[str], asyncio.Future[T]] | None = None
        self._flushes: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs

    async def get(self, name: str) -> T:
        if self._pending is None:
            self._pending = (set(), asyncio.get_running_loop().create_future())
            task = asyncio.ensure_future(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        names, future = self._pending
        names.add(name)
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        await asyncio.sleep(self._window)
        assert self._pending is not None
        (names, future), self._pending = self._pending, None
        try:
            future.set_result(await self._fetch(sorted(names)))
        except BaseException as exc:  # every waiter gets the failure
            future.set_exception(exc)
            future.exception()  # retrieved: a waiter that gave up does not warn


class SlurmBackend:
    """layerbot's port to Slurm (22.05 JSON shapes; later ones tolerated)."""

    name = "slurm"

    def __init__(
        self,
        config: SlurmBackendConfig,
        node_types: Sequence[NodeType] = (),
        *,
        timeout_seconds: float = 60.0,
        unavailable_wait_seconds: float = 120.0,
        job_user: JobUser | None = None,
    ) -> None:
        self.config = config
        #: Who submits, and so who the jobs run as (sbatch, scontrol release and scancel run
        #: as this user); None: the bot's own user, which the operator allowed explicitly.
        self.job_user = job_user
        self.submit_user = job_user.name if job_user else _user_name(os.geteuid()) or ""
        self.node_types = tuple(node_types)
        #: Longest a single Slurm command may take before it counts as "slurmctld hung".
        self.timeout_seconds = timeout_seconds
        #: How long submit and find wait for an unreachable slurmctld before giving up.
        self.unavailable_wait_seconds = unavailable_wait_seconds
        self.calls = 0
        #: Every cluster a job may go to: queries ask them all (-M a,b).
        self._clusters = sp.clusters_of(config.clusters,
                                        [config.defaults, *(n.options for n in self.node_types)])
        self._env = _command_env(os.environ)
        self._queue = _SingleFlight(self._squeue)
        self._queued_by_name = _Batch(self._squeue_by_names)
        self._accounted_by_name = _Batch(self._sacct_by_names)
        #: (Slurm id, cluster) of jobs this process submitted: released without a lookup.
        self._submitted: set[tuple[str, str | None]] = set()
        #: Releases that could not reach slurmctld, retried at the next poll.
        self._unreleased: set[str] = set()

    # --- running commands ------------------------------------------------------------------

    def _argv(self, tool: str, *args: str) -> list[str]:
        return [*shlex.split(getattr(self.config, tool)), *args]

    def _cluster_args(self, cluster: str | None = None) -> list[str]:
        if cluster:
            return ["-M", cluster]
        return ["-M", ",".join(self._clusters)] if self._clusters else []

    async def _run(self, tool: str, *args: str, stdin: str | None = None,
                   cwd: Path | None = None, env: Mapping[str, str] | None = None,
                   as_job_user: bool = False) -> _Result:
        """Run one Slurm command. ``as_job_user``: the commands that create or change jobs
        run as the job user, so Slurm records that user as the job's owner and runs the job
        as it; queries run as the bot."""
        user = self.job_user if as_job_user else None
        prefix = user.sudo_prefix() if user else []  # not root: through sudo
        switch = user if user and not prefix else None  # root: the child switches itself
        argv = [*prefix, *self._argv(tool, *args)]
        self.calls += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env={**self._env, **(env or {})},
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                user=switch.uid if switch else None, group=switch.gid if switch else None,
                extra_groups=list(switch.groups) if switch else None)
        except OSError as exc:
            raise _Refused(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None),
                timeout=self.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BackendUnavailable(f"{tool} did not answer within {self.timeout_seconds:g} s "
                                     "(slurmctld overloaded or hung?)") from None
        result = _Result(proc.returncode or 0, out.decode(errors="replace"),
                         err.decode(errors="replace"))
        if not result.ok:
            _log.debug("slurm command failed", argv=argv, rc=result.returncode,
                       stderr=result.stderr.strip()[:500])
        return result

    async def _query(self, tool: str, *args: str, env: Mapping[str, str] | None = None) -> str:
        """A read-only command that must succeed; an unreachable daemon -> BackendUnavailable."""
        result = await self._run(tool, *args, env=env)
        if result.ok:
            return result.stdout
        message = f"{tool}: {sp.clean_error(result.stderr)}"
        if sp.is_unavailable(result.stderr):
            raise BackendUnavailable(message)
        raise _Refused(message)

    async def _patiently(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry ``attempt`` while Slurm cannot be reached, up to unavailable_wait_seconds."""
        deadline = time.monotonic() + self.unavailable_wait_seconds
        delay = 0.5
        while True:
            try:
                return await attempt()
            except _Refused:
                raise
            except BackendUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning(f"slurm unavailable; {what} waits", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # --- submit ----------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> str:
        try:
            args, script = self.sbatch_command(request)
        except sp.OptionError as exc:
            raise SubmitError(str(exc)) from None
        if not request.job_dir.is_dir():
            raise SubmitError(f"the job directory {request.job_dir} does not exist")
        if request.after_ok:
            await self._patiently(f"checking what job {request.job_id} needs",
                                  lambda: self._check_needed(request.after_ok))
        if self.job_user is not None:
            try:
                await asyncio.to_thread(hand_over, request.job_dir, self.job_user)
            except HandOverFailed as exc:
                raise SubmitError(str(exc)) from None
        first = True

        async def attempt() -> str:
            nonlocal first
            if not first:  # an earlier sbatch may have got through before it failed
                found = await self._find(request.job_id, request.instance, request.job_dir,
                                         fresh=True)
                if found is not None:
                    return found
            first = False
            return await self._sbatch(request, args, script)

        return await self._patiently(f"submitting job {request.job_id}", attempt)

    async def _sbatch(self, request: SubmitRequest, args: list[str], script: str) -> str:
        result = await self._run("sbatch", *args, stdin=script, cwd=request.job_dir,
                                 as_job_user=True)
        if result.ok:
            try:
                job, cluster = sp.parse_parsable(result.stdout)
            except ValueError as exc:
                raise SubmitError(str(exc)) from None
            self._submitted.add((job, cluster))
            return str(sp.SlurmId(job, cluster, request.job_id))
        message = sp.clean_error(result.stderr)
        if sp.is_unavailable(result.stderr):
            raise BackendUnavailable(message)
        raise SubmitError(message)

    def sbatch_command(self, request: SubmitRequest) -> tuple[list[str], str]:
        """sbatch's arguments and the batch script (its stdin) for a request."""
        options = sp.merge_options(self.config.defaults, request.options)
        if "time" not in options and request.time_limit_seconds:
            options["time"] = sp.time_minutes(request.time_limit_seconds)
        if "clusters" not in options and self.config.clusters:
            options["clusters"] = ",".join(self.config.clusters)  # sbatch picks one
        log_file = Path(os.path.abspath(request.job_dir / (request.log_file or DEFAULT_LOG_NAME)))
        script = request.job_dir / request.script  # an absolute script stays as it is
        tag = sp.job_tag(request.instance, request.job_id)
        handover = (["--hold"] if self.config.handover == "hold_release"
                    else [f"--begin=now+{self.config.delayed_begin_seconds}"])
        args = [
            "--parsable",
            f"--job-name={sp.job_name(request.instance, request.job_id)}",
            f"--comment={tag}",
            f"--chdir={os.path.abspath(request.job_dir)}",
            f"--output={_output_option(log_file)}",
            "--export=NIL",
            *handover,
            *sp.dependency_args(request.after_ok),
            *sp.option_args(options),
        ]
        return args, sp.batch_script(os.path.abspath(script), request.env, tag)

    async def _check_needed(self, after_ok: Sequence[str]) -> None:
        """Refuse a job when Slurm could not enforce its dependencies: one it needs is gone
        from slurmctld (purged after MinJobAge, or lost) and accounting does not say it
        completed. Slurm would take its id as satisfied and run the job. Jobs still in the
        queue are Slurm's to judge: it cancels the dependent if one of them fails."""
        queue = await self._queue.get()
        sids = [sp.parse_backend_id(b) for b in after_ok]
        gone = [s for s in sids if s is not None and sp.pick_queued(queue, s) is None]
        if not gone:
            return
        acct, answered, disabled = await self._sacct(sorted({s.job for s in gone}))
        if not answered and not disabled:
            raise BackendUnavailable("sacct did not answer about the jobs it needs")
        for sid in gone:
            found = sp.pick_acct(acct, sid)
            state = (sp.map_state(found.state) if found else None) or BackendState.UNKNOWN
            if state is not BackendState.COMPLETED:
                raise SubmitError(dependency_failed_reason(str(sid), state))

    # --- release ---------------------------------------------------------------------------

    async def release(self, backend_ids: Sequence[str]) -> None:
        """Let held jobs start (hold_release). Never raises: a release that cannot reach
        slurmctld is retried at the next poll; jobs not held any more are left alone."""
        if self.config.handover != "hold_release" or not backend_ids:
            return
        sids = [s for s in map(sp.parse_backend_id, backend_ids) if s is not None]
        unknown = [s for s in sids if (s.job, s.cluster) not in self._submitted]
        if unknown:  # recorded by an earlier run: release only what is still our held job
            try:
                queue = await self._queue.get()
            except BackendUnavailable:
                self._unreleased.update(map(str, sids))
                return
            held = {str(s) for s in unknown if _held(sp.pick_queued(queue, s))}
            sids = [s for s in sids if (s.job, s.cluster) in self._submitted or str(s) in held]
        await self._release(sids)

    async def _release(self, sids: Sequence[sp.SlurmId]) -> bool:
        """Release, one scontrol call per cluster; False if slurmctld could not be reached."""
        reached = True
        by_cluster: dict[str | None, list[sp.SlurmId]] = {}
        for sid in sids:
            by_cluster.setdefault(sid.cluster, []).append(sid)
        for cluster, group in by_cluster.items():
            ids = ",".join(s.job for s in group)
            try:
                result = await self._run("scontrol", *self._cluster_args(cluster), "release", ids,
                                         as_job_user=True)
            except BackendUnavailable:
                result = _Result(1, "", "Unable to contact slurm controller")
            if not result.ok and sp.is_unavailable(result.stderr):
                _log.warning("release deferred: slurm unavailable", jobs=ids)
                self._unreleased.update(str(s) for s in group)
                reached = False
                continue
            self._unreleased.difference_update(str(s) for s in group)
            if not result.ok:  # e.g. "Job has already finished": nothing left to release
                _log.info("scontrol release", jobs=ids, error=sp.clean_error(result.stderr))
        return reached

    # --- find ------------------------------------------------------------------------------

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        return await self._patiently(f"looking up job {job_id}",
                                     lambda: self._find(job_id, instance, job_dir))

    async def _find(self, job_id: int, instance: str, job_dir: Path, *,
                    fresh: bool = False) -> str | None:
        """The queue and accounting are asked side by side (the common answer, "never
        submitted", needs both), by job name and user. ``fresh``: a call of its own, not one
        shared with concurrent callers (after an sbatch whose fate is unknown, an answer
        that started before it could miss the job).

        A name is only a filter: anyone can give a job any name and comment. A job is
        adopted only with proof (:func:`slurm_parse.proves_job`): it runs as the job user,
        in the directory the bot created for it."""
        name = sp.job_name(instance, job_id)
        queued, accounted = await asyncio.gather(
            self._squeue_by_names([name]) if fresh else self._queued_by_name.get(name),
            self._accounted_by_name.get(name))
        # Only a job that ended counts: one gone from the queue but not finished in
        # accounting was lost by slurmctld and must be submitted again.
        candidates = [*queued, *(j for j in accounted or []
                                 if sp.map_state(j.state or "") in sp.FINAL_STATES)]
        ours = [j for j in candidates  # job_dir is absolute, as given to sbatch --chdir
                if sp.proves_job(j, instance, job_id, self.submit_user, str(job_dir))]
        if not ours:
            return None
        latest = max(ours, key=lambda j: j.submit or 0)
        return str(sp.SlurmId(latest.job_id, self._cluster_of(latest.cluster), job_id))

    async def _squeue_by_names(self, names: list[str]) -> list[sp.TaggedJob]:
        """Jobs of these names and of the submitting user that slurmctld knows. Plain squeue
        honours --name and --user (--json does not filter at all in 22.05) and prints a few
        lines instead of every job's JSON."""
        out = await self._query("squeue", *self._cluster_args(), "-t", "all",
                                f"--name={','.join(names)}", f"--user={self.submit_user}",
                                "-o", sp.SQUEUE_TAG_FORMAT, env={"SLURM_TIME_FORMAT": "%s"})
        return sp.parse_squeue_tagged(out)

    async def _sacct_by_names(self, names: list[str]) -> list[sp.TaggedJob] | None:
        """Jobs of these names and of the submitting user in accounting (None: it cannot be
        asked at this site).

        With -S, sacct lists only jobs eligible in the window, which a held job cancelled
        before its release never was: hence every state named with -s (measured)."""
        try:
            out = await self._query(
                "sacct", *self._cluster_args(), "-P", "-n", "-X", "-D",
                f"--name={','.join(names)}", f"--user={self.submit_user}",
                "-s", sp.SACCT_ALL_STATES,
                "-S", f"now-{FIND_LOOKBACK_DAYS}days", "-E", "now",
                "-o", ",".join(sp.SACCT_TAG_FIELDS), env={"SLURM_TIME_FORMAT": "%s"})
        except _Refused as exc:  # e.g. no accounting at this site: the queue is all
            _log.warning("sacct refused the lookup; trusting squeue alone", error=str(exc))
            return None
        return sp.parse_sacct_tagged(out)

    def _cluster_of(self, cluster: str | None) -> str | None:
        """Backend ids name the cluster only where several may be asked."""
        return cluster if self._clusters else None

    # --- poll ------------------------------------------------------------------------------

    async def poll(self, backend_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        """One squeue for every job, plus one sacct for those that ended or left the queue."""
        if self._unreleased and not await self._release(
                [s for s in map(sp.parse_backend_id, self._unreleased) if s]):
            raise BackendUnavailable("slurmctld cannot be reached (scontrol release failed)")
        queue = await self._squeue()
        sids = {b: sp.parse_backend_id(b) for b in backend_ids}
        queued = {b: sp.pick_queued(queue, s) for b, s in sids.items() if s is not None}
        need_acct = sorted({s.job for b, s in sids.items() if s is not None
                            and (queued[b] is None or _final(queued[b]))})
        acct, answered, disabled = await self._sacct(need_acct)
        now = time.time()
        statuses: dict[str, JobStatus] = {}
        for backend_id, sid in sids.items():
            seen = sp.Observed(queued=queued.get(backend_id),
                               acct=sp.pick_acct(acct, sid) if sid else None,
                               acct_answered=answered, accounting_disabled=disabled,
                               user_name=_user_name,
                               needed=_needed(queue, queued.get(backend_id)))
            status = await self._status(backend_id, seen, now)
            if status is not None:
                statuses[backend_id] = status
        return statuses

    async def _status(self, backend_id: str, seen: sp.Observed, now: float) -> JobStatus | None:
        status = sp.job_status(backend_id, seen, now)
        q = seen.queued
        if status is None or not _maybe_oom(status) or q is None or not q.stdout:
            return status
        # No MaxRSS evidence (a site sampling every 30 s): slurmstepd's line in the log.
        if await asyncio.to_thread(_log_says_oom, Path(q.stdout)):
            return sp.job_status(backend_id, replace(seen, log_says_oom=True), now)
        return status

    async def _squeue(self) -> list[sp.QueueJob]:
        # 22.05 ignores every filter with --json and lists all jobs slurmctld knows:
        # ask once, pick ours by id (and tag).
        out = await self._query("squeue", *self._cluster_args(), "--json")
        try:
            return sp.parse_squeue_json(out)
        except ValueError as exc:  # its "errors" (slurmctld down) or unreadable output
            raise BackendUnavailable(f"squeue --json: {exc}") from None

    async def _sacct(self, ids: Sequence[str]) -> tuple[list[sp.AcctJob], bool, bool]:
        """(jobs, answered, accounting disabled); a failing sacct is no news, not an error:
        the jobs still in the queue are reported from squeue."""
        if not ids:
            return [], True, False
        result = await self._run("sacct", *self._cluster_args(), *sp.sacct_args(ids),
                                 env={"SLURM_TIME_FORMAT": "%s"})
        if result.ok:
            return sp.parse_sacct(result.stdout), True, False
        disabled = sp.accounting_disabled(result.stderr)
        if not disabled:
            _log.warning("sacct failed", error=sp.clean_error(result.stderr))
        return [], False, disabled

    # --- cancel ----------------------------------------------------------------------------

    async def cancel(self, backend_id: str) -> None:
        sid = sp.parse_backend_id(backend_id)
        if sid is None:
            return
        # A job this process submitted is ours; one recorded earlier is checked first (a
        # shared squeue is fine for it: it cannot be younger than the call).
        if sid.layerbot_job is not None and (sid.job, sid.cluster) not in self._submitted:
            job = sp.pick_queued(await self._queue.get(), sid)
            if job is None or _final(job):
                return  # gone, ended, or the id now names a job that is not ours
        result = await self._run("scancel", *self._cluster_args(sid.cluster), sid.job,
                                 as_job_user=True)
        if not result.ok:
            message = sp.clean_error(result.stderr)
            if sp.is_unavailable(result.stderr):
                raise BackendUnavailable(message)
            _log.info("scancel", job=sid.job, error=message)

    # --- resources and checks --------------------------------------------------------------

    async def resources(self) -> Resources:
        out = await self._query("sinfo", *self._cluster_args(), "-o", sp.SINFO_FORMAT)
        return Resources(backend=self.name, partitions=sp.parse_sinfo(out))

    async def check(self) -> list[Check]:
        """`layerbot doctor`: the commands answer and every node type is accepted."""
        checks = [await self._check_tools()]
        if not checks[0].ok:
            return checks
        checks.append(await self._check_squeue())
        checks.append(await self._check_sacct())
        checks.append(await self._check_partitions())
        checks.extend([await self._check_node_type(n) for n in self.node_types])
        return checks

    async def _check_tools(self) -> Check:
        missing, version = [], ""
        for tool in ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo"):
            try:
                result = await self._run(tool, "--version")
            except BackendUnavailable as exc:
                missing.append(f"{tool} ({exc})")
                continue
            version = version or result.stdout.strip()
        if missing:
            return Check("slurm commands", False, "; ".join(missing),
                         "install the Slurm client commands or set backend.slurm.<command>")
        return Check("slurm commands", True, f"sbatch, squeue, sacct, scancel, scontrol, "
                     f"sinfo: {version}")

    async def _check_squeue(self) -> Check:
        try:
            jobs = await self._squeue()
        except BackendUnavailable as exc:
            return Check("slurmctld (squeue)", False, str(exc),
                         "start slurmctld, or check SLURM_CONF and munge on this host")
        return Check("slurmctld (squeue)", True, f"squeue --json answers ({len(jobs)} jobs)")

    async def _check_sacct(self) -> Check:
        result = await self._run("sacct", *self._cluster_args(), "-n", "-X", "-P",
                                 "-S", "now", "-E", "now", "-o", "JobIDRaw")
        if result.ok:
            return Check("accounting (sacct)", True, "sacct answers")
        return Check("accounting (sacct)", False, sp.clean_error(result.stderr),
                     "without accounting, jobs that leave the queue are reported from "
                     "their result files only: check slurmdbd")

    async def _check_partitions(self) -> Check:
        wanted = sp.partitions_of([self.config.defaults, *(n.options for n in self.node_types)])
        try:
            known = {p.name.split(":")[-1] for p in (await self.resources()).partitions}
        except BackendUnavailable as exc:
            return Check("partitions", False, str(exc), "start slurmctld")
        missing = sorted(wanted - known)
        if missing:
            detail = f"no partition {', '.join(missing)} (there are: {', '.join(sorted(known))})"
            return Check("partitions", False, detail,
                         "fix the partition option of backend.slurm.defaults or the node types")
        return Check("partitions", True, f"all exist: {', '.join(sorted(wanted)) or '(default)'}")

    async def _check_node_type(self, node: NodeType) -> Check:
        """sbatch --test-only: would Slurm take a job of this node type (nothing is queued)."""
        name = f"node type {node.name}"
        try:
            options = sp.merge_options(self.config.defaults, node.options)
            args = sp.option_args(options)
        except sp.OptionError as exc:
            return Check(name, False, str(exc), "fix the node type's options")
        result = await self._run("sbatch", "--test-only", *self._cluster_args(),
                                 "--output=/dev/null", *args, "--wrap", "true", cwd=Path("/"),
                                 as_job_user=True)
        text = sp.clean_error(result.stderr)
        if not result.ok:
            return Check(name, False, f"sbatch refuses {' '.join(args) or 'the defaults'}: {text}",
                         "fix the node type's options (partition, constraint, time, memory)")
        return Check(name, True, f"{' '.join(args) or '(defaults)'}: {text}")


# --- helpers -------------------------------------------------------------------------------


# --- EESSI compatibility: the job's output where EESSI's scripts look for it --------------


def _output_option(log_file: Path) -> str:
    """sbatch's --output for ``log_file``: every ``%`` literal, except JOB_ID_PLACEHOLDER in
    the file name, which sbatch expands to the job id (``slurm-%j.out`` ->
    ``slurm-123.out``, as EESSI's check scripts expect)."""
    parts = [sp.output_path(p) for p in log_file.name.split(JOB_ID_PLACEHOLDER)]
    return str(Path(sp.output_path(str(log_file.parent))) / JOB_ID_PLACEHOLDER.join(parts))


def _command_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items()
            if not k.startswith(_DROPPED_ENV_PREFIXES) or k in _KEPT_SLURM_ENV}


def _needed(queue: Sequence[sp.QueueJob], job: sp.QueueJob | None) -> tuple[sp.QueueJob, ...]:
    """The queue's entries of the jobs ``job`` needs that did not succeed (to name them)."""
    failed = set(sp.failed_dependencies(job.dependency if job else None))
    if not failed or job is None:
        return ()
    return tuple(q for q in queue if q.job_id in failed and q.cluster == job.cluster)


def _final(job: sp.QueueJob | None) -> bool:
    return job is not None and sp.map_state(job.state) in sp.FINAL_STATES


def _held(job: sp.QueueJob | None) -> bool:
    return (job is not None and sp.map_state(job.state) is BackendState.PENDING
            and (job.reason or "").startswith("JobHeld"))


def _maybe_oom(status: JobStatus) -> bool:
    """Killed by SIGKILL without the MaxRSS evidence: the log may say why."""
    return status.state is BackendState.FAILED and status.exit_code == 128 + 9


def _log_says_oom(path: Path) -> bool:
    """The job's output is the job's: read without following links, never blocking on a
    FIFO, time-limited (build.hostile)."""
    try:
        end = hostile.tail_bytes(path.parent, path.name, 1 << 30, max_bytes=LOG_PROBE_BYTES)
    except hostile.Refused:
        return False
    return sp.OOM_LOG_LINE.encode() in end


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
