"""Mirrors and exact-commit working trees, against real git repositories in tmp dirs.

The "origin" plays GitHub: a ``main`` branch and PR refs ``refs/pull/N/head`` made with
``git update-ref``, exactly as GitHub exposes them (no branch of that name).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from layerbot.build.workspace import (
    FetchError,
    MergeConflict,
    Mirror,
    Mirrors,
    Prepared,
    RefNotFound,
    RemoteRefNotFound,
    WorkspaceError,
    _auth_env,
    _file_lock,
    github_url,
)

T = TypeVar("T")

ENV = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@example.org",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@example.org",
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


class Origin:
    """A repository standing in for GitHub."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        git(path, "config", "uploadpack.allowAnySHA1InWant", "true")

    def commit(self, files: dict[str, str], message: str = "change", branch: str = "main") -> str:
        if git(self.path, "symbolic-ref", "--short", "HEAD") != branch:
            git(self.path, "checkout", "-q", branch)
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def open_pr(self, number: int, files: dict[str, str], start: str = "main") -> str:
        """Commit on a side line and publish it only as refs/pull/<number>/head."""
        git(self.path, "checkout", "-q", "-B", f"tmp-pr-{number}", start)
        sha = self.commit(files, f"PR {number}", branch=f"tmp-pr-{number}")
        self.set_pr(number, sha)
        git(self.path, "checkout", "-q", "main")
        git(self.path, "branch", "-q", "-D", f"tmp-pr-{number}")
        return sha

    def push_to_pr(self, number: int, files: dict[str, str]) -> str:
        head = git(self.path, "rev-parse", f"refs/pull/{number}/head")
        git(self.path, "checkout", "-q", "--detach", head)
        for name, text in files.items():
            (self.path / name).write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", "push after the command")
        sha = git(self.path, "rev-parse", "HEAD")
        self.set_pr(number, sha)
        git(self.path, "checkout", "-q", "main")
        return sha

    def set_pr(self, number: int, sha: str) -> None:
        git(self.path, "update-ref", f"refs/pull/{number}/head", sha)


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    repo = Origin(tmp_path / "origin")
    repo.commit({"README": "hello\n", "src/a.txt": "a\n", "src/b.txt": "b\n"}, "initial")
    return repo


@pytest.fixture
def mirrors(tmp_path: Path) -> Mirrors:
    return Mirrors(tmp_path / "mirrors", attempts=3, backoff_seconds=0.01)


def prepare_pr(
    mirrors: Mirrors, origin: Origin, pr: int, head: str, dest: Path, base: str = "main"
) -> Prepared:
    async def go() -> Prepared:
        mirror = await mirrors.fetch_pr(origin.path, base, pr)
        return await mirrors.prepare(mirror, head, base, dest)

    return run(go())


def sha(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref)


def worktrees(mirror: Path) -> list[str]:
    out = git(mirror, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def count_objects(mirror: Path) -> dict[str, int]:
    out = git(mirror, "count-objects", "-v")
    pairs = (line.split(": ") for line in out.splitlines())
    return {k: int(v) for k, v in pairs if v.isdigit()}


# ---------------------------------------------------------------------------- fetching


def test_first_fetch_creates_mirror_then_fetches_incrementally(
    origin: Origin, mirrors: Mirrors
) -> None:
    # Enough history that git keeps the first fetch as a pack (over fetch.unpackLimit).
    for i in range(60):
        origin.commit({f"many/file{i}.txt": f"{i}\n"}, f"commit {i}")
    mirror = run(mirrors.fetch(origin.path, ["main"]))

    assert (mirror.path / "HEAD").is_file()
    assert git(mirror.path, "rev-parse", "--is-bare-repository") == "true"
    assert sha(mirror.path, "refs/mirror/heads/main") == sha(origin.path, "main")
    before = count_objects(mirror.path)
    assert before["in-pack"] > 100

    new_tip = origin.commit({"many/file0.txt": "changed\n"}, "one more")
    run(mirrors.fetch(origin.path, ["main"]))
    after = count_objects(mirror.path)

    assert git(mirror.path, "rev-parse", "refs/mirror/heads/main") == new_tip
    # Only the new commit, its two trees and one blob came over; nothing was re-downloaded.
    assert after["in-pack"] == before["in-pack"]
    assert after["count"] - before["count"] == 4


def test_fetch_only_takes_what_is_asked(origin: Origin, mirrors: Mirrors) -> None:
    origin.open_pr(1, {"pr1.txt": "1\n"})
    origin.open_pr(2, {"pr2.txt": "2\n"})
    git(origin.path, "tag", "v1")
    mirror = run(mirrors.fetch_pr(origin.path, "main", 1))
    refs = git(mirror.path, "for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(refs) == ["refs/mirror/heads/main", "refs/mirror/pull/1/head"]


def test_missing_pr_ref_raises_with_gits_message_and_is_not_retried(
    origin: Origin, mirrors: Mirrors
) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteRefNotFound) as caught:
        run(mirrors.fetch_pr(origin.path, "main", 99))
    assert "couldn't find remote ref refs/pull/99/head" in caught.value.stderr
    assert isinstance(caught.value, FetchError) and isinstance(caught.value, RefNotFound)
    assert caught.value.attempts == 1
    assert time.monotonic() - started < 5


def test_fetch_failures_are_retried_then_reported(origin: Origin, tmp_path: Path) -> None:
    mirrors = Mirrors(tmp_path / "mirrors", attempts=3, backoff_seconds=0.01)
    away = tmp_path / "away"
    origin.path.rename(away)  # the origin is temporarily unreachable
    with pytest.raises(FetchError) as caught:
        run(mirrors.fetch(origin.path, ["main"]))
    assert caught.value.attempts == 3
    assert "does not appear to be a git repository" in caught.value.stderr
    assert not isinstance(caught.value, RefNotFound)


def test_fetch_succeeds_when_the_origin_comes_back_during_retries(
    origin: Origin, tmp_path: Path
) -> None:
    mirrors = Mirrors(tmp_path / "mirrors", attempts=5, backoff_seconds=0.2)
    away = tmp_path / "away"
    origin.path.rename(away)

    async def go() -> Mirror:
        async def restore() -> None:
            await asyncio.sleep(0.3)
            away.rename(origin.path)

        restoring = asyncio.create_task(restore())
        mirror = await mirrors.fetch(origin.path, ["main"])
        await restoring
        return mirror

    mirror = run(go())
    assert sha(mirror.path, "refs/mirror/heads/main") == sha(origin.path, "main")


def test_concurrent_fetches_of_one_mirror_are_serialised(origin: Origin, mirrors: Mirrors) -> None:
    head = origin.open_pr(1, {"pr.txt": "x\n"})

    async def go() -> list[Mirror]:
        return await asyncio.gather(*(mirrors.fetch_pr(origin.path, "main", 1) for _ in range(5)))

    results = run(go())
    assert len({m.path for m in results}) == 1
    assert git(results[0].path, "rev-parse", "refs/mirror/pull/1/head") == head


def test_file_lock_excludes_another_holder(tmp_path: Path) -> None:
    lock = tmp_path / "m.git.lock"
    order: list[str] = []

    async def holder() -> None:
        async with _file_lock(lock, exclusive=True):
            order.append("a-in")
            await asyncio.sleep(0.2)
            order.append("a-out")

    async def waiter() -> None:
        await asyncio.sleep(0.05)
        async with _file_lock(lock, exclusive=True, poll=0.01):
            order.append("b-in")

    async def go() -> None:
        await asyncio.gather(holder(), waiter())

    run(go())
    assert order == ["a-in", "a-out", "b-in"]


def test_credentials_stay_out_of_the_mirror_and_the_error(tmp_path: Path) -> None:
    mirrors = Mirrors(tmp_path / "mirrors", attempts=1)
    url = "https://x-access-token:SeCrEt123@127.0.0.1:9/owner/name.git"
    with pytest.raises(FetchError) as caught:
        run(mirrors.fetch(url, ["main"], token="ToKeN456"))
    mirror_dir = tmp_path / "mirrors" / "127.0.0.1" / "owner" / "name.git"
    assert caught.value.url == "https://127.0.0.1:9/owner/name.git"
    assert "SeCrEt123" not in str(caught.value) and "ToKeN456" not in str(caught.value)
    config = (mirror_dir / "config").read_text()
    assert "https://127.0.0.1:9/owner/name.git" in config
    assert "SeCrEt123" not in config and "ToKeN456" not in config


def test_mirror_paths_are_safe(tmp_path: Path) -> None:
    mirrors = Mirrors(tmp_path / "m")
    root = mirrors.root
    assert mirrors.mirror_path("https://github.com/EESSI/Software-Layer.git") == (
        root / "github.com" / "eessi" / "software-layer.git"
    )
    # The same repository by ssh, scp-like syntax, or with credentials: one mirror.
    for url in (
        "git@github.com:EESSI/software-layer.git",
        "ssh://git@github.com/EESSI/software-layer",
        "https://user:pw@github.com/EESSI/software-layer",
    ):
        assert mirrors.mirror_path(url) == root / "github.com" / "eessi" / "software-layer.git"
    for hostile in ("https://github.com/../../etc/passwd", "https://github.com/a/.git"):
        path = mirrors.mirror_path(hostile)
        assert path.resolve().is_relative_to(root) and ".." not in path.parts
    local = mirrors.mirror_path(tmp_path / "some" / "repo")
    assert local.parent == root / "local" and local.name.startswith("repo-")
    assert github_url("EESSI/software-layer") == "https://github.com/EESSI/software-layer.git"
    with pytest.raises(ValueError):
        github_url("../etc")


# ---------------------------------------------------------------------------- preparing


def test_prepare_builds_the_pinned_head_even_after_a_push(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(7, {"src/a.txt": "a from the PR\n"})
    run(mirrors.fetch_pr(origin.path, "main", 7))  # the command is handled: head recorded
    origin.push_to_pr(7, {"src/a.txt": "pushed later\n"})

    prepared = prepare_pr(mirrors, origin, 7, head, tmp_path / "job-1")

    assert prepared.head_sha == head
    assert (prepared.path / "src/a.txt").read_text() == "a from the PR\n"
    assert git(prepared.path, "rev-parse", "HEAD") == prepared.merged_sha == head
    assert prepared.fast_forward


def test_prepare_merges_onto_the_advanced_base(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(3, {"src/a.txt": "a from the PR\n"})
    base_tip = origin.commit({"src/b.txt": "b on main\n"}, "main moves on")

    prepared = prepare_pr(mirrors, origin, 3, head, tmp_path / "job-3")

    assert prepared.base_sha == base_tip
    assert prepared.merged_sha not in (head, base_tip)
    assert (prepared.path / "src/a.txt").read_text() == "a from the PR\n"
    assert (prepared.path / "src/b.txt").read_text() == "b on main\n"
    parents = git(prepared.path, "rev-list", "--parents", "-n1", "HEAD").split()[1:]
    assert parents == [base_tip, head]
    assert git(prepared.path, "log", "-1", "--format=%cn <%ce>") == "layerbot <layerbot@localhost>"
    assert git(prepared.path, "status", "--porcelain") == ""
    # The same base and head give the same merge commit: the SHA means the content.
    again = prepare_pr(mirrors, origin, 3, head, tmp_path / "job-4")
    assert again.merged_sha == prepared.merged_sha


def test_merge_conflict_lists_files_and_leaves_nothing(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(5, {"src/a.txt": "PR version\n", "README": "PR readme\n", "new": "n\n"})
    origin.commit({"src/a.txt": "main version\n", "README": "main readme\n"}, "conflicting")
    dest = tmp_path / "jobs" / "job-5"

    with pytest.raises(MergeConflict) as caught:
        prepare_pr(mirrors, origin, 5, head, dest)

    assert sorted(caught.value.files) == ["README", "src/a.txt"]
    assert "src/a.txt" in str(caught.value)
    assert not dest.exists()
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def test_head_missing_from_the_mirror_raises_ref_not_found(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    gone = origin.open_pr(8, {"x": "1\n"})
    origin.set_pr(8, origin.open_pr(9, {"y": "2\n"}))  # force-pushed before any fetch
    with pytest.raises(RefNotFound, match="force-pushed"):
        prepare_pr(mirrors, origin, 8, gone, tmp_path / "job-8")
    assert not (tmp_path / "job-8").exists()


def test_prepare_refuses_refs_as_head_and_busy_destinations(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"x": "1\n"})
    with pytest.raises(ValueError, match="full commit SHA"):
        prepare_pr(mirrors, origin, 1, "refs/pull/1/head", tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="not an empty directory"):
        prepare_pr(mirrors, origin, 1, head, busy)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_pr(mirrors, origin, 1, head, empty).path == empty


def test_missing_base_branch_raises_ref_not_found(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"x": "1\n"})

    async def go() -> None:
        mirror = await mirrors.fetch(origin.path, ["refs/pull/1/head"])
        await mirrors.prepare(mirror, head, "develop", tmp_path / "job")

    with pytest.raises(RefNotFound, match="refs/heads/develop"):
        run(go())


def test_parallel_prepares_from_one_mirror(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    heads = {n: origin.open_pr(n, {f"pr{n}.txt": f"{n}\n"}) for n in (1, 2, 3, 4)}
    origin.commit({"src/b.txt": "base moved\n"}, "main moves on")

    async def go() -> list[Prepared]:
        mirror = await mirrors.fetch(origin.path, ["main", *(f"pull/{n}/head" for n in heads)])
        return await asyncio.gather(
            *(mirrors.prepare(mirror, h, "main", tmp_path / f"job-{n}") for n, h in heads.items())
        )

    results = run(go())
    for (n, head), prepared in zip(heads.items(), results, strict=True):
        assert prepared.head_sha == head
        assert (prepared.path / f"pr{n}.txt").read_text() == f"{n}\n"
        assert (prepared.path / "src/b.txt").read_text() == "base moved\n"
    mirror = mirrors.mirror(origin.path).path
    assert worktrees(mirror) == [str(mirror)]  # nothing of the jobs is recorded in the mirror


def test_working_tree_holds_no_secret_and_no_remote(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"x": "1\n"})
    prepared = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")
    config = git(prepared.path, "config", "--list")
    assert "extraheader" not in config.lower()
    remotes = git(prepared.path, "remote", "-v").splitlines()
    assert remotes == [f"origin\t{origin.path} (fetch)", f"origin\t{origin.path} (push)"]
    # A repository of its own that borrows the mirror's objects: no copy, no link back.
    git_dir = prepared.path / ".git"
    assert git_dir.is_dir() and not (git_dir / "hooks").exists()
    alternates = (git_dir / "objects/info/alternates").read_text().split()
    assert alternates == [f"{mirrors.mirror(origin.path).path}/objects"]
    assert not list((git_dir / "objects/pack").iterdir())


def test_diff_is_what_the_pr_changes(origin: Origin, mirrors: Mirrors, tmp_path: Path) -> None:
    head = origin.open_pr(1, {"easystacks/new.yml": "easyconfigs: []\n"})
    origin.commit({"src/b.txt": "unrelated main change\n"})
    prepared = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")

    diff = run(mirrors.diff(mirrors.mirror(origin.path), prepared.base_sha, head)).decode()
    assert "+++ b/easystacks/new.yml" in diff
    assert "src/b.txt" not in diff


# ---------------------------------------------------------------------------- prepare_ref


def test_prepare_ref_resolves_branches_pr_refs_tags_and_shas(
    origin: Origin, mirrors: Mirrors
) -> None:
    main = git(origin.path, "rev-parse", "main")
    pr_head = origin.open_pr(4, {"x": "1\n"})
    git(origin.path, "tag", "v1.0", main)
    git(origin.path, "branch", "feature/x", main)
    side = origin.open_pr(6, {"y": "2\n"})  # on no branch: fetched by SHA

    assert run(mirrors.prepare_ref(origin.path, "main")).sha == main
    assert run(mirrors.prepare_ref(origin.path, "refs/pull/4/head")).sha == pr_head
    assert run(mirrors.prepare_ref(str(origin.path), "pull/4/head")).sha == pr_head
    assert run(mirrors.prepare_ref(origin.path, "feature/x")).sha == main
    tag = run(mirrors.prepare_ref(origin.path, "v1.0"))
    assert (tag.sha, tag.ref) == (main, "refs/tags/v1.0")
    assert run(mirrors.prepare_ref(origin.path, pr_head)).sha == pr_head
    assert run(mirrors.prepare_ref(origin.path, side)).sha == side
    with pytest.raises(RemoteRefNotFound):
        run(mirrors.prepare_ref(origin.path, "no-such-branch"))
    with pytest.raises(RefNotFound):
        run(mirrors.prepare_ref(origin.path, "0" * 40))


def test_prepare_ref_then_prepare_from_a_local_directory(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(2, {"x": "1\n"})

    async def go() -> Prepared:
        resolved = await mirrors.prepare_ref(origin.path, "refs/pull/2/head")
        await mirrors.fetch(origin.path, ["main"])
        return await mirrors.prepare(resolved.mirror, resolved.sha, "main", tmp_path / "run")

    prepared = run(go())
    assert prepared.head_sha == head and (prepared.path / "x").read_text() == "1\n"


# ---------------------------------------------------------------------------- clean-up


def test_remove_and_prune(origin: Origin, mirrors: Mirrors, tmp_path: Path) -> None:
    head = origin.open_pr(1, {"x": "1\n"})
    first = prepare_pr(mirrors, origin, 1, head, tmp_path / "job-1")
    second = prepare_pr(mirrors, origin, 1, head, tmp_path / "job-2")
    mirror = mirrors.mirror(origin.path).path
    (first.path / "build-output").mkdir()
    (first.path / "build-output" / "ro").write_text("x")
    os.chmod(first.path / "build-output", 0o500)  # builds leave read-only dirs behind

    run(mirrors.remove(first.path))
    assert not first.path.exists()

    shutil.rmtree(second.path)  # e.g. archived: nothing of it is left in the mirror
    assert run(mirrors.prune()) == 1
    assert worktrees(mirror) == [str(mirror)]


def test_prepare_again_where_a_tree_was_deleted_by_hand(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"x": "1\n"})
    first = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")
    shutil.rmtree(first.path)  # e.g. a crash before the job was recorded; a retry follows
    again = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")
    assert (again.path / "x").read_text() == "1\n"


def test_many_parallel_prepares_with_clashing_worktree_names(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    # git 2.39's concurrent `worktree add` reads other half-written worktree records and
    # dies ("failed to read .../commondir"); same basenames make git pick names too.
    head = origin.open_pr(1, {"x": "1\n"})
    origin.commit({"src/b.txt": "base moved\n"})
    dests = [tmp_path / f"run-{i}" / "job" for i in range(8)]

    async def go() -> list[Prepared]:
        mirror = await mirrors.fetch_pr(origin.path, "main", 1)
        prepares = asyncio.gather(*(mirrors.prepare(mirror, head, "main", d) for d in dests))
        fetch_again = mirrors.fetch_pr(origin.path, "main", 1)  # a fetch in the middle
        results, _ = await asyncio.gather(prepares, fetch_again)
        return results

    for prepared in run(go()):
        assert (prepared.path / "x").read_text() == "1\n"
        assert (prepared.path / "src/b.txt").read_text() == "base moved\n"
        assert git(prepared.path, "status", "--porcelain") == ""


def test_parallel_jobs_share_one_merge_and_one_conflict(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    clean = origin.open_pr(1, {"x": "1\n"})
    clash = origin.open_pr(2, {"src/a.txt": "PR\n"})
    origin.commit({"src/a.txt": "main\n"})

    async def go(head: str, name: str) -> list[Prepared | BaseException]:
        mirror = await mirrors.fetch(origin.path, ["main", "pull/1/head", "pull/2/head"])
        jobs = [mirrors.prepare(mirror, head, "main", tmp_path / f"{name}-{i}") for i in range(4)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    merged = {p.merged_sha for p in run(go(clean, "ok")) if isinstance(p, Prepared)}
    assert len(merged) == 1
    failures = run(go(clash, "clash"))
    assert all(isinstance(f, MergeConflict) and f.files == ["src/a.txt"] for f in failures)
    assert not list(tmp_path.glob("clash-*"))


def test_remove_refuses_to_delete_the_mirrors(mirrors: Mirrors, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="holds the mirrors"):
        run(mirrors.remove(tmp_path))
    with pytest.raises(WorkspaceError):
        run(mirrors.remove(Path("/")))


def test_run_without_a_branch_uses_the_sha_or_head_as_base(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    # `layerbot run --ref <sha>` (or the remote's HEAD) with no other base: head == base.
    side = origin.open_pr(6, {"y": "2\n"})

    async def go(ref: str, dest: Path) -> Prepared:
        resolved = await mirrors.prepare_ref(origin.path, ref)
        await mirrors.fetch(origin.path, [resolved.ref])  # as the submitter does later
        return await mirrors.prepare(resolved.mirror, resolved.sha, resolved.ref, dest)

    by_sha = run(go(side, tmp_path / "by-sha"))
    assert by_sha.merged_sha == by_sha.base_sha == side
    by_head = run(go("HEAD", tmp_path / "by-head"))
    assert by_head.merged_sha == sha(origin.path, "main")


def test_token_goes_to_git_as_a_host_scoped_header_in_the_environment() -> None:
    env = _auth_env("https://github.com/o/n.git", None, "tok")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46dG9r"
    assert _auth_env("/local/path", None, "tok") == {}


# ---------------------------------------------------------------------------- hostile git


def test_bot_environment_and_home_config_never_reach_git(
    origin: Origin, mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PR asks for a filter; the bot's own environment (a global config in HOME, config
    # passed by environment, a redirected GIT_DIR) would define it. None may count.
    marker = tmp_path / "filter-ran"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[filter "x"]\n\tsmudge = touch {marker}; cat\n')
    attributes = "a* filter=x\nb* filter=y\n"
    head = origin.open_pr(1, {".gitattributes": attributes, "a": "1\n", "b": "2\n"})
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'filter.y.smudge=touch {marker}; cat'")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    prepared = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")
    assert (prepared.path / "a").read_text() == "1\n"
    assert not marker.exists()


def test_a_poisoned_mirror_is_refused_then_repaired_and_runs_nothing(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"a.txt": "mine\n"})
    prepare_pr(mirrors, origin, 1, head, tmp_path / "first")
    mirror = mirrors.mirror(origin.path)
    marker = tmp_path / "attacker-ran"
    # What a job with write access to the mirror did (issue 9, item 4).
    with (mirror.path / "config").open("a") as config:
        config.write(f'[filter "evil"]\n\tsmudge = touch {marker}; cat\n\trequired = true\n')
        config.write(f'[merge "evil"]\n\tdriver = touch {marker}\n')
    (mirror.path / "info").mkdir(exist_ok=True)
    (mirror.path / "info/attributes").write_text("* filter=evil merge=evil\n")
    (mirror.path / "hooks").mkdir(exist_ok=True)
    hook = mirror.path / "hooks/post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)

    async def without_fetch() -> Prepared:
        return await mirrors.prepare(mirror, head, "main", tmp_path / "second")

    with pytest.raises(WorkspaceError, match="changed outside the bot"):
        run(without_fetch())
    prepared = prepare_pr(mirrors, origin, 1, head, tmp_path / "third")  # fetch repairs
    assert (prepared.path / "a.txt").read_text() == "mine\n"
    assert not marker.exists()
    assert "evil" not in (mirror.path / "config").read_text()
    assert not (mirror.path / "info/attributes").exists() and not hook.exists()


def test_the_job_repository_is_all_inside_the_job_dir_and_writes_stay_there(
    origin: Origin, mirrors: Mirrors, tmp_path: Path
) -> None:
    head = origin.open_pr(1, {"a.txt": "mine\n"})
    prepared = prepare_pr(mirrors, origin, 1, head, tmp_path / "job")
    mirror = mirrors.mirror(origin.path).path
    before = sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*"))
    # What a job does with its own checkout: commit, make refs, set config.
    (prepared.path / "a.txt").write_text("changed by the job\n")
    git(prepared.path, "commit", "-qam", "job's own commit")
    git(prepared.path, "tag", "job-tag")
    git(prepared.path, "config", "filter.evil.smudge", "false")
    after = sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*"))
    assert after == before
    assert "evil" not in (mirror / "config").read_text()
