"""Reading what a finished job left behind: its result file, its artifacts, its log.

A job reports its result in one of two files in its job directory, read in this order:

1. layerbot's own ``result.json``::

       {
         "status": "success" | "failure",            (required)
         "summary": "<markdown for the PR>",         (optional, default "")
         "artifacts": [                               (optional, default [])
           {"path": "<file, relative to the job directory>",   (required)
            "size": <bytes, integer >= 0>,                     (optional, checked if given)
            "sha256": "<64 hex digits>"}                       (optional, checked if given)
         ],
         "tests": {                                   (optional)
           "status": "success" | "failure" | "unknown",
           "summary": "<markdown>",
           "passed": <integer >= 0>, "failed": <integer >= 0>  (optional)
         }
       }

   Unknown keys are ignored, so newer jobs can add fields.

2. EESSI's ``_bot_job<ID>.result`` (INI, section ``[RESULT]``: ``comment_description``,
   ``status`` = SUCCESS | FAILURE | UNKNOWN, ``artefacts`` = one tarball name per line,
   relative to the job directory) and ``_bot_job<ID>.test`` (section ``[TEST]``:
   ``comment_description``, ``status``), so EESSI's job scripts work unchanged.

Whatever is wrong (no result file, a corrupt one, a missing artifact, a checksum that does
not match, an artifact outside the job directory) becomes a line in
:attr:`JobResult.problems` and makes the result a failure, so nothing doubtful is deployed;
problems with the test file or the log only are listed and leave the build's status alone.
Nothing here raises on bad input.

The job directory is the job's: every file is read through :mod:`layerbot.build.hostile`
(no link followed anywhere in the path, regular files only, size caps, time limits), so a
symlink, FIFO or huge file in place of a result, test file, log or artifact is a problem
line ("_bot_job12.result is a symlink, not a regular file: ignored"), never a hang and never
the content of another file.

The job's output is EESSI's ``slurm-<ID>.out`` (Slurm's default name, which EESSI's check
scripts read); jobs of older layerbot versions wrote ``layerbot-job.log``.

An EESSI ``.test`` file may hold its verdict in ``[TEST]`` or in ``[RESULT]`` (EESSI's site
script writes the latter when the PR has no ``bot/check-test.sh``); without a
SUCCESS/FAILURE verdict the tests are "unknown", which never fails a successful build.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from layerbot.build import hostile

RESULT_JSON = "result.json"
EESSI_RESULT_RE = re.compile(r"_bot_job(.+)\.result")
EESSI_TEST_RE = re.compile(r"_bot_job(.+)\.test")
#: The job's output (stdout+stderr), as Slurm names it by default and EESSI's scripts
#: expect (backends.base.OUTPUT_PATTERN).
OUTPUT_RE = re.compile(r"slurm-([A-Za-z0-9_.-]+)\.out")
#: The output name of jobs submitted by layerbot before it used EESSI's name.
LEGACY_LOG_NAMES = ("layerbot-job.log", "job.log")
#: A result file is a few kilobytes; anything much bigger is not one.
MAX_RESULT_BYTES = 10 * 1024 * 1024

Status = Literal["success", "failure"]
TestStatus = Literal["success", "failure", "unknown"]


# --- what callers get ----------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    name: str  # the file name, e.g. eessi-2023.06-software-linux-x86_64-generic-17.tar.gz
    path: Path  # absolute, inside the job directory
    size: int
    sha256: str


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class, despite its name

    status: TestStatus
    summary: str = ""
    passed: int | None = None
    failed: int | None = None


@dataclass(frozen=True)
class JobResult:
    status: Status
    summary: str
    artifacts: list[Artifact] = field(default_factory=list)
    tests: TestResult | None = None
    problems: list[str] = field(default_factory=list)
    log_tail: str = ""
    #: The file the result was read from (None: there was none).
    source: Path | None = None


# --- result.json as pydantic models ----------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ArtifactEntry(_Lenient):
    path: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class TestsEntry(_Lenient):
    __test__ = False

    status: TestStatus
    summary: str = ""
    passed: int | None = Field(default=None, ge=0)
    failed: int | None = Field(default=None, ge=0)


class ResultFile(_Lenient):
    status: Status
    summary: str = ""
    artifacts: list[ArtifactEntry] = []
    tests: TestsEntry | None = None


# --- the entry point ---------------------------------------------------------------------------


def read_result(
    job_dir: Path,
    backend_job_id: str | None = None,
    log_file: Path | None = None,
    tail_lines: int = 30,
    *,
    job_ids: Iterable[str] = (),
) -> JobResult:
    """The result a finished job left in ``job_dir``: result.json, else EESSI's files.

    ``backend_job_id`` (and ``job_ids``, other names of the job such as layerbot's id)
    pick ``_bot_job<ID>.result`` and ``slurm-<ID>.out``; if absent, the newest of each
    kind is used. ``log_file`` (default: :func:`output_name`) gives the last
    ``tail_lines`` lines in :attr:`JobResult.log_tail`.
    """
    names = {e.name: e for e in hostile.entries(job_dir)}
    ids = _ids(backend_job_id, job_ids)
    log_name = _relative(job_dir, log_file) if log_file else output_name(job_dir, ids, names)
    log_tail, log_problem = _tail(job_dir, log_name, tail_lines)
    if RESULT_JSON in names:
        result = _from_result_json(job_dir, job_dir / RESULT_JSON, names)
    elif (eessi := _pick(names, EESSI_RESULT_RE, ids)) is not None:
        result = _from_eessi(job_dir, job_dir / eessi, names)
    else:
        wanted = f"_bot_job{ids[0] if ids else '<ID>'}.result"
        message = f"no result file: the job produced no {RESULT_JSON} or {wanted}"
        result = JobResult("failure", message, problems=[message])
    if log_problem is not None:
        result = replace(result, problems=[*result.problems, _LOG_PREFIX + log_problem])
    return replace(result, log_tail=log_tail)


def output_name(job_dir: Path, ids: Iterable[str] = (),
                names: dict[str, hostile.Entry] | None = None) -> str | None:
    """The name of the job's output file: ``slurm-<ID>.out`` for one of ``ids``, else the
    newest ``slurm-*.out``, else a legacy name; None if there is none (yet)."""
    found = names if names is not None else {e.name: e for e in hostile.entries(job_dir)}
    picked = _pick(found, OUTPUT_RE, list(ids))
    if picked is not None:
        return picked
    return next((n for n in LEGACY_LOG_NAMES if n in found), None)


def _relative(job_dir: Path, path: Path) -> str:
    if path.is_absolute() and path.is_relative_to(job_dir.absolute()):
        return str(path.relative_to(job_dir.absolute()))
    return str(path)


def failure_reason(result: JobResult) -> str:
    """Why a failed job failed, for the PR: the build's own failure first, then problems
    with its test file (which never fail a build on their own)."""
    build = [p for p in result.problems if not p.startswith(_SIDE_PREFIXES)]
    tests = [p for p in result.problems if p.startswith(_TEST_PREFIX)]
    first = build or [result.summary.strip() or "the job reported failure"]
    return "; ".join([*first, *tests])


def _ids(backend_job_id: str | None, job_ids: Iterable[str]) -> list[str]:
    """File-name ids of a job: a Slurm backend id ``123;cluster/45`` names job ``123``."""
    ids = []
    for raw in (backend_job_id, *job_ids):
        if not raw:
            continue
        candidate = raw.split("/")[0].split(";")[0] if raw[0].isdigit() else raw
        if _safe_id(candidate) and candidate not in ids:
            ids.append(candidate)
    return ids


def _pick(names: dict[str, hostile.Entry], pattern: re.Pattern[str],
          ids: list[str]) -> str | None:
    """The name matching ``pattern`` whose id is one of ``ids``, else the newest match.

    Non-regular entries are picked too, so a symlinked result is reported, not skipped.
    """
    matching = [e for e in names.values() if pattern.fullmatch(e.name)]
    for ident in ids:
        exact = next((e for e in matching if pattern.fullmatch(e.name).group(1) == ident), None)  # type: ignore[union-attr]
        if exact is not None:
            return exact.name
    return max(matching, key=lambda e: (e.mtime, e.name)).name if matching else None


# --- result.json -------------------------------------------------------------------------------


def _from_result_json(job_dir: Path, path: Path, names: dict[str, hostile.Entry]) -> JobResult:
    text, problem = _read_text(job_dir, path.name)
    if problem is not None:
        return _broken(problem, path)
    try:
        parsed = ResultFile.model_validate_json(text)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return _broken(f"{path.name} is not valid JSON: {_first_errors(exc)}", path)
        return _broken(f"{path.name} is not a valid result: {_first_errors(exc)}", path)
    problems: list[str] = []
    artifacts: list[Artifact] = []
    for entry in parsed.artifacts:
        artifact = _artifact(job_dir, entry.path, path.name, problems)
        if artifact is not None:
            _compare(artifact, entry, problems)
            artifacts.append(artifact)
    tests = None
    if parsed.tests is not None:
        t = parsed.tests
        tests = TestResult(t.status, t.summary, t.passed, t.failed)
    else:
        tests = _eessi_tests(job_dir, [], names, problems)
    status: Status = "failure" if _build_problems(problems) else parsed.status
    return JobResult(status, parsed.summary, artifacts, tests, problems, source=path)


def _compare(artifact: Artifact, entry: ArtifactEntry, problems: list[str]) -> None:
    if entry.size is not None and entry.size != artifact.size:
        problems.append(
            f"artifact {entry.path}: size is {artifact.size} bytes, "
            f"but {RESULT_JSON} says {entry.size}"
        )
    if entry.sha256 is not None and entry.sha256.lower() != artifact.sha256:
        problems.append(
            f"artifact {entry.path}: sha256 is {artifact.sha256}, "
            f"but {RESULT_JSON} says {entry.sha256.lower()}"
        )


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


# --- EESSI's INI files -------------------------------------------------------------------------


def _from_eessi(job_dir: Path, path: Path, names: dict[str, hostile.Entry]) -> JobResult:
    section, problem = _ini_section(job_dir, path.name, ("RESULT",))
    if section is None:
        return _broken(problem or f"cannot read {path.name}", path)
    problems: list[str] = []
    summary = section.get("comment_description", "").strip()
    raw_status = section.get("status", "").strip().upper()
    status: Status = "success" if raw_status == "SUCCESS" else "failure"
    if raw_status == "UNKNOWN":
        problems.append(f"{path.name} says status UNKNOWN: the job could not tell")
    elif raw_status not in ("SUCCESS", "FAILURE"):
        shown = repr(raw_status) if raw_status else "nothing"
        problems.append(f"{path.name}: status must be SUCCESS, FAILURE or UNKNOWN, not {shown}")
    artifacts = []
    for name in section.get("artefacts", "").split():
        artifact = _artifact(job_dir, name, path.name, problems)
        if artifact is not None:
            artifacts.append(artifact)
    own = _job_id_of(path)
    tests = _eessi_tests(job_dir, [own] if own else [], names, problems)
    if _build_problems(problems):
        status = "failure"
    return JobResult(status, summary, artifacts, tests, problems, source=path)


def _eessi_tests(job_dir: Path, ids: list[str], names: dict[str, hostile.Entry],
                 problems: list[str]) -> TestResult | None:
    name = _pick(names, EESSI_TEST_RE, ids)
    if name is None:
        return None
    # [TEST] is EESSI's check-test.sh; [RESULT] is what its site script writes without one.
    section, problem = _ini_section(job_dir, name, ("TEST", "RESULT"))
    if section is None:
        problems.append(_TEST_PREFIX + (problem or f"cannot read {name}"))
        return None
    raw = section.get("status", "").strip().upper()
    summary = section.get("comment_description", "").strip()
    if raw not in _TEST_STATUSES:
        # No verdict (or UNKNOWN): the tests did not say; never a failure of the build.
        if raw not in ("", "UNKNOWN"):
            problems.append(f"{_TEST_PREFIX}{name}: status must be SUCCESS, FAILURE or "
                            f"UNKNOWN, not {raw!r}")
        return TestResult("unknown", summary or UNKNOWN_TESTS)
    return TestResult(_TEST_STATUSES[raw], summary)


#: The summary of tests that gave no verdict.
UNKNOWN_TESTS = "test result unknown"

_TEST_STATUSES: dict[str, TestStatus] = {"SUCCESS": "success", "FAILURE": "failure"}

#: Problems starting with these concern the tests or the log only: the build stands.
_TEST_PREFIX = "tests: "
_LOG_PREFIX = "log: "
_SIDE_PREFIXES = (_TEST_PREFIX, _LOG_PREFIX)


def _build_problems(problems: list[str]) -> bool:
    return any(not p.startswith(_SIDE_PREFIXES) for p in problems)


def _ini_section(job_dir: Path, name: str, sections: tuple[str, ...]
                 ) -> tuple[dict[str, str] | None, str | None]:
    """The keys of the first of ``sections`` present, or (None, why not)."""
    text, problem = _read_text(job_dir, name)
    if problem is not None:
        return None, problem
    # No comment prefixes: a markdown heading ("# ...") or a ';' on an indented line of
    # comment_description is text, not a comment. Whole-line comments at the left margin
    # are dropped first, as INI readers expect.
    kept = "\n".join(line for line in text.splitlines() if not line.startswith(("#", ";")))
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(), strict=False)
    try:
        parser.read_string(kept, source=name)
    except configparser.Error as exc:
        return None, f"{name} is not a valid INI file: {_one_line(str(exc))}"
    for wanted in sections:
        if parser.has_section(wanted):
            return dict(parser.items(wanted)), None
    found = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
    expected = " or ".join(f"[{s}]" for s in sections)
    return None, f"{name} has no {expected} section (sections found: {found})"


def _job_id_of(path: Path) -> str | None:
    match = re.fullmatch(r"_bot_job(.+)\.(result|test)", path.name)
    return match.group(1) if match else None


def _safe_id(job_id: str) -> bool:
    """A backend id usable in a file name (the local backend's ids are paths: not these)."""
    return re.fullmatch(r"[A-Za-z0-9_.-]+", job_id) is not None


# --- artifacts ---------------------------------------------------------------------------------


def _artifact(job_dir: Path, name: str, listed_in: str, problems: list[str]) -> Artifact | None:
    """The artifact ``name`` (relative to the job directory), measured; None if unusable.

    Opened component by component without following links, so neither "../" nor a
    symlink (of the file or of a directory on its way) can publish a file from elsewhere.
    """
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        problems.append(f"artifact {name} (in {listed_in}) is outside the job directory")
        return None
    try:
        size, digest = hostile.size_and_sha256(job_dir, str(rel))
    except hostile.Refused as exc:
        what = str(exc).removeprefix(f"{rel} ")  # "does not exist", "is a symlink, ..."
        problems.append(f"artifact {name} (in {listed_in}) {what}")
        return None
    return Artifact(name=rel.name, path=job_dir.absolute() / rel, size=size, sha256=digest)


# --- logs ------------------------------------------------------------------------------------


def tail(path: Path, n: int, *, block_size: int = 64 * 1024) -> str:
    """The last ``n`` lines of the job-directory file ``path`` ("" if it is absent).

    A file the bot must not read (a symlink, a FIFO, ...) gives a bracketed note saying
    so instead of its content.
    """
    text, problem = _tail(path.parent, path.name, n, block_size)
    return f"[layerbot: {problem}]" if problem is not None else text


def job_log_tail(job_dir: Path, n: int) -> str:
    """The last ``n`` lines of the job's output, wherever it is (see :func:`output_name`)."""
    name = output_name(job_dir)
    return "" if name is None else tail(job_dir / name, n)


def _tail(job_dir: Path, name: str | None, n: int,
          block_size: int = 64 * 1024) -> tuple[str, str | None]:
    if n <= 0 or name is None:
        return "", None
    try:
        data = hostile.tail_bytes(job_dir, name, n, block=block_size)
    except hostile.Refused as exc:
        if "does not exist" in str(exc):
            return "", None
        return "", str(exc)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:]), None


# --- small helpers ---------------------------------------------------------------------------


def _read_text(job_dir: Path, name: str) -> tuple[str, str | None]:
    try:
        data = hostile.read_bytes(job_dir, name, MAX_RESULT_BYTES)
    except hostile.Refused as exc:
        return "", str(exc)
    return data.decode("utf-8", errors="replace"), None


def _broken(problem: str, source: Path) -> JobResult:
    return JobResult("failure", problem, problems=[problem], source=source)


def _one_line(text: str) -> str:
    return " ".join(text.split())
