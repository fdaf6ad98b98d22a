"""Cached step artifacts shared through the staging area (docs/pipelines.md, *Shared steps*).

A step with a cache key that succeeds on an agent with a staging area (its own ``[deploy]``)
is staged there as a tar of its artifact, so that another agent reuses it instead of
building it again:

    cache/<repo>/<repo_target>/<target>/<digest of node type and cache key>/<job id>.tar
    ...<job id>.tar.sig      (with deploy.signing_key_file; namespace: the control plane's)

One object per job, written once: the tar is made the same way every time (sorted, no
times, no owners), so staging a job again finds its object already there and uploads
nothing; and a key that another job has staged under the same prefix already is not staged
again (its job is the one the control plane reuses). The agent reports what it staged in the
step's result (``staged``: key, sha256, size, signed); the control plane records nothing
else.

The agent that runs a step needing such an artifact fetches it into its own artifact store
before the step is submitted: at most the size the control plane recorded, the sha256 it
recorded, the signature checked when the site lists signers (``pipelines.
allowed_signers_file``), and unpacked as hostile input: regular files and directories
only (no links of either kind, devices, FIFOs, absolute paths or ``..``), at most what a
step's output may hold. Anything wrong and the fetch fails with the reason; the step that
needed it fails with it (``bot: rebuild failed`` then builds the cached step on this agent).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbot import log
from layerbot.build import steps as step_files
from layerbot.config import Config
from layerbot.core.pipeline import UNFETCHED
from layerbot.deploy.metadata import file_sha256
from layerbot.deploy.signing import Signer, Verifier
from layerbot.deploy.staging import ObjectNotFound, Staging, StagingError, check_key
from layerbot.deploy.upload import Stagings, staging_target

_log = log.get("jobs")

PREFIX = "cache"
#: At most this many members (files and directories) in a staged artifact.
MAX_MEMBERS = 2 * step_files.MAX_OUTPUT_FILES
#: At most this many bytes of files in it (what a step's output may hold).
MAX_BYTES = step_files.MAX_OUTPUT_BYTES
#: The tar itself: the files, and headers and padding for every member.
MAX_TAR_BYTES = MAX_BYTES + 3 * 512 * MAX_MEMBERS + 10 * 1024

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchFailed(Exception):
    """A staged artifact that cannot be used here; the message says why."""


@dataclass(frozen=True)
class CacheSpec:
    """What makes a cached step the same step (the control plane's lookup), from the
    facts the control plane gave the job (never from its job directory)."""

    repo: str
    repo_target: str
    target: str
    node_type: str
    cache_key: str
    instance: str

    def key(self, job_id: int) -> str:
        digest = hashlib.sha256(f"{self.node_type}\0{self.cache_key}".encode()).hexdigest()
        return check_key(f"{PREFIX}/{self.repo}/{self.repo_target}/{self.target}/"
                         f"{digest[:40]}/{job_id}.tar")


def cache_spec(facts: Mapping[str, Any]) -> CacheSpec | None:
    """The cache spec of a step job with a cache key, else None."""
    step = facts.get("step") or {}
    if facts.get("role") != "step" or not step.get("cache_key"):
        return None
    repo_target = facts.get("repo_target") or {}
    return CacheSpec(repo=str(facts.get("repo", "")), repo_target=str(repo_target.get("id", "")),
                     target=staging_target(str(facts.get("cpu_target", "")),
                                           facts.get("accelerator") or None),
                     node_type=str(facts.get("node_type", "")),
                     cache_key=str(step["cache_key"]), instance=str(facts.get("instance", "")))


def checked_record(raw: object) -> dict[str, Any] | None:
    """A ``staged`` record (as a step's result carries it) if well formed, else None."""
    if not isinstance(raw, Mapping):
        return None
    key, sha, size = raw.get("key"), raw.get("sha256"), raw.get("size")
    if not (isinstance(key, str) and key.startswith(PREFIX + "/") and key.endswith(".tar")
            and isinstance(sha, str) and _SHA256.match(sha)
            and isinstance(size, int) and not isinstance(size, bool) and size > 0):
        return None
    try:
        check_key(key)
    except StagingError:
        return None
    return {"key": key, "sha256": sha, "size": size, "signed": bool(raw.get("signed"))}


class StepCache:
    """Stages cached steps' artifacts and fetches other agents' ones, with this agent's
    ``[deploy]`` (``enabled``: it has one; without, it stages nothing and fetches nothing).
    """

    def __init__(self, config: Config, *, enabled: bool,
                 staging: Callable[[str], Staging] | None = None) -> None:
        self.config = config
        self.enabled = enabled
        self._staging = staging or Stagings(config)
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def of(cls, config: Config, stagings: Callable[[str], Staging] | None = None) -> StepCache:
        return cls(config, enabled="deploy" in config.model_fields_set
                   and config.pipelines.stage_cached_steps, staging=stagings)

    @property
    def work_dir(self) -> Path:
        return self.config.instance.data_dir / "step-cache"

    # --- staging a finished step --------------------------------------------------------

    def stage(self, spec: CacheSpec, artifact: Path, job_id: int) -> dict[str, Any] | None:
        """Stage ``artifact`` (the store's copy of the step's output); the ``staged``
        record, or None when not staged (no staging area, another job's is there, or a
        failure: the step still succeeded, its artifact is only not shared). Never raises."""
        if not self.enabled:
            return None
        key = spec.key(job_id)
        with log.bound(job_id=job_id, key=key):
            try:
                return self._stage(spec, artifact, key, job_id)
            except Exception as exc:
                _log.warning("staging a cached step's artifact failed; it is not shared",
                             error=f"{type(exc).__name__}: {exc}")
                return None

    def _stage(self, spec: CacheSpec, artifact: Path, key: str, job_id: int
               ) -> dict[str, Any] | None:
        staging = self._staging(spec.repo_target)
        prefix = key.rsplit("/", 1)[0] + "/"
        others = [o.key for o in staging.list_objects(prefix)
                  if o.key.endswith(".tar") and o.key != key]
        if others:
            _log.info("a cached step's artifact is staged already; not staged again",
                      staged=others[0])
            return None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            tar = Path(tmp) / "artifact.tar"
            pack(artifact, tar)
            sha, size = file_sha256(tar), tar.stat().st_size
            deploy = self.config.deploy
            signer = (Signer(deploy.signing_key_file, spec.instance)
                      if deploy.signing_key_file else None)
            signature = signer.sign_file(tar) if signer else None
            outcome = staging.upload(tar, key, sha, {"job": str(job_id),
                                                     "instance": spec.instance})
            if signature is not None:
                staging.put_bytes(key + ".sig", signature, "text/plain")
        _log.info("cached step's artifact staged", outcome=outcome.state, bytes=size)
        return {"key": key, "sha256": sha, "size": size, "signed": signature is not None}

    # --- fetching another agent's -------------------------------------------------------

    def fetch(self, job_id: int, repo_target: str, record: Mapping[str, Any],
              namespace: str) -> Path:
        """The artifact of job ``job_id`` in this agent's store, fetched from the staging
        area if it is not there yet. Raises FetchFailed with the reason."""
        store = self.config.step_artifacts_dir
        if (kept := step_files.stored(store, job_id)) is not None:
            return kept
        with self._guard:
            lock = self._locks.setdefault(job_id, threading.Lock())
        with lock:  # two steps that need it fetch it once
            if (kept := step_files.stored(store, job_id)) is not None:
                return kept
            try:
                return self._fetch(job_id, repo_target, record, namespace, store)
            except FetchFailed as exc:
                raise FetchFailed(f"{UNFETCHED}{job_id}: {exc}") from None
            except StagingError as exc:
                raise FetchFailed(f"{UNFETCHED}{job_id}: {exc}") from None
            except OSError as exc:
                raise FetchFailed(f"{UNFETCHED}{job_id}: {exc.strerror or exc}") from None

    def _fetch(self, job_id: int, repo_target: str, raw: Mapping[str, Any], namespace: str,
               store: Path) -> Path:
        if not self.enabled:
            raise FetchFailed(f"agent {self.config.agent_name} has no [deploy] section, so it "
                              "cannot read the staging area")
        record = checked_record(raw)
        if record is None:
            raise FetchFailed("the control plane's record of it is not usable")
        if record["size"] > MAX_TAR_BYTES:
            raise FetchFailed(f"it is {record['size']:,} bytes, more than a step's artifact "
                              f"may be ({MAX_TAR_BYTES:,})")
        staging = self._staging(repo_target)
        key = record["key"]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            tar = Path(tmp) / "artifact.tar"
            try:
                sha = staging.download(key, tar, max_bytes=record["size"])
            except ObjectNotFound:
                raise FetchFailed(f"{key} is not in {staging.location}") from None
            if tar.stat().st_size != record["size"] or sha != record["sha256"]:
                raise FetchFailed(f"{key} is not what its agent staged (sha256 "
                                  f"{record['sha256'][:12]}…, {record['size']:,} bytes)")
            self._check_signature(staging, key, tar, namespace)
            path = unpack(tar, store, job_id)
        _log.info("cached step's artifact fetched from the staging area", job_id=job_id,
                  key=key)
        return path

    def _check_signature(self, staging: Staging, key: str, tar: Path, namespace: str) -> None:
        signers = self.config.pipelines.allowed_signers_file
        if signers is None:
            return
        try:
            signature = staging.get_bytes(key + ".sig")
        except ObjectNotFound:
            raise FetchFailed(f"{key} is not signed, and pipelines.allowed_signers_file "
                              "asks for a signature") from None
        verdict = Verifier(signers).verify_file(tar, signature, namespace)
        if not verdict.ok:
            raise FetchFailed(f"{key}: {verdict.message}")


# --- the tar --------------------------------------------------------------------------------

def pack(root: Path, dest: Path) -> None:
    """``root`` (a directory of the store: files and directories only) as a tar that is
    the same bytes every time: sorted, no times, no owners, modes 0755/0644."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel, st in _walk(root):
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.size = st.st_size
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                tar.addfile(info, fh)


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    def walk(rel: str) -> Iterator[tuple[str, os.stat_result]]:
        here = root / rel if rel else root
        for name in sorted(os.listdir(here)):
            path = posixpath.join(rel, name) if rel else name
            st = os.lstat(root / path)
            if stat.S_ISDIR(st.st_mode):
                yield path, st
                yield from walk(path)
            elif stat.S_ISREG(st.st_mode):
                yield path, st
            else:
                raise FetchFailed(f"{path} in the store is not a file or directory")

    yield from walk("")


def unpack(tar_path: Path, store: Path, job_id: int) -> Path:
    """Unpack a staged artifact into ``store/<job_id>`` (complete or not at all), as
    hostile input. Raises FetchFailed."""
    store.mkdir(parents=True, exist_ok=True)
    partial = store / f".{job_id}.fetch.{uuid.uuid4().hex}"
    partial.mkdir(mode=0o755)
    try:
        _unpack(tar_path, partial)
        try:
            os.rename(partial, store / str(job_id))
        except OSError:
            if step_files.stored(store, job_id) is None:
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another fetch was first
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return store / str(job_id)


def _unpack(tar_path: Path, dest: Path) -> None:
    members = size = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                members += 1
                if members > MAX_MEMBERS:
                    raise FetchFailed(f"it has more than {MAX_MEMBERS:,} members")
                name = _checked_name(member)
                if member.isdir():
                    os.makedirs(dest / name, mode=0o755, exist_ok=True)
                    continue
                size += member.size
                if size > MAX_BYTES:
                    raise FetchFailed(f"it holds more than {MAX_BYTES:,} bytes")
                _write(tar, member, dest, name)
    except (tarfile.TarError, EOFError) as exc:
        raise FetchFailed(f"it is not a readable tar ({exc})") from None


def _checked_name(member: tarfile.TarInfo) -> str:
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\0" in name:
        raise FetchFailed(f"member '{name}' leaves the artifact (absolute, or '..')")
    if not (member.isfile() or member.isdir()):
        what = ("a symlink" if member.issym() else "a hard link" if member.islnk()
                else "a device" if member.ischr() or member.isblk()
                else "a FIFO" if member.isfifo() else f"of type {member.type!r}")
        raise FetchFailed(f"member '{name}' is {what}: a step's artifact holds only files "
                          "and directories")
    clean = posixpath.normpath(name)
    if clean in (".", ""):
        raise FetchFailed(f"member '{name}' has no name")
    return clean


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, name: str) -> None:
    parent = posixpath.dirname(name)
    if parent:
        os.makedirs(dest / parent, mode=0o755, exist_ok=True)
    src = tar.extractfile(member)
    if src is None:
        raise FetchFailed(f"member '{name}' cannot be read")
    mode = 0o755 if member.mode & 0o111 else 0o644
    # No links were made (none are accepted), and a name seen twice is refused (O_EXCL).
    try:
        fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise FetchFailed(f"member '{name}' is in it twice") from None
    with os.fdopen(fd, "wb") as out, src:
        shutil.copyfileobj(src, out, 1024 * 1024)
