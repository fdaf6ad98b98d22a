"""Git mirrors and exact-commit working trees for build jobs.

EESSI's bot cloned the whole repository for every job and ``git apply``-ed the PR's diff
onto whatever the base branch was at that moment; the head SHA was recorded nowhere, so a
push after the command changed what got built. Here:

* one **bare mirror** per repository (``Mirrors``) is fetched incrementally, only the refs
  asked for (the base branch and ``refs/pull/N/head``), into the ``refs/mirror/`` namespace;
* a job's tree is made for an **exact head SHA** (pinned when the command was handled),
  merged onto the base tip of the moment, and all three SHAs are returned (``Prepared``).

How a tree is made (no network, no copying of objects):

1. ``git merge-tree --write-tree`` computes the merged tree inside the mirror without any
   working tree, so a conflict is known before anything is written to ``dest``;
2. ``git commit-tree`` records it as a merge commit with a fixed identity and a date taken
   from the parents, so the same base and head always give the same ``merged_sha``;
3. ``dest/.git`` is a **repository of the job's own**, written file by file by the bot
   (HEAD at the commit, a config of the bot's, no hooks, no ``info/``), whose object store
   *borrows* the mirror's objects read-only through ``objects/info/alternates``; then
   ``git read-tree -u`` fills ``dest`` (parallel checkout), jobs in parallel and unlocked.

Why not a ``git worktree`` (as before): a worktree's ``.git`` points into the mirror and
shares its config, refs and object store, so a job could plant a ``filter.*.smudge``, a
hook or refs in the mirror and run a command inside the bot's next git call, or change
what other PRs check out (issue 9, item 4). Now everything the job can write is inside
its own directory; it only needs read access to the mirror's ``objects/``. The bot never
runs git in a job's repository after preparing it (clean-up only deletes files), and it
checks the mirror's config, attributes and hooks before every fetch and preparation:
what it did not write is removed (at fetch, under the lock) or refused (``MirrorTampered``).
Every git call goes through ``gitenv`` (fixed environment, nothing foreign run).

A merge commit lives only in the mirror's object store, unreferenced; git's gc keeps
unreachable objects for two weeks (``gc.pruneExpire``), far longer than preparing a job
takes, and the job's files are written by then.

Locks: per mirror, an ``asyncio.Lock`` (this process) plus ``flock`` on ``<mirror>.lock``
(other processes sharing the data dir), held by fetches and pruning; everything else only
reads the mirror (or adds objects to it) and runs unlocked.

The mirror never stores credentials: a token is handed to git through ``GIT_CONFIG_*``
environment variables for one fetch only, so neither the mirror's config nor a job's
repository can leak it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from layerbot import log
from layerbot.build import gitenv, safe_remove


def _log() -> Any:
    # Looked up at each use: a logger bound at import time would keep structlog's
    # defaults if log.configure() runs after this module is imported.
    return log.get("workspace")


#: Fetched refs live under this prefix (``refs/heads/main`` -> ``refs/mirror/heads/main``),
#: apart from anything layerbot might create itself.
MIRROR_NAMESPACE = "refs/mirror/"

#: Identity of the merge commits layerbot makes; fixed so ``git`` never asks for one.
MERGE_IDENTITY = ("layerbot", "layerbot@localhost")

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")
_MISSING_REMOTE_REF = re.compile(r"couldn't find remote ref|no such remote ref", re.IGNORECASE)

#: What the bot writes as a mirror's config (and restores if anything else is found there).
_MIRROR_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = true
\tlogallrefupdates = false
[gc]
\tautoDetach = false
[fetch]
\twriteCommitGraph = true
[remote "origin"]
\turl = {url}
"""

#: The config of a job's own repository: no remote fetch spec, nothing that runs anything.
_JOB_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = false
[remote "origin"]
\turl = {url}
"""


# ---------------------------------------------------------------------------- errors


class WorkspaceError(Exception):
    """Base of every error of this module."""


class GitError(WorkspaceError):
    """A git command failed in a way this module does not interpret further."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.command = list(args)
        self.returncode = returncode
        self.stderr = stderr.strip()
        words = [a for i, a in enumerate(args) if a != "-c" and (i == 0 or args[i - 1] != "-c")]
        super().__init__(f"git {' '.join(words[:2])} failed ({returncode}): {self.stderr}")


class FetchError(WorkspaceError):
    """Fetching failed after every attempt; ``stderr`` is git's own message."""

    def __init__(self, url: str, stderr: str, attempts: int = 1) -> None:
        self.url = url
        self.stderr = stderr.strip()
        self.attempts = attempts
        super().__init__(f"fetching from {url} failed: {self.stderr}")


class RefNotFound(WorkspaceError, LookupError):
    """A commit or ref is not there (e.g. the PR was force-pushed and the commit is gone)."""


class RemoteRefNotFound(FetchError, RefNotFound):
    """The remote has no such ref (e.g. ``refs/pull/N/head`` of a PR that does not exist).

    Not retried: asking again will not make it appear. Catchable as either parent.
    """


class MirrorTampered(WorkspaceError):
    """A mirror holds config, attributes or hooks the bot did not write; it is not used."""


class MergeConflict(WorkspaceError):
    """The PR head does not merge cleanly onto the base tip; nothing was written."""

    def __init__(self, head_sha: str, base_ref: str, base_sha: str, files: list[str]) -> None:
        self.head_sha = head_sha
        self.base_ref = base_ref
        self.base_sha = base_sha
        self.files = files
        shown = ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else "")
        super().__init__(
            f"{head_sha[:12]} does not merge cleanly onto {base_ref} ({base_sha[:12]}); "
            f"conflicts in: {shown or '(no file named by git)'}"
        )


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Mirror:
    """A bare mirror: ``url`` is the credential-free URL (or path) it is fetched from."""

    url: str
    path: Path

    @property
    def lock_file(self) -> Path:
        return _lock_file(self.path)


@dataclass(frozen=True)
class Prepared:
    """A working tree at ``path`` whose HEAD is ``merged_sha`` (== head_sha if fast-forward)."""

    head_sha: str
    base_sha: str
    merged_sha: str
    path: Path

    @property
    def fast_forward(self) -> bool:
        return self.merged_sha == self.head_sha


@dataclass(frozen=True)
class ResolvedRef:
    mirror: Mirror
    ref: str  # the remote ref it was fetched as (a SHA stays a SHA)
    sha: str


@dataclass(frozen=True)
class _Commit:
    sha: str
    time: int  # committer time, seconds since the epoch


_MergeKey = tuple[Path, str, str]  # mirror, base SHA, head SHA


@dataclass
class _LoopState:
    locks: dict[Path, asyncio.Lock] = field(default_factory=dict)
    merges: dict[_MergeKey, asyncio.Future[str]] = field(default_factory=dict)
    diffs: dict[_MergeKey, asyncio.Future[bytes]] = field(default_factory=dict)


_T = TypeVar("_T")


async def _shared(
    table: dict[_MergeKey, asyncio.Future[_T]],
    key: _MergeKey,
    make: Callable[[], Coroutine[Any, Any, _T]],
) -> _T:
    """One computation for the jobs of one command that ask for the same thing at once.

    Only computations in progress are shared; a finished one is not kept (a merge commit
    is unreachable in the mirror, whose gc may drop it once it is old).
    """
    task = table.get(key)
    if task is None:
        task = asyncio.ensure_future(make())
        table[key] = task
        task.add_done_callback(lambda t: _forget(table, key, t))
    # Shielded: one cancelled job must not cancel the computation the others await.
    return await asyncio.shield(task)


def _forget(
    table: dict[_MergeKey, asyncio.Future[_T]], key: _MergeKey, task: asyncio.Future[_T]
) -> None:
    table.pop(key, None)
    if not task.cancelled():
        task.exception()  # marks a failure as retrieved when every waiter was cancelled


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace").strip()


# ---------------------------------------------------------------------------- helpers


def is_sha(value: str) -> bool:
    """A full object id (SHA-1 or SHA-256), the only thing ``prepare`` accepts as head."""
    return bool(_SHA_RE.match(value))


def github_url(repo: str, base_url: str = "https://github.com") -> str:
    """The clone URL of ``owner/name`` on GitHub (or a GitHub Enterprise ``base_url``)."""
    owner, _, name = repo.partition("/")
    if not (_SAFE_COMPONENT.match(owner) and _SAFE_COMPONENT.match(name.removesuffix(".git"))):
        raise ValueError(f"{repo!r} is not a repository name like owner/name")
    return f"{base_url.rstrip('/')}/{owner}/{name.removesuffix('.git')}.git"


def remote_ref(ref: str) -> str:
    """The full remote ref of ``main``, ``pull/7/head`` or ``refs/...`` (SHAs unchanged)."""
    if ref.startswith("refs/") or is_sha(ref) or ref == "HEAD":
        return ref
    if re.fullmatch(r"pull/\d+/(head|merge)", ref):
        return f"refs/{ref}"
    return f"refs/heads/{ref}"


def mirror_ref(ref: str) -> str:
    """Where the remote ``ref`` is kept in the mirror: ``refs/mirror/heads/main``.

    A SHA names itself (``prepare`` accepts one as the base of a run without a branch).
    """
    full = remote_ref(ref)
    if is_sha(full):
        return full
    if full == "HEAD":
        return f"{MIRROR_NAMESPACE}HEAD"
    return MIRROR_NAMESPACE + full.removeprefix("refs/")


def _is_local(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    if "://" in source:
        return source.startswith("file://")
    # scp-like "git@host:owner/name"; a path with a colon before any slash is rare enough.
    return not _SCP_LIKE.match(source)


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``https://user:secret@host/x`` -> (``https://host/x``, ``user:secret``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=host)), userinfo


def _auth_env(url: str, userinfo: str | None, token: str | None) -> dict[str, str]:
    """Pass credentials as an HTTP header scoped to the host, through the environment only.

    ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` (git >= 2.31) keep them off the command line
    (visible to every user in ``ps``) and out of any config file.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return {}  # local paths and ssh authenticate otherwise
    if token is not None:
        userinfo = f"x-access-token:{token}"
    if userinfo is None:
        return {}
    scope = f"{parts.scheme}://{parts.netloc}/"
    encoded = base64.b64encode(userinfo.encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{scope}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {encoded}",
    }


def _lock_file(mirror_path: Path) -> Path:
    return mirror_path.with_name(mirror_path.name + ".lock")


async def _git(
    *args: str,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    time_limit: float | None = None,
) -> _Result:
    """Run git (``gitenv``: fixed environment, safe options); on timeout or cancellation the
    process is killed, never left behind."""
    proc = await asyncio.create_subprocess_exec(
        *gitenv.git_argv(args, git_dir=git_dir),
        cwd=cwd,
        env=gitenv.git_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    result = _Result(proc.returncode or 0, out, err.decode("utf-8", "replace"))
    if check and result.returncode != 0:
        raise GitError(args, result.returncode, result.stderr)
    return result


@contextlib.asynccontextmanager
async def _file_lock(path: Path, *, exclusive: bool, poll: float = 0.05) -> AsyncIterator[None]:
    """flock(2) across processes sharing the data dir.

    Polled with LOCK_NB instead of blocking in a thread: a cancelled waiter then simply
    stops polling, where a thread blocked in flock would take the lock later and keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_tree(path: Path) -> None:
    """Remove a tree even where a build left read-only directories behind; never follows
    a link (see build/safe_remove.py)."""
    safe_remove.remove_tree(path)


# ---------------------------------------------------------------------------- mirrors


class Mirrors:
    """The bare mirrors under ``root`` and the working trees made from them.

    ``attempts``/``backoff_seconds``/``backoff_max_seconds``: how a failing fetch is
    retried (``BuildConfig.fetch_attempts``). ``fetch_timeout``: one fetch attempt's limit.
    """

    def __init__(
        self,
        root: Path,
        *,
        attempts: int = 3,
        backoff_seconds: float = 1.0,
        backoff_max_seconds: float = 30.0,
        fetch_timeout: float = 900.0,
        checkout_workers: int = 0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.root = Path(root).absolute()
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.fetch_timeout = fetch_timeout
        #: git's checkout.workers (0: one per core); parallel checkout of big trees.
        self.checkout_workers = checkout_workers
        # Per event loop: asyncio locks and tasks must not be shared between loops.
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    # -- where mirrors live

    def mirror_path(self, repo_url: str | Path) -> Path:
        """``https://github.com/Owner/Name.git`` -> ``<root>/github.com/owner/name.git``.

        Components that are not plain names (and local paths) get a hash, so no URL can
        escape ``root`` or make two different repositories share a mirror.
        """
        source = str(repo_url)
        if _is_local(repo_url):
            local = Path(source.removeprefix("file://")).absolute()
            digest = hashlib.sha256(str(local).encode()).hexdigest()[:12]
            name = _safe_name(local.name.removesuffix(".git") or "repo")
            return self.root / "local" / f"{name}-{digest}.git"
        clean, _ = _split_credentials(source)
        host, path = _host_and_path(clean)
        parts = [p for p in path.strip("/").removesuffix(".git").split("/") if p]
        if not parts:
            raise ValueError(f"{repo_url!r}: no repository path in the URL")
        safe = [_safe_name(host.lower())] + [_safe_name(p.lower()) for p in parts]
        return self.root.joinpath(*safe[:-1], safe[-1] + ".git")

    def mirror(self, repo_url: str | Path) -> Mirror:
        """The mirror of ``repo_url`` (it may not exist yet: ``fetch`` creates it)."""
        url = _source_url(repo_url)
        return Mirror(url=_split_credentials(url)[0], path=self.mirror_path(url))

    # -- fetching

    async def fetch(
        self,
        repo_url: str | Path,
        refspecs: Sequence[str],
        *,
        token: str | None = None,
    ) -> Mirror:
        """Create the mirror if needed and fetch ``refspecs`` into ``refs/mirror/``.

        ``refspecs`` are remote refs: ``main``, ``refs/heads/main``, ``pull/7/head``,
        ``refs/pull/7/head`` (or full SHAs, if the server allows fetching them). Fetches of
        one mirror are serialised, in this process and across processes. Raises
        ``RemoteRefNotFound`` at once for a missing ref, ``FetchError`` after the last attempt.
        """
        url, userinfo = _split_credentials(_source_url(repo_url))
        mirror = Mirror(url=url, path=self.mirror_path(url))
        env = _auth_env(url, userinfo, token)
        specs = [_refspec(r) for r in refspecs]
        async with self._exclusive(mirror.path):
            await self._ensure_mirror(mirror)
            await asyncio.to_thread(_restore_mirror, mirror)
            if specs:
                await self._fetch_with_retries(mirror, specs, env)
        return mirror

    async def fetch_pr(
        self, repo_url: str | Path, base_ref: str, pr: int, *, token: str | None = None
    ) -> Mirror:
        """Fetch what a PR job needs: the base branch and ``refs/pull/<pr>/head``."""
        return await self.fetch(repo_url, [base_ref, f"refs/pull/{pr}/head"], token=token)

    def _state(self) -> _LoopState:
        return self._states.setdefault(asyncio.get_running_loop(), _LoopState())

    @contextlib.asynccontextmanager
    async def _exclusive(self, mirror_path: Path) -> AsyncIterator[None]:
        """The mirror to ourselves: in this process first (no polling), then across them."""
        locks = self._state().locks
        async with (
            locks.setdefault(mirror_path, asyncio.Lock()),
            _file_lock(_lock_file(mirror_path), exclusive=True),
        ):
            yield

    async def _ensure_mirror(self, mirror: Mirror) -> None:
        """``git init --bare`` in a temporary directory, renamed into place when complete.

        Called under the exclusive lock; a half-made mirror from a crash is replaced.
        """
        if (mirror.path / "HEAD").is_file() and (mirror.path / "objects").is_dir():
            return
        mirror.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = mirror.path.with_name(f"{mirror.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            # No template: no sample hooks, no info/ to plant attributes beside.
            await _git("init", "--bare", "--quiet", "--template=", str(tmp))
            # The remote's URL is for people looking (fetch names it); gc runs inside our
            # locked fetch, not after it; the commit-graph speeds up merge-base.
            _write_atomic(tmp / "config", _mirror_config(mirror))
            remove_tree(mirror.path)
            tmp.rename(mirror.path)
        finally:
            remove_tree(tmp)
        _log().info("mirror created", mirror=str(mirror.path), url=mirror.url)

    async def _fetch_with_retries(
        self, mirror: Mirror, specs: list[str], env: Mapping[str, str]
    ) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_seconds, max=self.backoff_max_seconds),
            retry=retry_if_exception(
                lambda e: isinstance(e, FetchError) and not isinstance(e, RemoteRefNotFound)
            ),
            before_sleep=lambda state: _log().warning(
                "fetch failed, retrying",
                url=mirror.url,
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else "",
            ),
            reraise=True,
        )
        attempt_no = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_no = attempt.retry_state.attempt_number
                    await self._fetch_once(mirror, specs, env)
        except FetchError as exc:
            exc.attempts = attempt_no
            raise

    async def _fetch_once(self, mirror: Mirror, specs: list[str], env: Mapping[str, str]) -> None:
        args = ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
        try:
            result = await _git(
                *args,
                mirror.url,
                *specs,
                git_dir=mirror.path,
                env=env,
                check=False,
                time_limit=self.fetch_timeout,
            )
        except TimeoutError:
            raise FetchError(mirror.url, f"timed out after {self.fetch_timeout:.0f} s") from None
        if result.returncode == 0:
            return
        if _MISSING_REMOTE_REF.search(result.stderr):
            raise RemoteRefNotFound(mirror.url, result.stderr)
        raise FetchError(mirror.url, result.stderr)

    # -- resolving

    async def resolve(self, mirror: Mirror, ref: str) -> str:
        """The SHA of a fetched ref (``main``, ``pull/7/head``...) or a commit in the mirror."""
        name = ref if is_sha(ref) else mirror_ref(ref)
        result = await _git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"{name}^{{commit}}",
            git_dir=mirror.path,
            check=False,
        )
        if result.returncode != 0:
            what = f"commit {ref}" if is_sha(ref) else f"ref {remote_ref(ref)}"
            raise RefNotFound(f"{what} is not in the mirror of {mirror.url}")
        return result.text

    async def has_commit(self, mirror: Mirror, sha: str) -> bool:
        result = await _git("cat-file", "-e", f"{sha}^{{commit}}", git_dir=mirror.path, check=False)
        return result.returncode == 0

    async def prepare_ref(
        self, repo_url_or_path: str | Path, ref: str, *, token: str | None = None
    ) -> ResolvedRef:
        """Fetch ``ref`` (a branch, tag, ``refs/pull/N/head`` or a SHA) and pin its SHA.

        For ``layerbot run`` with a local directory or a URL.
        """
        if is_sha(ref):
            return await self._prepare_sha(repo_url_or_path, ref, token)
        try:
            mirror = await self.fetch(repo_url_or_path, [ref], token=token)
            full = remote_ref(ref)
        except RemoteRefNotFound:
            if ref.startswith(("refs/", "pull/")):
                raise
            # Not a branch: a tag of that name, the other usual thing to build.
            full = f"refs/tags/{ref}"
            mirror = await self.fetch(repo_url_or_path, [full], token=token)
        return ResolvedRef(mirror, full, await self.resolve(mirror, full))

    async def _prepare_sha(
        self, repo_url_or_path: str | Path, sha: str, token: str | None
    ) -> ResolvedRef:
        # The remote's default branch first: most SHAs asked for are on it, and every
        # server can serve it (fetching by SHA needs uploadpack.allowAnySHA1InWant).
        mirror = await self.fetch(repo_url_or_path, ["HEAD"], token=token)
        if not await self.has_commit(mirror, sha):
            mirror = await self.fetch(repo_url_or_path, ["refs/heads/*"], token=token)
        if not await self.has_commit(mirror, sha):
            with contextlib.suppress(FetchError):
                await self.fetch(repo_url_or_path, [sha], token=token)
        if not await self.has_commit(mirror, sha):
            raise RefNotFound(f"commit {sha} is not on any branch of {mirror.url}")
        return ResolvedRef(mirror, sha, sha)

    # -- working trees

    async def prepare(self, mirror: Mirror, head_sha: str, base_ref: str, dest: Path) -> Prepared:
        """A working tree at ``dest`` for exactly ``head_sha`` merged onto ``base_ref``'s tip.

        ``head_sha`` must be the full SHA pinned when the command was handled (never a ref:
        a ref may have moved since). ``base_ref`` must have been fetched: its tip as of the
        last fetch is used (``fetch_pr`` just before). ``dest`` must not exist or be empty.
        Raises ``RefNotFound`` (head or base missing), ``MergeConflict`` (nothing is left
        at ``dest``), ``WorkspaceError``/``GitError`` otherwise.
        """
        if not is_sha(head_sha):
            raise ValueError(f"head_sha must be a full commit SHA, got {head_sha!r}")
        dest = _usable_dest(dest)
        problems = await asyncio.to_thread(_mirror_problems, mirror)
        if problems:
            raise MirrorTampered(
                f"the mirror {mirror.path} was changed outside the bot ({'; '.join(problems)}); "
                "it is repaired at the next fetch"
            )
        head, base = await self._tips(mirror, head_sha, base_ref)
        merged_sha = await self._merged(mirror, head, base, base_ref)
        await self._make_tree(mirror, merged_sha, dest)
        _log().info(
            "tree prepared", path=str(dest), head=head.sha, base=base.sha, merged=merged_sha
        )
        return Prepared(head_sha=head.sha, base_sha=base.sha, merged_sha=merged_sha, path=dest)

    async def _tips(self, mirror: Mirror, head_sha: str, base_ref: str) -> tuple[_Commit, _Commit]:
        """Head and the base tip with their commit times: both checked in one git call."""
        revs = (f"{head_sha}^{{commit}}", f"{mirror_ref(base_ref)}^{{commit}}")
        result = await _git(
            "show", "-s", "--format=%H %ct", *revs, "--", git_dir=mirror.path, check=False
        )
        lines = result.text.splitlines()
        if result.returncode == 0 and len(lines) in (1, 2):
            # One line: both name the same commit (git shows a commit once).
            head, base = (line.split() for line in (lines[0], lines[-1]))
            return _Commit(head[0], int(head[1])), _Commit(base[0], int(base[1]))
        # Which one is missing decides the message.
        if not await self.has_commit(mirror, head_sha):
            raise RefNotFound(
                f"commit {head_sha} is not in the mirror of {mirror.url}: it was never fetched, "
                "or the PR was force-pushed and the commit is gone; ask for a new build"
            )
        await self.resolve(mirror, base_ref)  # raises RefNotFound naming the ref
        raise GitError(["show", *revs], result.returncode, result.stderr)

    async def _merged(self, mirror: Mirror, head: _Commit, base: _Commit, base_ref: str) -> str:
        """The merge of head onto base, computed once for the jobs that ask at the same time.

        Jobs of one command (one per target) share head and base; they await the same
        computation instead of each running merge-tree and commit-tree.
        """
        key = (mirror.path, base.sha, head.sha)
        return await _shared(
            self._state().merges, key, lambda: self._merge(mirror, head, base, base_ref)
        )

    async def _merge(self, mirror: Mirror, head: _Commit, base: _Commit, base_ref: str) -> str:
        """The commit to check out: head itself if it contains base, else a merge commit."""
        if base.sha == head.sha or await self._is_ancestor(mirror, base.sha, head.sha):
            return head.sha
        result = await _git(
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            base.sha,
            head.sha,
            git_dir=mirror.path,
            check=False,
        )
        fields = result.stdout.decode("utf-8", "surrogateescape").split("\0")
        tree = fields[0].strip()
        if result.returncode == 1 and is_sha(tree):
            files = list(dict.fromkeys(f for f in fields[1:] if f))
            raise MergeConflict(head.sha, base_ref, base.sha, files)
        if result.returncode != 0 or not is_sha(tree):
            raise GitError(["merge-tree", base.sha, head.sha], result.returncode, result.stderr)
        return await self._commit_merge(mirror, tree, head, base, base_ref)

    async def _commit_merge(
        self, mirror: Mirror, tree: str, head: _Commit, base: _Commit, base_ref: str
    ) -> str:
        # Fixed identity, and the later parent's date: the same inputs always give the same
        # merged SHA, and git never asks who is committing.
        when = f"{max(head.time, base.time)} +0000"
        name, email = MERGE_IDENTITY
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_AUTHOR_DATE": when,
            "GIT_COMMITTER_DATE": when,
        }
        message = f"Merge {head.sha} into {base_ref} ({base.sha})"
        parents = ["-p", base.sha, "-p", head.sha]
        result = await _git(
            "commit-tree", tree, *parents, "-m", message, git_dir=mirror.path, env=env
        )
        return result.text

    async def _is_ancestor(self, mirror: Mirror, ancestor: str, descendant: str) -> bool:
        result = await _git(
            "merge-base", "--is-ancestor", ancestor, descendant, git_dir=mirror.path, check=False
        )
        if result.returncode not in (0, 1):
            raise GitError(["merge-base", ancestor, descendant], result.returncode, result.stderr)
        return result.returncode == 0

    async def _make_tree(self, mirror: Mirror, commit: str, dest: Path) -> None:
        """``dest/.git`` written by the bot (borrowing the mirror's objects), then filled."""
        existed = _make_parent(dest)
        try:
            await asyncio.to_thread(_write_job_repo, mirror, commit, dest)
            workers = f"checkout.workers={self.checkout_workers}"
            await _git(
                "-c", workers, f"--work-tree={dest}", "read-tree", "--reset", "-u", "HEAD",
                git_dir=dest / ".git", cwd=dest,
            )
        except BaseException:
            # No half-made tree.
            await asyncio.shield(asyncio.to_thread(_empty_or_remove, dest, existed))
            raise

    async def diff(self, mirror: Mirror, base_sha: str, head_sha: str) -> bytes:
        """What the PR changes, as GitHub shows it: from the merge base to head.

        EESSI's build scripts read it from ``<pr>.diff`` in the job directory. The jobs of
        one command ask at the same time: one git computes it for all.
        """
        key = (mirror.path, base_sha, head_sha)
        return await _shared(
            self._state().diffs, key, lambda: self._diff(mirror, base_sha, head_sha)
        )

    async def _diff(self, mirror: Mirror, base_sha: str, head_sha: str) -> bytes:
        result = await _git(
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            f"{base_sha}...{head_sha}",
            git_dir=mirror.path,
        )
        return result.stdout

    # -- clean-up

    async def remove(self, dest: Path) -> None:
        """Delete a working tree (whatever a job left in it); no git runs in it.

        A tree made by an older layerbot (a ``git worktree`` of the mirror) is forgotten by
        the mirror at the next ``prune``.
        """
        dest = await asyncio.to_thread(Path(dest).absolute)
        if dest == Path(dest.anchor) or self.root.is_relative_to(dest):
            raise WorkspaceError(f"refusing to remove {dest}: it holds the mirrors")
        await asyncio.to_thread(remove_tree, dest)

    async def prune(self) -> int:
        """Forget worktrees of older layerbot versions whose directories are gone.

        Also removes leftovers of mirror creations interrupted by a crash. Returns the
        number of mirrors looked at.
        """
        mirrors, leftovers = await asyncio.to_thread(_scan_root, self.root)
        for mirror_dir in mirrors:
            async with self._exclusive(mirror_dir):
                await _git("worktree", "prune", git_dir=mirror_dir, check=False)
        for leftover in leftovers:
            mirror_path = leftover.with_name(leftover.name.partition(".tmp-")[0])
            # Under the lock: a creation in progress holds it and must not lose its dir.
            async with self._exclusive(mirror_path):
                await asyncio.to_thread(remove_tree, leftover)
        return len(mirrors)


def _scan_root(root: Path) -> tuple[list[Path], list[Path]]:
    """Mirrors (``*.git`` with a HEAD) and creation leftovers, not descending into either."""
    mirrors: list[Path] = []
    leftovers: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root):
        for name in list(dirnames):
            path = Path(dirpath) / name
            if ".git.tmp-" in name:
                leftovers.append(path)
                dirnames.remove(name)
            elif name.endswith(".git"):
                if (path / "HEAD").is_file():
                    mirrors.append(path)
                dirnames.remove(name)
    return sorted(mirrors), leftovers


def _refspec(ref: str) -> str:
    """A forced refspec into the namespace (globs too: refs/heads/* -> .../heads/*).

    A SHA gets a ref of its own (``refs/mirror/commits/<sha>``) so that the mirror's gc
    keeps it until it is prepared.
    """
    full = remote_ref(ref)
    if is_sha(full):
        return f"+{full}:{MIRROR_NAMESPACE}commits/{full}"
    return f"+{full}:{mirror_ref(full)}"


# Small synchronous file-system steps, kept out of the coroutines: each is a few stat calls.


def _usable_dest(dest: Path) -> Path:
    dest = Path(dest).absolute()
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise WorkspaceError(f"{dest} already exists and is not an empty directory")
    return dest


def _make_parent(dest: Path) -> bool:
    """Create dest's parents; tell whether dest itself (an empty directory) was there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.exists()


def _empty_or_remove(dest: Path, keep_dir: bool) -> None:
    if not keep_dir:
        remove_tree(dest)
    elif dest.is_dir():
        for child in list(dest.iterdir()):
            remove_tree(child)


def _mirror_config(mirror: Mirror) -> bytes:
    return _MIRROR_CONFIG.format(url=_config_value(mirror.url)).encode()


def _config_value(value: str) -> str:
    """A value for a git config file: quoted, so no character of a URL can start a line."""
    if any(c in value for c in "\n\r\0"):
        raise WorkspaceError(f"{value!r} cannot be written to a git config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


#: Paths in a mirror the bot (and git's fetch and gc) never write; anything there was
#: planted: attributes and grafts (``info/``), hooks, objects or worktree config from elsewhere.
_FOREIGN = (
    "info",
    "hooks",
    "objects/info/alternates",
    "objects/info/http-alternates",
    "commondir",
    "config.worktree",
)


def _mirror_problems(mirror: Mirror) -> list[str]:
    """What in the mirror the bot did not write: config entries, attributes, hooks."""
    problems = []
    try:
        if (mirror.path / "config").read_bytes() != _mirror_config(mirror):
            problems.append("its config differs from the one the bot wrote")
    except OSError as exc:
        problems.append(f"its config cannot be read ({exc.strerror})")
    problems.extend(f"{name} exists" for name in _FOREIGN if os.path.lexists(mirror.path / name))
    return problems


def _restore_mirror(mirror: Mirror) -> None:
    """Back to what the bot wrote: its config, and no attributes, hooks or alternates.

    Under the mirror's lock, before a fetch (the one git call that reads much of a
    repository's config: URL rewrites, proxies, helpers). Mirrors of older versions (made
    with ``git config`` calls and sample hooks) are rewritten once.
    """
    problems = _mirror_problems(mirror)
    if not problems:
        return
    _log().warning("mirror repaired", mirror=str(mirror.path), problems=problems)
    _write_atomic(mirror.path / "config", _mirror_config(mirror))
    for name in _FOREIGN:
        remove_tree(mirror.path / name)


def _write_job_repo(mirror: Mirror, commit: str, dest: Path) -> None:
    """A repository of the job's own at ``dest/.git``: the bot writes every file of it.

    Its objects are the mirror's, borrowed through ``objects/info/alternates`` (read
    only: git never writes into an alternate); its new objects, refs, index and config
    are its own. No hooks, no ``info/``: nothing runs when the bot fills the tree.
    """
    git_dir = dest / ".git"
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (git_dir / sub).mkdir(parents=True)
    (git_dir / "HEAD").write_text(f"{commit}\n")
    (git_dir / "config").write_text(_JOB_CONFIG.format(url=_config_value(mirror.url)))
    (git_dir / "objects/info/alternates").write_text(f"{mirror.path.absolute()}/objects\n")


def _source_url(source: str | Path) -> str:
    """Local sources as absolute paths (git's local transport), URLs unchanged."""
    if _is_local(source):
        return str(Path(str(source).removeprefix("file://")).absolute())
    return str(source)


def _host_and_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return parts.hostname or parts.netloc, parts.path
    match = _SCP_LIKE.match(url)
    if match:
        return match["host"], match["path"]
    raise ValueError(f"{url!r} is neither a URL nor a local path")


def _safe_name(component: str) -> str:
    """A path component that is a plain name, else a readable part plus a hash."""
    if _SAFE_COMPONENT.match(component):
        return component
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", component).strip(".-")[:40] or "x"
    digest = hashlib.sha256(component.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"
