"""Job directories: where a job runs, and the files that tell it what it builds.

Layout (one directory per job, never shared, never reused)::

    <jobs_dir>/<owner>/<name>/pr-<N>/job-<ID>-<random>/     a PR build
    <jobs_dir>/<owner>/<name>/ref-<ref>/job-<ID>-<random>/  ``layerbot run --ref`` (no PR)

The random part makes the name unpredictable and the directory is created exclusively
(:func:`create_job_dir`): it is what proves a batch job is the bot's own.

The job directory **is** the working tree (``Mirrors.prepare(..., dest=job_dir)``): EESSI's
scripts run in the checkout and find everything relative to it. Inside it, next to the
PR's own files::

    .git                    link to the mirror (left out of archives)
    cfg/job.cfg             EESSI-compatible INI: [site_config] [repository] [architecture],
                            plus [exportvariables] and [layerbot] (SHAs, ids)
    cfg/job.json            every fact of the job (JobFacts + merged_sha), for layerbot
    cfg/export_vars.sh      the allowlisted ``exportvariable:`` values (EESSI sources it)
    cfg/<repos_cfg files>   the site's repos_cfg_dir copied in, as EESSI does
    <N>.diff                the PR's diff (EESSI's build scripts: ``ls [0-9]*.diff``);
                            0.diff for a run without a PR, if the caller passes a diff
    _bot_job<ID>.metadata   [PR] repo, pr_number, pr_comment_id (EESSI's job manager)

``cfg/`` is EESSI's bot-owned directory, so layerbot keeps its own files there too. If the
PR content has a ``cfg/`` directory, it is merged: the PR's other files stay, but every
name the bot writes is the bot's (a PR must not choose its own job facts or variables);
tracked files replaced that way are listed in ``JobDir.overwritten`` for the report.
The PR's content is untrusted: the bot never writes *through* a symlink the PR placed
(each file is written beside its target and renamed over it; a ``cfg`` that is not a real
directory is replaced). The bot's files show as untracked in ``git status`` of the job.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from layerbot.build import hostile
from layerbot.build.workspace import Prepared, remove_tree
from layerbot.core import pipeline
from layerbot.core.facts import JobFacts

CFG_DIR = "cfg"
JOB_CFG = "cfg/job.cfg"
JOB_JSON = "cfg/job.json"
EXPORT_VARS_FILE = "cfg/export_vars.sh"
JSON_FORMAT = 1

#: Names of job.cfg; EESSI's scripts read these sections and keys.
SITE_SECTION = "site_config"
REPOSITORY_SECTION = "repository"
ARCHITECTURE_SECTION = "architecture"
EXPORT_SECTION = "exportvariables"
LAYERBOT_SECTION = "layerbot"

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: Random bytes in a job directory's name (hex: twice as many characters).
JOB_DIR_TOKEN_BYTES = 8


class ExportVariablesRefused(ValueError):
    """Some requested ``exportvariable:`` is not allowlisted (or malformed); none is written."""

    def __init__(self, refused: Mapping[str, str]) -> None:
        self.refused = dict(refused)
        super().__init__(f"exportvariable not allowed: {', '.join(sorted(self.refused))}")


@dataclass(frozen=True)
class ExportVariables:
    accepted: dict[str, str]
    refused: dict[str, str]


@dataclass(frozen=True)
class JobDir:
    """The files written into a job directory, and what the job's environment gets."""

    path: Path
    facts: JobFacts  # as written: base_sha filled in, exportvariables = the accepted ones
    merged_sha: str | None
    cfg_file: Path
    facts_file: Path
    export_vars_file: Path
    metadata_file: Path
    diff_file: Path | None
    #: Add these to the job's environment (already allowlisted).
    env: dict[str, str] = field(default_factory=dict)
    #: Files of the PR's content the bot replaced with its own (relative paths).
    overwritten: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- layout


def job_group_dir(
    jobs_dir: Path, repo: str, *, pr: int | None = None, ref: str | None = None
) -> Path:
    """``<jobs_dir>/<owner>/<name>/pr-<N>`` (or ``ref-<ref>`` without a PR)."""
    owner, _, name = repo.partition("/")
    for part in (owner, name):
        if not _NAME.match(part) or part in (".", ".."):
            raise ValueError(f"{repo!r} is not a repository name like owner/name")
    if pr is not None:
        if pr <= 0:
            raise ValueError("a PR number is positive")
        group = f"pr-{pr}"
    elif ref:
        group = f"ref-{sanitise_ref(ref)}"
    else:
        raise ValueError("a job directory needs a PR number or a ref")
    return Path(jobs_dir) / owner / name / group


def create_job_dir(
    jobs_dir: Path, repo: str, job_id: int, *, pr: int | None = None, ref: str | None = None
) -> Path:
    """Create a new, empty job directory ``<group dir>/job-<ID>-<random>`` and return it.

    Why a random part, and why exclusive: a job directory is the bot's proof that a batch
    job is the one it submitted (Slurm's ``find`` only adopts a job whose working directory
    is this directory). A name nobody can predict cannot be prepared in advance by another
    job or user, and ``mkdir`` fails rather than reuse anything already there. The
    directories above it are made traversable but not listable (0711), so a job cannot
    learn the names of other jobs' directories either.
    """
    if job_id < 0:
        raise ValueError("job_id must not be negative")
    jobs_dir = Path(os.path.abspath(jobs_dir))  # the path Slurm reports as the work dir
    group = job_group_dir(jobs_dir, repo, pr=pr, ref=ref)
    _make_traversable_dirs(jobs_dir, group)
    while True:
        path = group / f"job-{job_id}-{secrets.token_hex(JOB_DIR_TOKEN_BYTES)}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # 2**-64: a collision, or something planted; never reused
            continue
        return path


def _make_traversable_dirs(root: Path, leaf: Path) -> None:
    """``root`` and every directory below it down to ``leaf``: created if missing, mode
    0711, and never a symlink (refused: the bot does not build where a link points)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    chain = [root]
    for part in leaf.relative_to(root).parts:
        chain.append(chain[-1] / part)
    for current in chain:
        with contextlib.suppress(FileExistsError):
            os.mkdir(current, 0o711)
        info = os.lstat(current)
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{current} is not a directory (a link?)")
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o711:
            os.chmod(current, 0o711)  # noqa: S103 (traverse only: no listing of job names)


def sanitise_ref(ref: str, max_len: int = 60) -> str:
    """A ref as one safe path component; lossy renderings get a hash to stay distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+|\.{2,}", "-", ref.removeprefix("refs/heads/"))
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip(".-")
    if cleaned == ref and len(cleaned) <= max_len:
        return cleaned
    digest = hashlib.sha256(ref.encode()).hexdigest()[:8]
    return f"{cleaned[:max_len].rstrip('.-') or 'ref'}-{digest}"


# ---------------------------------------------------------------------------- exportvariables


def filter_exportvariables(
    requested: Mapping[str, str], allowed: Iterable[str] | Mapping[str, Any]
) -> ExportVariables:
    """Split requested variables into allowlisted and refused ones.

    ``allowed`` entries: ``"VAR"`` allows any value, ``"VAR=value"`` that value only
    (EESSI's ``allowed_exportvars`` format). A mapping ``{VAR: value | [values] | None}``
    works too (None: any value). Malformed names and values with a newline or NUL are
    always refused: they would break job.cfg and export_vars.sh.
    """
    rules = _allow_rules(allowed)
    accepted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name, value in requested.items():
        ok = (
            _VAR_NAME.match(name) is not None
            and not any(c in value for c in "\n\r\0")
            and name in rules
            and (rules[name] is None or value in (rules[name] or ()))
        )
        (accepted if ok else refused)[name] = value
    return ExportVariables(accepted, refused)


def _allow_rules(allowed: Iterable[str] | Mapping[str, Any]) -> dict[str, set[str] | None]:
    rules: dict[str, set[str] | None] = {}
    if isinstance(allowed, Mapping):
        for name, values in allowed.items():
            if values is None:
                rules[name] = None
            else:
                listed = [values] if isinstance(values, str) else list(values)
                rules[name] = {str(v) for v in listed}
        return rules
    for entry in allowed:
        name, sep, value = entry.partition("=")
        current = rules.get(name, set())
        if not sep:
            rules[name] = None  # any value
        elif current is not None:
            rules[name] = current | {value}
    return rules


# ---------------------------------------------------------------------------- writing


def write_job_files(
    job_dir: Path,
    facts: JobFacts,
    *,
    prepared: Prepared | None = None,
    site_config: Mapping[str, Any] | None = None,
    repos_cfg_dir: Path | None = None,
    allowed_exportvars: Iterable[str] | Mapping[str, Any] = (),
    pr_diff: bytes | None = None,
    metadata_id: int | str | None = None,
) -> JobDir:
    """Write cfg/job.cfg, cfg/job.json, cfg/export_vars.sh, <N>.diff and the metadata file.

    ``job_dir`` is the prepared working tree. ``prepared`` supplies base and merged SHAs and
    must be for ``facts.head_sha``. ``site_config``: keys of ``[site_config]`` (local_tmp,
    build_logs_dir, shared_fs_path, load_modules, ...; None/empty values are left out, lists
    are joined with commas). ``repos_cfg_dir``: a site directory copied into ``cfg/``.
    ``facts.exportvariables`` must all be allowed by ``allowed_exportvars``, else
    ``ExportVariablesRefused`` (fail closed: a build must not run without what was asked).
    ``metadata_id``: the ``<ID>`` of ``_bot_job<ID>.metadata``; EESSI uses the backend's
    job id, unknown before submission, so it defaults to layerbot's and
    ``write_metadata`` can write it again later.
    """
    job_dir = Path(job_dir).absolute()
    # Everything that can be refused is checked before anything is written.
    facts, merged_sha = _complete_facts(facts, prepared, allowed_exportvars)
    cfg_text = render_job_cfg(facts, job_dir, merged_sha, site_config or {})
    overwritten: list[str] = remove_reserved(job_dir)
    cfg_dir = _bot_dir(job_dir, CFG_DIR, overwritten)
    if repos_cfg_dir is not None:
        _copy_site_dir(Path(repos_cfg_dir), cfg_dir, job_dir, overwritten)
    _install(job_dir / JOB_CFG, cfg_text.encode(), job_dir, overwritten)
    _install(job_dir / JOB_JSON, _render_json(facts, merged_sha, job_dir), job_dir, overwritten)
    exports = render_export_vars(facts.exportvariables).encode()
    _install(job_dir / EXPORT_VARS_FILE, exports, job_dir, overwritten)
    diff_file = None
    if pr_diff is not None:
        diff_file = job_dir / f"{facts.pr or 0}.diff"
        _install(diff_file, pr_diff, job_dir, overwritten)
    metadata = _write_metadata(job_dir, facts, metadata_id, overwritten)
    return JobDir(
        path=job_dir,
        facts=facts,
        merged_sha=merged_sha,
        cfg_file=job_dir / JOB_CFG,
        facts_file=job_dir / JOB_JSON,
        export_vars_file=job_dir / EXPORT_VARS_FILE,
        metadata_file=metadata,
        diff_file=diff_file,
        env=dict(facts.exportvariables),
        overwritten=overwritten,
    )


def write_metadata(job_dir: Path, facts: JobFacts, metadata_id: int | str | None = None) -> Path:
    """EESSI's ``_bot_job<ID>.metadata``: ``[PR]`` repo, pr_number, pr_comment_id.

    Call again with the backend's job id once the job is submitted, if EESSI tools need it.
    """
    return _write_metadata(Path(job_dir).absolute(), facts, metadata_id, None)


def _write_metadata(
    job_dir: Path, facts: JobFacts, metadata_id: int | str | None, overwritten: list[str] | None
) -> Path:
    ident = str(facts.job_id if metadata_id is None else metadata_id)
    if not _NAME.match(ident):
        raise ValueError(f"{ident!r} is not a job id")
    cfg = _parser()
    cfg["PR"] = {
        "repo": facts.repo,
        "pr_number": "" if facts.pr is None else str(facts.pr),
        "pr_comment_id": "" if facts.comment_id is None else str(facts.comment_id),
    }
    path = job_dir / f"_bot_job{ident}.metadata"
    _install(path, _ini_text(cfg).encode(), job_dir, overwritten)
    return path


def render_job_cfg(
    facts: JobFacts, job_dir: Path, merged_sha: str | None, site_config: Mapping[str, Any]
) -> str:
    """cfg/job.cfg text. Values are raw (no ``%`` interpolation), keys keep their case."""
    cfg = _parser()
    cfg[SITE_SECTION] = _site_section(site_config)
    target = facts.repo_target
    repository = {k: str(v) for k, v in target.facts.items() if _KEY.match(k)}
    repository.update(
        repos_cfg_dir=str(Path(job_dir) / CFG_DIR),
        repo_id=target.id,
        repo_name=target.name,
        repo_version=target.version,
        container=target.container,
    )
    cfg[REPOSITORY_SECTION] = repository
    cfg[ARCHITECTURE_SECTION] = {
        "node_type": facts.node_type,
        "software_subdir": facts.cpu_target,
        "os_type": facts.os,
        "accelerator": facts.accelerator or "",
    }
    cfg[EXPORT_SECTION] = dict(facts.exportvariables)
    cfg[LAYERBOT_SECTION] = _layerbot_section(facts, merged_sha)
    _check_single_lines(cfg)
    return _ini_text(cfg)


def render_export_vars(variables: Mapping[str, str]) -> str:
    """Always written, even empty, so a PR's own export_vars.sh is never what runs."""
    lines = ["# written by layerbot: the allowlisted exportvariable values of this job"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    return "\n".join(lines) + "\n"


def _complete_facts(
    facts: JobFacts,
    prepared: Prepared | None,
    allowed: Iterable[str] | Mapping[str, Any],
) -> tuple[JobFacts, str | None]:
    if prepared is not None and prepared.head_sha != facts.head_sha:
        raise ValueError(
            f"the tree was prepared for {prepared.head_sha}, the job is for {facts.head_sha}"
        )
    exports = filter_exportvariables(facts.exportvariables, allowed)
    if exports.refused:
        raise ExportVariablesRefused(exports.refused)
    base_sha = prepared.base_sha if prepared is not None else facts.base_sha
    facts = dataclasses.replace(facts, base_sha=base_sha, exportvariables=exports.accepted)
    return facts, prepared.merged_sha if prepared is not None else None


def _site_section(site_config: Mapping[str, Any]) -> dict[str, str]:
    section: dict[str, str] = {}
    for key, value in site_config.items():
        if not _KEY.match(key):
            raise ValueError(f"site_config key {key!r} is not a plain name")
        if value is None or value == "" or value == []:
            continue  # as EESSI: unset settings are left out, not written empty
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        section[key] = str(value)
    return section


def _layerbot_section(facts: JobFacts, merged_sha: str | None) -> dict[str, str]:
    values: dict[str, Any] = {
        "job_id": facts.job_id,
        "instance": facts.instance,
        "repo": facts.repo,
        "pr": facts.pr,
        "head_sha": facts.head_sha,
        "base_ref": facts.base_ref,
        "base_sha": facts.base_sha,
        "merged_sha": merged_sha,
        "cpu_target": facts.cpu_target,
        "build_on": facts.build_on,
        "build_id": facts.build_id,
    }
    return {k: "" if v is None else str(v) for k, v in values.items()}


def _check_single_lines(cfg: configparser.ConfigParser) -> None:
    # A newline would continue the value on the next line and EESSI's shell reader would
    # misread it; facts come partly from PR comments, so refuse rather than write it.
    for section in cfg.sections():
        for key, value in cfg[section].items():
            if any(c in value for c in "\n\r\0"):
                raise ValueError(f"job.cfg [{section}] {key}: values must be one line")


def _render_json(facts: JobFacts, merged_sha: str | None, job_dir: Path) -> bytes:
    data = facts.to_json()
    data.update(
        merged_sha=merged_sha,
        job_dir=str(job_dir),
        format=JSON_FORMAT,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _parser() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str  # type: ignore[assignment,method-assign]  # keep VAR names' case
    return cfg


def _ini_text(cfg: configparser.ConfigParser) -> str:
    out = io.StringIO()
    cfg.write(out)
    return out.getvalue()


# ---------------------------------------------------------------------------- reserved names

#: Names at the top of the job directory that only the bot or the running job may create:
#: result files (a PR must not forge its own result), EESSI's ``_bot_job*`` files, the job's
#: output (``slurm-<ID>.out``, older layerbot logs) and the local executor's state
#: directory. A committed file, directory or symlink under such a name would be read as
#: the job's word, or followed when the bot or the batch system writes there.
RESERVED_NAMES = re.compile(
    r"result\.json|_bot_job.*|slurm-.*\.out|layerbot-job\.log|job\.log|\.layerbot"
)


def remove_reserved(job_dir: Path) -> list[str]:
    """Remove what the PR committed under a reserved name (never following a link);
    returns the names removed, for the job's report."""
    removed = []
    with os.scandir(job_dir) as it:
        entries = [e for e in it if RESERVED_NAMES.fullmatch(e.name)]
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)  # fd-based: never descends through a symlink
        else:
            os.unlink(entry.path)
        removed.append(entry.name)
    return removed


# ---------------------------------------------------------------------------- safe writes


def _bot_dir(job_dir: Path, rel: str | Path, overwritten: list[str] | None) -> Path:
    """A real directory at job_dir/rel; a PR's file or symlink in the way is replaced.

    Checked component by component: ``mkdir(parents=True)`` would follow a symlink the PR
    put at ``cfg`` and write outside the job directory.
    """
    path = job_dir
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
            if overwritten is not None:
                overwritten.append(str(path.relative_to(job_dir)))
        if not path.exists():
            path.mkdir()
    return path


def _install(path: Path, data: bytes, job_dir: Path, overwritten: list[str] | None) -> None:
    """Write beside the target and rename over it: a symlink there is replaced, not followed.

    A file already there before the bot wrote it belongs to the PR's content: reported.
    """
    parent = _bot_dir(job_dir, path.parent.relative_to(job_dir), overwritten)
    if overwritten is not None and (path.exists() or path.is_symlink()):
        overwritten.append(str(path.relative_to(job_dir)))
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_site_dir(src: Path, cfg_dir: Path, job_dir: Path, overwritten: list[str]) -> None:
    """Copy the site's repos_cfg_dir into cfg/ (EESSI does the same), file by file."""
    if not src.is_dir():
        raise FileNotFoundError(f"repos_cfg_dir {src} is not a directory")
    for root, _dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        for name in files:
            target = cfg_dir / rel_root / name
            if target.name in ("job.cfg", "job.json", "export_vars.sh"):
                continue  # the bot's own names win over a site file of the same name
            _install(target, (Path(root) / name).read_bytes(), job_dir, overwritten)


# ---------------------------------------------------------------------------- reading


def read_job_json(job_dir: Path) -> dict[str, Any]:
    """cfg/job.json as the bot wrote it; read as a hostile file, since the job may have
    replaced it (or ``cfg/``) with a symlink or a FIFO (:class:`hostile.Refused` then)."""
    raw = hostile.read_bytes(Path(job_dir), JOB_JSON, MAX_JOB_JSON_BYTES)
    data: dict[str, Any] = json.loads(raw)
    return data


#: cfg/job.json is a few kilobytes.
MAX_JOB_JSON_BYTES = 1024 * 1024


def read_facts(job_dir: Path) -> JobFacts:
    """The JobFacts written in job.json (extra keys such as merged_sha are left aside)."""
    data = read_job_json(job_dir)
    names = {f.name for f in dataclasses.fields(JobFacts)}
    return JobFacts.from_json({k: v for k, v in data.items() if k in names})


def read_job_cfg(job_dir: Path) -> configparser.ConfigParser:
    cfg = _parser()
    cfg.read(Path(job_dir) / JOB_CFG)
    return cfg


# ---------------------------------------------------------------------------- archiving


def archive(job_dir: Path, archive_root: Path,
            remove: Callable[[Path], None] = remove_tree) -> Path:
    """Pack the job directory into ``<archive_root>/<owner>/<name>/<group>/<job dir name>.tar.gz``
    and delete it. The worktree's ``.git`` link is left out (the mirror stays where it is);
    symlinks are stored as symlinks, never followed.

    Blocking: call it through ``asyncio.to_thread``. Afterwards ``Mirrors.prune()`` drops
    the mirror's record of the deleted worktree.
    """
    job_dir = Path(job_dir).absolute()
    if not job_dir.is_dir():
        raise FileNotFoundError(f"{job_dir} is not a directory")
    target = _archive_path(job_dir, Path(archive_root))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for child in sorted(job_dir.iterdir()):
                if child.name == ".git":
                    continue
                tar.add(child, arcname=f"{job_dir.name}/{child.name}", recursive=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove(job_dir)
    return target


def _archive_path(job_dir: Path, archive_root: Path) -> Path:
    try:
        repo = str(read_job_json(job_dir)["repo"])
    except (OSError, ValueError, KeyError, hostile.Refused):  # the job changed cfg/job.json
        repo = f"{job_dir.parent.parent.parent.name}/{job_dir.parent.parent.name}"
    owner, _, name = repo.partition("/")
    parts = [p if _NAME.match(p) and p not in (".", "..") else "unknown" for p in (owner, name)]
    group = job_dir.parent.name if _NAME.match(job_dir.parent.name) else "unknown"
    return archive_root.joinpath(*parts, group, f"{job_dir.name}.tar.gz")


# --- pipelines ---------------------------------------------------------------------------

#: The script a step job runs (written by the bot, like cfg/job.cfg): the plan's command
#: for this step, in the step's checkout, with an empty output directory to fill.
STEP_SCRIPT = "cfg/step.sh"
_STEP_RUNNER = b"""#!/bin/bash
# layerbot: runs this step's command from the target's plan (see docs/pipelines.md).
cd "$LAYERBOT_JOB_DIR" || exit 1
mkdir -p "$LAYERBOT_STEP_OUTPUT" || exit 1
exec /bin/bash -c "$LAYERBOT_STEP_COMMAND"
"""


def write_plan_files(job_dir: Path) -> dict[str, str]:
    """A plan job's extra environment; a plan file the PR brought along is removed first,
    so only what the plan script writes is read."""
    job_dir = Path(job_dir).absolute()
    plan = job_dir / pipeline.PLAN_FILE
    if plan.is_symlink() or plan.exists():
        remove_tree(plan)
    return {"LAYERBOT_JOB_DIR": str(job_dir), "LAYERBOT_PLAN_FILE": str(plan)}


def write_step_files(job_dir: Path, step: Mapping[str, Any],
                     needs: Mapping[str, Path]) -> dict[str, str]:
    """cfg/needs.json and cfg/step.sh of a step job; returns its extra environment.

    ``needs``: each needed step's artifact directory, by step id. A ``step-output`` the
    PR's content brought along is removed: the step's artifact is only what it writes.
    """
    job_dir = Path(job_dir).absolute()
    needs_json = json.dumps({k: str(v) for k, v in needs.items()}, indent=2, sort_keys=True)
    _install(job_dir / pipeline.NEEDS_FILE, needs_json.encode() + b"\n", job_dir, None)
    _install(job_dir / STEP_SCRIPT, _STEP_RUNNER, job_dir, None)
    os.chmod(job_dir / STEP_SCRIPT, 0o755)  # noqa: S103 (run by the job user)
    output = job_dir / pipeline.STEP_OUTPUT
    if output.is_symlink() or output.exists():
        remove_tree(output)
    output.mkdir()
    env = {"LAYERBOT_JOB_DIR": str(job_dir), "LAYERBOT_STEP_ID": str(step["id"]),
           "LAYERBOT_STEP_NAME": str(step.get("name") or step["id"]),
           "LAYERBOT_STEP_COMMAND": str(step["command"]),
           "LAYERBOT_STEP_OUTPUT": str(output),
           "LAYERBOT_NEEDS_FILE": str(job_dir / pipeline.NEEDS_FILE)}
    env.update({pipeline.need_variable(k): str(v) for k, v in needs.items()})
    return env
