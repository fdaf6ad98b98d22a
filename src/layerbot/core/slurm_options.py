"""sbatch options layerbot sets itself, and what a site should do instead of setting them.

One table, read in two places: the configuration refuses these options when it is loaded
(so ``layerbot doctor`` and ``serve`` say so at once, naming the key), and the Slurm
backend refuses them again when it builds an sbatch line (a last guard for options that
reach it another way). Before, a site learnt of a reserved option only when a PR's job
failed to submit.

Pure: no I/O; imported by ``config.py``, so it must not import anything of layerbot's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["ALIASES", "RESERVED", "normalize_key", "option_problems"]

#: Short names a node type may use for common sbatch options (layerbot's local backend
#: reads ``cpus`` too, so one node type works on both).
ALIASES = {"cpus": "cpus-per-task", "memory": "mem", "cluster": "clusters"}

_TAGS = ("layerbot tags every job with it (layerbot-<instance>-<job id>) to find, poll and "
         "cancel only its own jobs; remove it (several instances on one cluster are told "
         "apart by instance.name)")
_OUTPUT = ("layerbot writes the job's output into the job directory itself, where EESSI's "
           "check scripts look for it (slurm-<JOBID>.out); remove it")
_ENV = ("the job's environment is exactly build.env plus the variables named in "
        "build.env_allowlist; set those instead")
_HANDOVER = ("layerbot holds each job until it is recorded; choose how with "
             "backend.slurm.handover (hold_release or delayed_begin) instead")
_INTERNAL = "layerbot needs it to submit and track jobs; remove it"
_DEPENDENCY = ("layerbot sets it from the job's dependencies (the earlier steps of a "
               "pipeline), which only layerbot decides; remove it")

#: Option (long name, without dashes) -> why layerbot sets it and what to do instead.
RESERVED: dict[str, str] = {
    "job-name": _TAGS,
    "comment": _TAGS,
    "output": _OUTPUT,
    "error": _OUTPUT,
    "input": "a build job reads no input; remove it",
    "export": _ENV,
    "export-file": _ENV,
    "get-user-env": _ENV,
    "hold": _HANDOVER,
    "begin": _HANDOVER,
    "parsable": _INTERNAL,
    "wait": _INTERNAL,
    "test-only": _INTERNAL,
    "wrap": "the job runs build.job_script; set that instead",
    "array": "layerbot submits one Slurm job per layerbot job; remove it",
    "dependency": _DEPENDENCY,
    "kill-on-invalid-dep": _DEPENDENCY,
    "chdir": ("every job runs in its own job directory under build.jobs_dir; set that "
              "instead"),
}

_LONG_NAME = re.compile(r"[a-z][a-z0-9-]+")


def normalize_key(key: str) -> str:
    """``--Job_Name`` and ``job-name`` are the same option; aliases become sbatch's names."""
    name = key.strip().lower().replace("_", "-").lstrip("-")
    return ALIASES.get(name, name)


def option_problems(keys: Iterable[str] | Mapping[str, str], *, long_names: bool) -> list[str]:
    """One message per option layerbot cannot pass on: reserved, or (with ``long_names``)
    not an sbatch long option name. Empty when every key is fine."""
    problems: list[str] = []
    for key in keys:
        name = normalize_key(key)
        if name in RESERVED:
            problems.append(f"{key!r}: layerbot sets --{name} itself; {RESERVED[name]}")
        elif long_names and not _LONG_NAME.fullmatch(name):
            problems.append(f"{key!r} is not an sbatch long option name "
                            "(write e.g. partition, not p)")
    return problems
