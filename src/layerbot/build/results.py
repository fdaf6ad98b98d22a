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
problems with the test file only are listed and leave the build's status alone. Nothing here
raises on bad input.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RESULT_JSON = "result.json"
EESSI_RESULT_GLOB = "_bot_job*.result"
EESSI_TEST_GLOB = "_bot_job*.test"
HASH_CHUNK = 1024 * 1024
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
) -> JobResult:
    """The result a finished job left in ``job_dir``: result.json, else EESSI's files.

    ``backend_job_id`` picks ``_bot_job<ID>.result``; if that file is absent, any
    ``_bot_job*.result`` is used (the newest). ``log_file`` (default ``job_dir/job.log``)
    gives the last ``tail_lines`` lines in :attr:`JobResult.log_tail`.
    """
    log_tail = tail(log_file or job_dir / "job.log", tail_lines)
    result_json = job_dir / RESULT_JSON
    if result_json.exists():
        result = _from_result_json(job_dir, result_json)
    elif (eessi := _eessi_result_file(job_dir, backend_job_id)) is not None:
        result = _from_eessi(job_dir, eessi)
    else:
        wanted = f"_bot_job{backend_job_id or '<ID>'}.result"
        message = f"no result file: the job produced no {RESULT_JSON} or {wanted}"
        result = JobResult("failure", message, problems=[message])
    return replace(result, log_tail=log_tail)


# --- result.json -------------------------------------------------------------------------------


def _from_result_json(job_dir: Path, path: Path) -> JobResult:
    text, problem = _read_text(path)
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
        tests = _eessi_tests(job_dir, None, problems)
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


def _eessi_result_file(job_dir: Path, backend_job_id: str | None) -> Path | None:
    if backend_job_id and _safe_id(backend_job_id):
        exact = job_dir / f"_bot_job{backend_job_id}.result"
        if exact.is_file():
            return exact
    return _newest(job_dir.glob(EESSI_RESULT_GLOB))


def _from_eessi(job_dir: Path, path: Path) -> JobResult:
    section, problem = _ini_section(path, "RESULT")
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
    tests = _eessi_tests(job_dir, _job_id_of(path), problems)
    if _build_problems(problems):
        status = "failure"
    return JobResult(status, summary, artifacts, tests, problems, source=path)


def _eessi_tests(job_dir: Path, job_id: str | None, problems: list[str]) -> TestResult | None:
    path = job_dir / f"_bot_job{job_id}.test" if job_id else None
    if path is None or not path.is_file():
        path = _newest(job_dir.glob(EESSI_TEST_GLOB))
    if path is None:
        return None
    section, problem = _ini_section(path, "TEST")
    if section is None:
        problems.append(_TEST_PREFIX + (problem or f"cannot read {path.name}"))
        return None
    raw = section.get("status", "").strip().upper()
    status = _TEST_STATUSES.get(raw, "unknown")
    if raw not in ("SUCCESS", "FAILURE", "UNKNOWN"):
        shown = repr(raw) if raw else "nothing"
        problems.append(
            f"{_TEST_PREFIX}{path.name}: status must be SUCCESS, FAILURE or UNKNOWN, not {shown}"
        )
    return TestResult(status, section.get("comment_description", "").strip())


_TEST_STATUSES: dict[str, TestStatus] = {"SUCCESS": "success", "FAILURE": "failure"}

#: Problems starting with this concern the tests only and do not fail the build.
_TEST_PREFIX = "tests: "


def _build_problems(problems: list[str]) -> bool:
    return any(not p.startswith(_TEST_PREFIX) for p in problems)


def _ini_section(path: Path, name: str) -> tuple[dict[str, str] | None, str | None]:
    """The keys of section ``name``, or (None, why not)."""
    text, problem = _read_text(path)
    if problem is not None:
        return None, problem
    # No comment prefixes: a markdown heading ("# ...") or a ';' on an indented line of
    # comment_description is text, not a comment. Whole-line comments at the left margin
    # are dropped first, as INI readers expect.
    kept = "\n".join(line for line in text.splitlines() if not line.startswith(("#", ";")))
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(), strict=False)
    try:
        parser.read_string(kept, source=path.name)
    except configparser.Error as exc:
        return None, f"{path.name} is not a valid INI file: {_one_line(str(exc))}"
    if not parser.has_section(name):
        found = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
        return None, f"{path.name} has no [{name}] section (sections found: {found})"
    return dict(parser.items(name)), None


def _job_id_of(path: Path) -> str | None:
    match = re.fullmatch(r"_bot_job(.+)\.(result|test)", path.name)
    return match.group(1) if match else None


def _safe_id(job_id: str) -> bool:
    """A backend id usable in a file name (the local backend's ids are paths: not these)."""
    return re.fullmatch(r"[A-Za-z0-9_.-]+", job_id) is not None


# --- artifacts ---------------------------------------------------------------------------------


def _artifact(job_dir: Path, name: str, listed_in: str, problems: list[str]) -> Artifact | None:
    """The artifact ``name`` (relative to the job directory), measured; None if unusable."""
    root = job_dir.resolve()
    path = (job_dir / name).resolve()
    # Resolved, so neither "../" nor a symlink can make us publish a file from elsewhere.
    if not path.is_relative_to(root):
        problems.append(f"artifact {name} (in {listed_in}) is outside the job directory")
        return None
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        problems.append(f"artifact {name} (in {listed_in}) {what}")
        return None
    try:
        size, digest = file_size_and_sha256(path)
    except OSError as exc:
        problems.append(f"artifact {name}: cannot read it: {exc.strerror or exc}")
        return None
    return Artifact(name=path.name, path=path, size=size, sha256=digest)


def file_size_and_sha256(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in 1 MiB chunks (artifacts can be gigabytes)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# --- logs ------------------------------------------------------------------------------------


def tail(path: Path, n: int, *, block_size: int = 64 * 1024) -> str:
    """The last ``n`` lines of a file, reading backwards from its end ("" if it is absent).

    Only the blocks holding those lines are read, so a log of gigabytes costs no more than
    a small one.
    """
    if n <= 0:
        return ""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            position = end
            # n lines need n newlines before them (plus possibly one at the very end).
            while position > 0 and data.count(b"\n") <= n:
                step = min(block_size, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


# --- small helpers ---------------------------------------------------------------------------


def _read_text(path: Path) -> tuple[str, str | None]:
    try:
        size = path.stat().st_size
        if size > MAX_RESULT_BYTES:
            return "", f"{path.name} is {size} bytes: too big for a result file"
        return path.read_bytes().decode("utf-8", errors="replace"), None
    except OSError as exc:
        return "", f"cannot read {path.name}: {exc.strerror or exc}"


def _broken(problem: str, source: Path) -> JobResult:
    return JobResult("failure", problem, problems=[problem], source=source)


def _newest(paths: Iterable[Path]) -> Path | None:
    files = [p for p in paths if p.is_file()]
    return max(files, key=lambda p: (p.stat().st_mtime, p.name)) if files else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
