"""Pure parts of the Slurm backend: sbatch arguments in, squeue/sacct/sinfo text out.

No subprocess, no clock, no files: everything here is a function of its arguments, so it
is tested against outputs captured from a real Slurm 22.05 (see docs/slurm.md for the
shapes and their surprises) without a cluster.

Backend ids have the form ``<slurm job id>[;<cluster>]/<layerbot job id>``: the first part
is what ``sbatch --parsable`` prints, the suffix lets :func:`job_status` check that a Slurm
id still names *our* job. slurmctld killed within seconds of a submission can lose the job
and hand its id to the next submission (docs/slurm.md §6); two layerbot jobs then share a
Slurm id, and only the suffix tells them apart.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from layerbot.backends.base import BackendState, JobStatus, Partition, dependency_failed_reason
from layerbot.core.slurm_options import RESERVED, normalize_key

# --- names and tags ------------------------------------------------------------------------

TAG_PREFIX = "layerbot"


def job_tag(instance: str, job_id: int) -> str:
    """The ``--comment`` of every job: which bot instance and which of its jobs."""
    return f"{TAG_PREFIX}:{instance}:{job_id}"


def job_name(instance: str, job_id: int) -> str:
    """The ``--job-name``: also a tag, since sites may not store comments in accounting."""
    return f"{TAG_PREFIX}-{instance}-{job_id}"


def names_job(name: str, comment: str, job_id: int) -> bool:
    """Whether a Slurm job's name or comment says it is layerbot's job ``job_id``."""
    if comment.startswith(TAG_PREFIX + ":"):
        return comment.rsplit(":", 1)[-1] == str(job_id)
    return name.startswith(TAG_PREFIX + "-") and name.rsplit("-", 1)[-1] == str(job_id)


@dataclass(frozen=True)
class SlurmId:
    job: str  # Slurm's job id, as text ("123")
    cluster: str | None = None
    layerbot_job: int | None = None  # None: a bare id, not checked against the tag

    def __str__(self) -> str:
        text = self.job + (f";{self.cluster}" if self.cluster else "")
        return text + (f"/{self.layerbot_job}" if self.layerbot_job is not None else "")


def parse_parsable(stdout: str) -> tuple[str, str | None]:
    """``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER`` (with --clusters)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job, _, cluster = line.partition(";")
    if not job.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job, cluster or None


def parse_backend_id(backend_id: str) -> SlurmId | None:
    """The parts of a backend id (None if it is not one of ours)."""
    head, _, own = backend_id.partition("/")
    job, _, cluster = head.partition(";")
    if not job.isdigit() or (own and not own.isdigit()):
        return None
    return SlurmId(job, cluster or None, int(own) if own else None)


# --- sbatch arguments ----------------------------------------------------------------------

#: ALIASES (short names such as ``cpus``) and RESERVED (options layerbot sets itself: a
#: configuration that set them would break the tags, the log location, the environment or
#: the hand-over) live in core/slurm_options.py, which the configuration checks at load.


class OptionError(ValueError):
    """An option the backend cannot pass to sbatch."""


def merge_options(
    defaults: Mapping[str, str],
    node_options: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
    overridable: Sequence[str] = (),
) -> dict[str, str]:
    """Site defaults, then the node type's options, then a command's overrides.

    Only keys listed in ``overridable`` may be overridden by a command; others raise
    :class:`OptionError` (the message is shown on the PR).
    """
    merged: dict[str, str] = {}
    for layer in (defaults, node_options):
        merged.update({normalize_key(k): str(v) for k, v in layer.items()})
    allowed = {normalize_key(k) for k in overridable}
    for key, value in (overrides or {}).items():
        name = normalize_key(key)
        if name not in allowed:
            shown = ", ".join(sorted(allowed)) or "none"
            raise OptionError(f"the option {key!r} may not be overridden (allowed: {shown})")
        merged[name] = str(value)
    return merged


def check_options(options: Mapping[str, str]) -> None:
    for key in options:
        name = normalize_key(key)
        if name in RESERVED:
            raise OptionError(f"the sbatch option --{name} is set by layerbot: "
                              f"{RESERVED[name]} (backend.slurm.defaults, node types)")
        if not re.fullmatch(r"[a-z][a-z0-9-]+", name):
            raise OptionError(f"{key!r} is not an sbatch long option name "
                              "(write e.g. partition, not p)")


def option_args(options: Mapping[str, str]) -> list[str]:
    """``--key=value`` for each option; ``""``/``"true"`` make a flag, ``"false"`` omits it."""
    check_options(options)
    args: list[str] = []
    for key, value in options.items():
        name = normalize_key(key)
        if value.lower() == "false":
            continue
        args.append(f"--{name}" if value in ("", "true") else f"--{name}={value}")
    return args


def dependency_args(after_ok: Sequence[str]) -> list[str]:
    """sbatch's options for ``SubmitRequest.after_ok``: ``--dependency=afterok:<id>:<id>``
    and ``--kill-on-invalid-dep=yes``, so Slurm cancels the job (reason
    DependencyNeverSatisfied) instead of keeping it pending forever when one of them
    does not succeed. Empty without dependencies."""
    if not after_ok:
        return []
    ids: list[str] = []
    for backend_id in after_ok:
        sid = parse_backend_id(backend_id)
        if sid is None:
            raise OptionError(f"the job it needs, {backend_id!r}, is not a Slurm job")
        if sid.job not in ids:
            ids.append(sid.job)
    return [f"--dependency=afterok:{':'.join(ids)}", "--kill-on-invalid-dep=yes"]


#: squeue's dependency text, one ``afterok:<id>[_<task>][+<delay>](<status>)`` per job.
_DEPENDENCY = re.compile(r"afterok:(\d+)[^(,?:]*\((\w+)\)")


def failed_dependencies(text: str | None) -> list[str]:
    """Slurm ids of the jobs an ``afterok`` dependency waits for that did not succeed
    (squeue shows ``afterok:1132(failed)``)."""
    return [job for job, status in _DEPENDENCY.findall(text or "") if status == "failed"]


def time_minutes(seconds: int) -> str:
    """Slurm limits are whole minutes; round up so a job never gets less than asked."""
    return str(max(1, math.ceil(seconds / 60)))


def output_path(path: str) -> str:
    """sbatch expands %j and friends in --output; a literal % is written %%."""
    return path.replace("%", "%%")


def batch_script(script: str, env: Mapping[str, str], tag: str) -> str:
    """The batch script sbatch gets on stdin: runs ``script`` with exactly ``env``.

    Whatever else reaches the job (the site's login environment, which Slurm loads for
    some users, e.g. BASH_ENV from Lmod) is dropped; only Slurm's own SLURM_* variables
    are kept, since build scripts need SLURM_JOB_ID and friends. /bin/sh, because bash
    would source $BASH_ENV before the first line runs.
    """
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise OptionError(f"{name!r} is not a valid environment variable name")
        if name.startswith(("SLURM_", "SBATCH_")):
            raise OptionError(f"the job environment may not set {name}: Slurm reads it")
    if "=" in script or "\n" in script:
        raise OptionError(f"the job script path {script!r} may not contain '=' or a newline")
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return "\n".join([
        "#!/bin/sh",
        f"# {tag}: generated by layerbot. Runs the job script with exactly the job's",
        "# environment plus Slurm's own SLURM_* variables; nothing else.",
        "PATH=/usr/bin:/bin",
        "IFS='",
        "'",
        "set -f",
        "set -- $(env | grep -E '^SLURMD?_[A-Za-z0-9_]*=')",
        "unset IFS",
        "set +f",
        f"exec /usr/bin/env -i \"$@\" {assignments} {shlex.quote(script)}".replace("  ", " "),
        "",
    ])


# --- errors --------------------------------------------------------------------------------

#: stderr fragments that mean "the scheduler cannot be asked now" rather than "no".
_UNAVAILABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "connect failure",
    "zero bytes were transmitted",
    "communication connection failure",
    "slurmctld is not responding",
    "slurm backup controller in standby mode",
    "transport endpoint is not connected",
    "unable to connect to database",
    "unexpected message received",  # scontrol release with slurmctld down (22.05)
    "can't be reached now",  # -M CLUSTER whose slurmctld is down
    # slurmctld just restarted and has not its job indexes from slurmdbd yet (measured:
    # scontrol release, ~10 s after a restart); it asks to be asked again
    "try again in a bit",

    "slurmdbd: connection",
    "munge",  # munged down or key wrong: nothing can be asked
)


def is_unavailable(stderr: str) -> bool:
    text = stderr.lower()
    return any(fragment in text for fragment in _UNAVAILABLE)


def accounting_disabled(stderr: str) -> bool:
    return "accounting storage is disabled" in stderr.lower()


def clean_error(stderr: str) -> str:
    """Slurm's own message, without the ``sbatch: error:`` prefixes, on one line."""
    lines = []
    for raw in stderr.splitlines():
        line = re.sub(r"^\s*(sbatch|squeue|sacct|scancel|scontrol|sinfo)(: error)?:\s*", "",
                      raw).strip()
        line = re.sub(r"^error:\s*", "", line)
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines)[:1000] or "(no message)"


# --- states --------------------------------------------------------------------------------

_STATES: dict[str, BackendState] = {
    "PENDING": BackendState.PENDING,
    "REQUEUED": BackendState.PENDING,
    "REQUEUE_HOLD": BackendState.PENDING,
    "REQUEUE_FED": BackendState.PENDING,
    "CONFIGURING": BackendState.PENDING,
    "RESV_DEL_HOLD": BackendState.PENDING,
    "SPECIAL_EXIT": BackendState.PENDING,  # held after a special exit; may run again
    "RUNNING": BackendState.RUNNING,
    # Processes are being killed (time limit, scancel) for up to KillWait; the final state
    # follows, so the job is still running for us.
    "COMPLETING": BackendState.RUNNING,
    "SUSPENDED": BackendState.RUNNING,
    "STOPPED": BackendState.RUNNING,
    "SIGNALING": BackendState.RUNNING,
    "STAGE_OUT": BackendState.RUNNING,
    "RESIZING": BackendState.RUNNING,
    "COMPLETED": BackendState.COMPLETED,
    "FAILED": BackendState.FAILED,
    "CANCELLED": BackendState.CANCELLED,
    "REVOKED": BackendState.CANCELLED,  # federation: it ran on a sibling cluster instead
    "TIMEOUT": BackendState.TIMEOUT,
    "DEADLINE": BackendState.TIMEOUT,
    "OUT_OF_MEMORY": BackendState.OUT_OF_MEMORY,
    "NODE_FAIL": BackendState.NODE_FAIL,
    "BOOT_FAIL": BackendState.NODE_FAIL,
    "PREEMPTED": BackendState.PREEMPTED,
}

FINAL_STATES = frozenset({
    BackendState.COMPLETED, BackendState.FAILED, BackendState.CANCELLED, BackendState.TIMEOUT,
    BackendState.OUT_OF_MEMORY, BackendState.NODE_FAIL, BackendState.PREEMPTED,
})


def map_state(text: str) -> BackendState | None:
    """Slurm's state word (``CANCELLED by 0`` included) as a BackendState; None if unknown."""
    word = text.split(" ", 1)[0].split("+", 1)[0].strip().upper()
    return _STATES.get(word)


def _state_word(value: Any) -> str:
    """squeue's job_state: a string in 22.05, a list of flags from 23.02 on."""
    if isinstance(value, list):
        words = [str(v) for v in value]
        base = [w for w in words if w in _STATES]
        return base[0] if base else (words[0] if words else "")
    return str(value or "")


# --- sizes and times -----------------------------------------------------------------------

_UNITS = {"": 1024**2, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str, default_unit: str = "K") -> int | None:
    """Slurm memory sizes (``168388K``, ``100M``, ``2G``, ``4000Mn``) in bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)[nc]?\s*", text or "", re.IGNORECASE)
    if not m:
        return None
    unit = m.group(2).upper() or default_unit
    return int(float(m.group(1)) * _UNITS[unit])


def _positive(value: Any) -> int | None:
    """A count or epoch time from squeue: an int in 22.05, ``{"set", "number"}`` from
    23.02 on; 0 and unset are None (a pending job's start_time is 0)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _time(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def _minutes_text(minutes: int | None) -> str:
    if minutes is None:
        return "its time limit"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes % 60 else f"{minutes // 60} h"


def parse_limit_minutes(text: str) -> int | None:
    """Slurm limits in minutes: ``60``, ``1:30`` (min:s), ``01:00:00``, ``1-00:00:00``,
    ``2-12`` (days-hours); None for ``UNLIMITED``, ``Partition_Limit`` and the like."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        return None
    days = int(m.group(1) or 0)
    nums = [int(x) for x in m.groups()[1:] if x is not None]
    if m.group(1) is not None:
        hours, minutes, seconds = (*nums, 0, 0)[:3]
    elif len(nums) == 3:
        hours, minutes, seconds = nums
    else:
        hours, minutes, seconds = 0, nums[0], nums[1] if len(nums) == 2 else 0
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- squeue --json -------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueJob:
    """One job from ``squeue --json`` (openapi v0.0.38; later versions tolerated)."""

    job_id: str
    cluster: str | None
    name: str
    comment: str
    state: str  # Slurm's word
    reason: str | None
    wait_status: int | None  # raw: exit 3 -> 768, SIGKILL -> 9
    submit: int | None
    start: int | None
    end: int | None
    cpus: int | None
    node: str | None
    time_limit_minutes: int | None
    stdout: str | None
    memory_bytes: int | None
    #: What the job waits for, as squeue shows it (``afterok:1132(unfulfilled)``).
    dependency: str | None = None


def parse_squeue_json(text: str) -> list[QueueJob]:
    """Every job in ``squeue --json`` output (which ignores filters in 22.05).

    With ``-M a,b`` the output may be one document per cluster, each after a
    ``CLUSTER: name`` line; the documents are read one after the other.

    Raises ValueError when a document carries errors: with slurmctld down, 22.05 exits 0
    and prints ``"jobs": []`` with ``"errors": [{"description": "Failed while looking
    for jobs", ...}]`` -- read as "no jobs", every job would look lost.
    """
    decoder = json.JSONDecoder()
    jobs: list[QueueJob] = []
    pos, found = 0, False
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        data, pos = decoder.raw_decode(text, start)
        found = True
        if data.get("errors"):
            raise ValueError("; ".join(_describe_error(e) for e in data["errors"]))
        jobs.extend(_queue_job(j) for j in data.get("jobs") or [])
    if not found:
        raise ValueError(f"no JSON document in squeue's output: {text[:200]!r}")
    return jobs


def _describe_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    parts = [error.get("source"), error.get("description"), error.get("error")]
    return ": ".join(str(p) for p in parts if p)


def _queue_job(j: Mapping[str, Any]) -> QueueJob:
    reason = str(j.get("state_reason") or "")
    node = str(j.get("nodes") or j.get("batch_host") or "") or None
    stdout = str(j.get("standard_output") or "") or None
    return QueueJob(
        job_id=str(j.get("job_id")),
        cluster=str(j.get("cluster") or "") or None,
        name=str(j.get("name") or ""),
        comment=_comment(j.get("comment")),
        state=_state_word(j.get("job_state")),
        reason=None if reason in ("", "None") else reason,
        wait_status=_wait_status(j.get("exit_code")),
        submit=_positive(j.get("submit_time")),
        start=_positive(j.get("start_time")),
        end=_positive(j.get("end_time")),
        cpus=_positive(j.get("cpus")),
        node=node,
        time_limit_minutes=_positive(j.get("time_limit")),
        stdout=stdout.replace("%%", "%") if stdout else None,
        memory_bytes=_tres_mem(str(j.get("tres_req_str") or "")),
        dependency=str(j.get("dependency") or "") or None,
    )


def _comment(value: Any) -> str:
    if isinstance(value, dict):  # sacct --json and later squeue: {"job": ..., ...}
        value = value.get("job")
    return str(value or "")


def _wait_status(value: Any) -> int | None:
    """The raw wait status (22.05: an int; later: {"return_code", "signal"} dicts)."""
    if isinstance(value, dict):
        sig = (value.get("signal") or {}).get("signal_id") if value.get("signal") else None
        if sig:
            return int(_positive(sig) or 0) & 0x7F
        code = _positive(value.get("return_code")) or 0
        return code << 8
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tres_mem(tres: str) -> int | None:
    for part in tres.split(","):
        key, _, value = part.partition("=")
        if key == "mem":
            return parse_size(value, default_unit="M")
    return None


# --- squeue/sacct --name (find) -----------------------------------------------------------

#: Plain squeue for find: id, name, submit time (with SLURM_TIME_FORMAT=%s), the job's user
#: and working directory (the proof that it is the bot's job), comment last.
SQUEUE_TAG_FORMAT = "%i|%j|%V|%u|%Z|%k"
#: The same facts from accounting, for jobs that already left the queue.
SACCT_TAG_FIELDS = ("JobIDRaw", "Cluster", "JobName", "Submit", "User", "WorkDir", "State",
                    "Comment")


@dataclass(frozen=True)
class TaggedJob:
    """A job found by its name: enough to tell whether it is ours and which is newest."""

    job_id: str
    cluster: str | None
    name: str
    comment: str
    submit: int | None
    user: str = ""
    work_dir: str = ""
    state: str | None = None  # accounting's word; None from squeue


def parse_squeue_tagged(text: str) -> list[TaggedJob]:
    """``squeue -t all --name=... -o SQUEUE_TAG_FORMAT`` (``-M`` adds ``CLUSTER:`` lines;
    the column header is skipped rather than hidden with -h, which would hide those)."""
    jobs: list[TaggedJob] = []
    cluster = None
    for line in text.splitlines():
        if line.startswith("CLUSTER:"):
            cluster = line.split(":", 1)[1].strip()
            continue
        values = line.strip().split("|", 5)
        if len(values) != 6 or not values[0].isdigit():  # the header, or noise
            continue
        job_id, name, submit, user, work_dir, comment = values
        jobs.append(TaggedJob(job_id, cluster, name, "" if comment == "(null)" else comment,
                              int(submit) if submit.isdigit() else None, user, work_dir))
    return jobs


def parse_sacct_tagged(text: str) -> list[TaggedJob]:
    """Job lines (not steps) of ``sacct -P -n -X -o SACCT_TAG_FIELDS``."""
    jobs: list[TaggedJob] = []
    for line in text.splitlines():
        values = line.split("|", len(SACCT_TAG_FIELDS) - 1)
        if len(values) != len(SACCT_TAG_FIELDS) or not values[0].isdigit():
            continue
        job_id, cluster, name, submit, user, work_dir, state, comment = values
        jobs.append(TaggedJob(job_id, cluster or None, name, comment,
                              int(submit) if submit.isdigit() else None, user, work_dir, state))
    return jobs


def proves_job(job: TaggedJob, instance: str, job_id: int, user: str, job_dir: str) -> bool:
    """Whether ``job`` is the bot's submission of ``job_id``: names are self-asserted (any
    user may choose them), so it must also run as ``user`` in ``job_dir``, the directory the
    bot created for it with a name nobody could predict. Any ``|`` inside a field shifts
    the columns, which can only make this false."""
    return (job.name == job_name(instance, job_id)
            and job.comment in (job_tag(instance, job_id), "")  # some sites drop comments
            and job.user == user
            and os.path.normpath(job.work_dir) == os.path.normpath(job_dir))


# --- sacct -P ------------------------------------------------------------------------------

#: The fields asked of sacct; Comment last, since it is the one that may hold a ``|``.
SACCT_FIELDS = ("JobIDRaw", "Cluster", "JobName", "State", "ExitCode", "ElapsedRaw",
                "AllocCPUS", "ReqMem", "MaxRSS", "NodeList", "Reason", "Submit", "Start",
                "End", "Timelimit", "Comment")

#: Every state sacct accepts: with -S, sacct lists only jobs that were eligible in the
#: window, which a held job cancelled before its release never was (measured: it is
#: missing without -s).
SACCT_ALL_STATES = "PD,R,S,CD,CA,F,TO,OOM,NF,PR,BF,DL,RQ,RS,RV"  # SE: "not accounted"


@dataclass(frozen=True)
class AcctJob:
    """One incarnation of a job in ``sacct -P -D``, with what its steps add."""

    job_id: str
    cluster: str | None
    name: str
    comment: str
    state: str  # e.g. "CANCELLED by 0"
    exit_code: int | None
    exit_signal: int | None
    elapsed: int | None
    cpus: int | None
    req_mem_bytes: int | None
    max_rss_bytes: int | None
    node: str | None
    reason: str | None
    submit: int | None
    start: int | None
    end: int | None
    time_limit_minutes: int | None


def sacct_args(ids: Iterable[str]) -> list[str]:
    return ["-P", "-n", "-D", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(ids)]


def parse_sacct(text: str) -> list[AcctJob]:
    """Job lines of ``sacct -P -n -D -o SACCT_FIELDS`` (with SLURM_TIME_FORMAT=%s), in
    order; each step line (``ID.batch``, ``ID.0``) adds its MaxRSS to the job before it."""
    jobs: list[AcctJob] = []
    for line in text.splitlines():
        values = line.split("|", len(SACCT_FIELDS) - 1)
        if len(values) != len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, values, strict=True))
        raw_id = row["JobIDRaw"]
        base, dot, _step = raw_id.partition(".")
        if dot:
            if jobs and jobs[-1].job_id == base:
                jobs[-1] = _with_step(jobs[-1], row)
            continue
        jobs.append(_acct_job(row))
    return jobs


def _acct_job(row: Mapping[str, str]) -> AcctJob:
    code, _, sig = row["ExitCode"].partition(":")
    reason = row["Reason"].strip()
    node = row["NodeList"].strip()
    return AcctJob(
        job_id=row["JobIDRaw"],
        cluster=row["Cluster"] or None,
        name=row["JobName"],
        comment=row["Comment"],
        state=row["State"],
        exit_code=int(code) if code.isdigit() else None,
        exit_signal=int(sig) if sig.isdigit() else None,
        elapsed=int(row["ElapsedRaw"]) if row["ElapsedRaw"].isdigit() else None,
        cpus=int(row["AllocCPUS"]) if row["AllocCPUS"].isdigit() else None,
        req_mem_bytes=parse_size(row["ReqMem"], default_unit="M"),
        max_rss_bytes=parse_size(row["MaxRSS"]) if row["MaxRSS"] else None,
        node=None if node in ("", "None assigned") else node,
        reason=None if reason in ("", "None") else reason,
        submit=_positive(row["Submit"]) if row["Submit"].isdigit() else None,
        start=_positive(row["Start"]) if row["Start"].isdigit() else None,
        end=_positive(row["End"]) if row["End"].isdigit() else None,
        time_limit_minutes=parse_limit_minutes(row["Timelimit"]),
    )


def _with_step(job: AcctJob, row: Mapping[str, str]) -> AcctJob:
    rss = parse_size(row["MaxRSS"]) if row["MaxRSS"] else None
    if rss is None or (job.max_rss_bytes is not None and job.max_rss_bytes >= rss):
        return job
    return replace(job, max_rss_bytes=rss)


# --- from what Slurm says to a JobStatus ---------------------------------------------------

#: How long after a job ended in squeue to wait for its final line in sacct (measured
#: 0.1-0.3 s here) before reporting it without MaxRSS.
SACCT_GRACE_SECONDS = 30

#: The job's stderr line when JobAcctGatherParams=OverMemoryKill killed it (no cgroups).
OOM_LOG_LINE = "Exceeded job memory limit"


@dataclass(frozen=True)
class Observed:
    """What one poll learned about one job (None: that source said nothing)."""

    queued: QueueJob | None = None
    acct: AcctJob | None = None
    #: False when sacct could not be asked (or failed): its silence means nothing.
    acct_answered: bool = True
    accounting_disabled: bool = False
    log_says_oom: bool = False
    user_name: Callable[[int], str | None] = field(default=lambda uid: None)
    #: The queue's entries for the jobs this one depends on (to name the one that failed).
    needed: tuple[QueueJob, ...] = ()


def pick_queued(candidates: Iterable[QueueJob], sid: SlurmId) -> QueueJob | None:
    """The squeue entry for ``sid``: same id (and cluster), and still our job."""
    for job in candidates:
        if job.job_id != sid.job or (sid.cluster and job.cluster and job.cluster != sid.cluster):
            continue
        if sid.layerbot_job is None or names_job(job.name, job.comment, sid.layerbot_job):
            return job
    return None


def pick_acct(candidates: Iterable[AcctJob], sid: SlurmId) -> AcctJob | None:
    """The latest sacct incarnation of ``sid`` that is still our job."""
    found = None
    for job in candidates:
        if job.job_id != sid.job or (sid.cluster and job.cluster and job.cluster != sid.cluster):
            continue
        if sid.layerbot_job is None or names_job(job.name, job.comment, sid.layerbot_job):
            found = job
    return found


def job_status(backend_id: str, seen: Observed, now: float) -> JobStatus | None:
    """The status to report for one job, or None to ask again next cycle."""
    sid = parse_backend_id(backend_id)
    if sid is None:
        return JobStatus(backend_id, BackendState.UNKNOWN, reason="not a Slurm backend id")
    queued, acct = seen.queued, seen.acct
    if queued is not None:
        state = map_state(queued.state)
        if state is None:  # a state this version does not know: no news rather than a guess
            return JobStatus(backend_id, BackendState.PENDING, reason=f"Slurm state {queued.state}")
        if state not in FINAL_STATES:
            return _active_status(backend_id, state, queued, now)
        if acct is not None and map_state(acct.state) in FINAL_STATES:
            return _final_status(backend_id, seen)
        if queued.end and now - queued.end < SACCT_GRACE_SECONDS:
            return None  # accounting lags squeue by a moment: wait for MaxRSS and the uid
        return _final_status(backend_id, replace(seen, acct=None))
    if acct is not None:
        if map_state(acct.state) in FINAL_STATES:
            return _final_status(backend_id, seen)
        return JobStatus(backend_id, BackendState.UNKNOWN, reason=(
            f"slurmctld lost job {sid.job} (gone from the queue, still {acct.state} in "
            "accounting; was slurmctld restarted?)"))
    if not seen.acct_answered and not seen.accounting_disabled:
        return None  # sacct failed: no news
    where = "the queue" if seen.accounting_disabled else "the queue or accounting"
    return JobStatus(backend_id, BackendState.UNKNOWN,
                     reason=f"Slurm has no job {sid.job} of this bot in {where}")


def _active_status(backend_id: str, state: BackendState, q: QueueJob, now: float) -> JobStatus:
    running = state is BackendState.RUNNING
    elapsed = max(0.0, now - q.start) if running and q.start else None
    reason = None if running else q.reason
    if reason is None and not running and "(unfulfilled)" in (q.dependency or ""):
        # Just released: the scheduler has not looked at it yet (reason None; measured),
        # but it can only wait for the jobs it needs.
        reason = WAITING_FOR_DEPENDENCY
    return JobStatus(
        backend_id, state, reason=reason,
        started_at=_time(q.start) if running else None, elapsed_seconds=elapsed,
        cpus=q.cpus if running else None, node=q.node if running else None,
    )


def _final_status(backend_id: str, seen: Observed) -> JobStatus:
    q, a = seen.queued, seen.acct
    word = a.state if a is not None else (q.state if q is not None else "")
    state = map_state(word) or BackendState.UNKNOWN
    code, sig = _exit(q, a)
    start = (a.start if a else None) or (q.start if q else None)
    end = (a.end if a else None) or (q.end if q else None)
    elapsed: float | None = float(a.elapsed) if a and a.elapsed is not None else None
    if elapsed is None and start and end:
        elapsed = float(max(0, end - start))
    if state is BackendState.FAILED and _out_of_memory(sig, q, a, seen.log_says_oom):
        state = BackendState.OUT_OF_MEMORY
    limit = (a.time_limit_minutes if a else None) or (q.time_limit_minutes if q else None)
    return JobStatus(
        backend_id, state,
        exit_code=(128 + sig) if sig else code,
        reason=_final_reason(backend_id, state, word, code, sig, q, a, limit, seen),
        started_at=_time(start), ended_at=_time(end), elapsed_seconds=elapsed,
        cpus=(a.cpus if a and a.cpus else None) or (q.cpus if q else None),
        max_rss_bytes=a.max_rss_bytes if a else None,
        node=(a.node if a else None) or (q.node if q else None),
    )


def _exit(q: QueueJob | None, a: AcctJob | None) -> tuple[int | None, int]:
    """(exit code, signal): sacct -P keeps both (sacct --json loses codes in 22.05)."""
    if a is not None and a.exit_code is not None:
        return a.exit_code, a.exit_signal or 0
    if q is not None and q.wait_status is not None:
        return q.wait_status >> 8, q.wait_status & 0x7F
    return None, 0


def _out_of_memory(sig: int, q: QueueJob | None, a: AcctJob | None, log_says: bool) -> bool:
    """FAILED by SIGKILL with MaxRSS at the limit (or slurmstepd's own line in the log)
    is how an OOM kill looks without cgroups (docs/slurm.md §5)."""
    if sig != signal.SIGKILL:
        return False
    if log_says:
        return True
    limit = (a.req_mem_bytes if a else None) or (q.memory_bytes if q else None)
    rss = a.max_rss_bytes if a else None
    return bool(limit and rss and rss >= 0.9 * limit)


def _final_reason(backend_id: str, state: BackendState, word: str, code: int | None, sig: int,
                  q: QueueJob | None, a: AcctJob | None, limit: int | None,
                  seen: Observed) -> str | None:
    """Slurm's side of the story. For the states the reconciler words itself ("hit its
    time limit", "ran out of memory") this is the detail it adds in parentheses."""
    slurm_reason = (q.reason if q else None) or (a.reason if a else None)
    if state is BackendState.COMPLETED:
        return None
    if state is BackendState.OUT_OF_MEMORY:
        return _oom_reason(q, a)
    if state is BackendState.TIMEOUT:
        return f"{_minutes_text(limit)}, Slurm: {word.split()[0]}"
    if state is BackendState.CANCELLED:
        if slurm_reason == NEVER_SATISFIED:
            return _dependency_reason(backend_id, q, seen.needed)
        return _cancel_reason(word, slurm_reason, seen)
    if state is BackendState.FAILED:
        what = f"killed by signal {sig} ({_signal_name(sig)})" if sig else f"exit code {code}"
        return what + (f" (Slurm: {slurm_reason})" if slurm_reason else "")
    return f"Slurm: {word}" + (f", {slurm_reason}" if slurm_reason else "")


def _oom_reason(q: QueueJob | None, a: AcctJob | None) -> str:
    limit = (a.req_mem_bytes if a else None) or (q.memory_bytes if q else None)
    rss = a.max_rss_bytes if a else None
    if rss and limit:
        return f"MaxRSS {_mib(rss)} over the {_mib(limit)} memory limit"
    return "Slurm: OUT_OF_MEMORY" if a and a.state.startswith("OUT_OF") else OOM_LOG_LINE


#: Slurm's reason for a pending job that waits for the jobs it needs.
WAITING_FOR_DEPENDENCY = "Dependency"
#: Slurm's reason for a job it cancelled because a dependency can no longer be satisfied
#: (with --kill-on-invalid-dep=yes): state CANCELLED, not "by <uid>".
NEVER_SATISFIED = "DependencyNeverSatisfied"


def _dependency_reason(backend_id: str, q: QueueJob | None, needed: Sequence[QueueJob]) -> str:
    """Which job it needed did not succeed, named by its backend id when the queue still
    knows it as one of ours (on the dependent's cluster: Slurm dependencies do not cross
    clusters), with its final state."""
    failed = failed_dependencies(q.dependency if q else None)
    if not failed:
        return f"not started: a job it needs did not succeed (Slurm: {NEVER_SATISFIED})"
    job = failed[0]
    entry = next((n for n in needed if n.job_id == job), None)
    if entry is None:
        return dependency_failed_reason(job, "Slurm: failed")
    own = _tagged_job(entry)
    sid = parse_backend_id(backend_id)
    needed_id = str(SlurmId(job, sid.cluster if sid else None, own))
    return dependency_failed_reason(needed_id, map_state(entry.state) or entry.state)


def _tagged_job(job: QueueJob) -> int | None:
    """The layerbot job id in a Slurm job's tag (comment, else name), if it has one."""
    for text, sep in ((job.comment, ":"), (job.name, "-")):
        if text.startswith(TAG_PREFIX + sep):
            tail = text.rsplit(sep, 1)[-1]
            if tail.isdigit():
                return int(tail)
    return None


def _cancel_reason(word: str, slurm_reason: str | None, seen: Observed) -> str:
    m = re.search(r"by (\d+)", word)
    if m:
        uid = int(m.group(1))
        user = seen.user_name(uid)
        return f"by {user}, uid {uid}" if user else f"by uid {uid}"
    return f"Slurm: {slurm_reason}" if slurm_reason else "Slurm: CANCELLED"


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB" if n < 10 * 1024**3 else f"{n / 1024**3:.1f} GiB"


# --- sinfo ---------------------------------------------------------------------------------

#: ``%P`` marks the default partition with ``*``; ``%F`` is nodes A/I/O/T, ``%C`` CPUs.
SINFO_FORMAT = "%P|%a|%l|%F|%C|%f"


def parse_sinfo(text: str) -> tuple[Partition, ...]:
    """Partitions from ``sinfo -o SINFO_FORMAT``, one line per group of alike nodes.

    ``-M`` adds a ``CLUSTER: name`` line before each cluster's lines (which ``-h`` would
    hide, so the column header is skipped instead); their partitions are named
    ``cluster:partition``.
    """
    parts: dict[str, dict[str, Any]] = {}
    cluster = None
    for line in text.splitlines():
        if line.startswith("CLUSTER:"):
            cluster = line.split(":", 1)[1].strip()
            continue
        values = line.strip().split("|")
        if len(values) != 6 or values[0] == "PARTITION":  # the column header
            continue
        raw, avail, limit, nodes, cpus, features = values
        name = raw.rstrip("*")
        key = f"{cluster}:{name}" if cluster else name
        entry = parts.setdefault(key, {"state": avail, "default": raw.endswith("*"),
                                       "max_time": limit, "nodes": [0, 0, 0], "cpus": [0, 0],
                                       "features": []})
        a, i, o, _t = (_int_or_zero(x) for x in nodes.split("/"))
        _ca, ci, _co, ct = (_int_or_zero(x) for x in cpus.split("/"))
        entry["nodes"] = [entry["nodes"][0] + i, entry["nodes"][1] + a, entry["nodes"][2] + o]
        entry["cpus"] = [entry["cpus"][0] + ct, entry["cpus"][1] + ci]
        for feature in features.split(","):
            if feature and feature != "(null)" and feature not in entry["features"]:
                entry["features"].append(feature)
    return tuple(
        Partition(name=key, state=v["state"], nodes_idle=v["nodes"][0],
                  nodes_allocated=v["nodes"][1], nodes_down=v["nodes"][2],
                  cpus_total=v["cpus"][0], cpus_idle=v["cpus"][1],
                  features=tuple(v["features"]), default=v["default"],
                  max_time=None if v["max_time"] in ("infinite", "UNLIMITED") else v["max_time"])
        for key, v in parts.items()
    )


def _int_or_zero(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def clusters_of(configured: Sequence[str], options: Iterable[Mapping[str, str]]) -> list[str]:
    """The configured clusters plus any a node type sends jobs to (``cluster = "b"``)."""
    names = list(configured)
    for opts in options:
        for key, value in opts.items():
            if normalize_key(key) == "clusters":
                names += [c.strip() for c in value.split(",") if c.strip() not in names]
    return [n for n in names if n]


def partitions_of(options: Iterable[Mapping[str, str]]) -> set[str]:
    """Every partition named in option sets (``partition = "a,b"`` names two)."""
    names: set[str] = set()
    for opts in options:
        for key, value in opts.items():
            if normalize_key(key) == "partition":
                names.update(p.strip() for p in value.split(",") if p.strip())
    return names
