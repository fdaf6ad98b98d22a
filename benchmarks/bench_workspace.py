"""Benchmark: job working trees from a warm mirror vs. EESSI's clone-and-apply per job.

Run: ``uv run python benchmarks/bench_workspace.py [--runs N]``.

The origin repository (5,001 commits, ~2,000 files in 40 directories, a PR ref with three
commits opened 50 commits before the base tip) is generated once with ``git fast-import``
and cached under /var/tmp/layerbot-bench/workspace/. Each measurement prepares the trees of 4 jobs
(one command, four targets) with fresh destination directories:

* warm: ``Mirrors.fetch_pr`` (incremental: nothing new) + 4 ``Mirrors.prepare`` at the
  pinned head merged onto the base tip (concurrently, as the bot does; and one by one);
* anchor (EESSI's way): per job a full ``git clone`` over the pack protocol (``file://``,
  as over the network; a plain path would hard-link the objects), checkout of the base
  branch, the PR's diff (made from the origin, standing in for GitHub's diff endpoint)
  and ``git apply``.

Prints plain ``key=value`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from layerbot import log
from layerbot.build.workspace import Mirror, Mirrors, Prepared

CACHE = Path("/var/tmp/layerbot-bench/workspace")  # shared dir: keep to our own corner
ORIGIN = CACHE / "origin-v1"
MIRRORS = CACHE / "mirrors"
PR = 1
JOBS = 4
COMMITS = 5000
DIRS = 40
FILES_PER_DIR = 50
PR_FORK_BACK = 50  # the PR was opened this many base commits ago

IDENTITY = "bench <bench@example.org>"


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.decode()}")
    return out.stdout.decode().strip()


# ---------------------------------------------------------------------------- the origin


def _text(rng: random.Random, path: str, version: int) -> bytes:
    """A file of roughly 1-2 kB that looks like an easyconfig-ish text file."""
    lines = [f"# {path} version {version}"]
    lines += [f"option_{i} = '{rng.getrandbits(64):016x}'" for i in range(rng.randint(25, 50))]
    return ("\n".join(lines) + "\n").encode()


def _blob(path: str, data: bytes) -> bytes:
    return f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n"


def _commit(ref: str, mark: int, when: int, message: str, parent: str | None) -> bytes:
    msg = message.encode()
    head = f"commit {ref}\nmark :{mark}\ncommitter {IDENTITY} {when} +0000\n"
    head += f"data {len(msg)}\n"
    out = head.encode() + msg + b"\n"
    if parent:
        out += f"from {parent}\n".encode()
    return out


def _stream() -> Iterator[bytes]:
    """Main: an initial tree, then COMMITS commits touching 1-3 files outside easystacks/.

    The PR forks PR_FORK_BACK commits before the tip and touches easystacks/ only, so it
    merges cleanly onto the base tip (as most PRs do).
    """
    rng = random.Random(20261127)
    paths = [f"dir{d:02d}/file{f:03d}.txt" for d in range(DIRS) for f in range(FILES_PER_DIR)]
    stacks = [f"easystacks/stack-{i}.yml" for i in range(10)]
    when = 1_700_000_000
    initial = _commit("refs/heads/main", 1, when, "initial", None)
    yield initial + b"".join(_blob(p, _text(rng, p, 0)) for p in paths + stacks) + b"\n"
    fork = COMMITS - PR_FORK_BACK
    for n in range(1, COMMITS + 1):
        when += 60
        body = b"".join(_blob(p, _text(rng, p, n)) for p in rng.sample(paths, rng.randint(1, 3)))
        yield _commit("refs/heads/main", n + 1, when, f"change {n}", None) + body + b"\n"
        if n == fork:
            yield from _pr_commits(rng, stacks, n + 1, when)


def _pr_commits(
    rng: random.Random, stacks: list[str], fork_mark: int, when: int
) -> Iterator[bytes]:
    for i in range(3):
        mark = 900_000 + i
        parent = f":{fork_mark}" if i == 0 else f":{mark - 1}"
        files = [stacks[i], f"easystacks/new-{i}.yml"]
        body = b"".join(_blob(p, _text(rng, p, 10_000 + i)) for p in files)
        yield _commit(f"refs/pull/{PR}/head", mark, when + i, f"PR commit {i}", parent) + body
        yield b"\n"


def ensure_origin() -> float:
    """Build the origin once (cached); returns the seconds it took (0 if cached)."""
    if (ORIGIN / ".complete").is_file():
        return 0.0
    started = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="origin-tmp-"))
    git(tmp, "init", "-q", "-b", "main")
    git(tmp, "fast-import", "--quiet", stdin=b"".join(_stream()) + b"done\n")
    git(tmp, "repack", "-adq")
    git(tmp, "checkout", "-q", "-f", "main")
    (tmp / ".git" / "info" / "exclude").write_text(".complete\n")
    (tmp / ".complete").write_text(git(tmp, "rev-parse", "main") + "\n")
    shutil.rmtree(ORIGIN, ignore_errors=True)
    tmp.rename(ORIGIN)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- the two ways


async def warm_jobs(mirrors: Mirrors, head: str, dests: list[Path], parallel: bool) -> None:
    mirror = await mirrors.fetch_pr(ORIGIN, "main", PR)
    if parallel:
        await asyncio.gather(*(mirrors.prepare(mirror, head, "main", d) for d in dests))
    else:
        for dest in dests:
            await mirrors.prepare(mirror, head, "main", dest)


def anchor_jobs(head: str, dests: list[Path]) -> None:
    for dest in dests:
        git(dest.parent, "clone", "-q", f"file://{ORIGIN}", str(dest))
        git(dest, "checkout", "-q", "main")
        diff = subprocess.run(
            ["git", "-C", str(ORIGIN), "diff", f"main...{head}"], capture_output=True, check=True
        ).stdout
        (dest / f"{PR}.diff").write_bytes(diff)
        git(dest, "apply", f"{PR}.diff")


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user+sys, this process and its gits

    def line(self, name: str) -> str:
        wall = statistics.median(self.wall)
        cpu = statistics.median(self.cpu)
        return f"prepare_{JOBS}_jobs_{name}_median_s={wall:.3f}\n" + (
            f"prepare_{JOBS}_jobs_{name}_cpu_median_s={cpu:.3f}"
        )


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(samples: Samples, jobs_dir: Path, one_run: Callable[[list[Path]], None]) -> None:
    """One run with fresh destination directories (their deletion is not measured)."""
    with tempfile.TemporaryDirectory(dir=jobs_dir, prefix="run-") as tmp:
        dests = [Path(tmp) / f"job-{i}" for i in range(JOBS)]
        cpu, started = _cpu(), time.perf_counter()
        one_run(dests)
        samples.wall.append(time.perf_counter() - started)
        samples.cpu.append(_cpu() - cpu)


def file_creation_baseline(jobs_dir: Path, files: int) -> float:
    """Seconds to create as many small files as one tree has: what the disk costs alone."""
    with tempfile.TemporaryDirectory(dir=jobs_dir, prefix="fs-") as tmp:
        started = time.perf_counter()
        for i in range(files):
            (Path(tmp) / f"f{i}").write_bytes(b"x" * 1024)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=9, help="runs of the warm path")
    parser.add_argument("--anchor-runs", type=int, default=3, help="runs of EESSI's way")
    parser.add_argument("--jobs-dir", type=Path, default=CACHE, help="where trees are made")
    args = parser.parse_args()
    log.configure(level="warning")  # one line per prepared tree would drown the figures

    built = ensure_origin()
    head = git(ORIGIN, "rev-parse", f"refs/pull/{PR}/head")
    files = len(git(ORIGIN, "ls-files").splitlines())
    print(f"origin_build_s={built:.2f}")
    print(f"origin_commits={git(ORIGIN, 'rev-list', '--count', 'main')}")
    print(f"origin_files={files}")
    print(f"origin_pack_mb={_pack_mb(ORIGIN / '.git'):.1f}")
    args.jobs_dir.mkdir(parents=True, exist_ok=True)
    print(f"fs_create_{files}_files_s={file_creation_baseline(args.jobs_dir, files):.3f}")

    mirrors = Mirrors(MIRRORS)
    shutil.rmtree(MIRRORS, ignore_errors=True)
    started = time.perf_counter()
    mirror = asyncio.run(mirrors.fetch_pr(ORIGIN, "main", PR))
    print(f"mirror_cold_fetch_s={time.perf_counter() - started:.3f}")

    warm, sequential, anchor = Samples(), Samples(), Samples()
    # Interleaved, so that load from other processes hits all three alike.
    for i in range(args.runs):
        measure(warm, args.jobs_dir, lambda d: asyncio.run(warm_jobs(mirrors, head, d, True)))
        measure(
            sequential, args.jobs_dir, lambda d: asyncio.run(warm_jobs(mirrors, head, d, False))
        )
        if i < args.anchor_runs:
            measure(anchor, args.jobs_dir, lambda d: anchor_jobs(head, d))
        _prune(mirrors)

    print(warm.line("warm"))
    print(sequential.line("warm_sequential"))
    print(anchor.line("anchor"))
    print(f"speedup={statistics.median(anchor.wall) / statistics.median(warm.wall):.1f}")
    print(f"speedup_cpu={statistics.median(anchor.cpu) / statistics.median(warm.cpu):.1f}")
    for name, samples in (("warm", warm), ("warm_sequential", sequential), ("anchor", anchor)):
        print(f"samples_{name}_s={','.join(f'{t:.3f}' for t in samples.wall)}")
    print(f"trees_identical={_same_content(mirrors, mirror, head, args.jobs_dir)}")


def _prune(mirrors: Mirrors) -> None:
    asyncio.run(mirrors.prune())


def _pack_mb(git_dir: Path) -> float:
    return sum(p.stat().st_size for p in (git_dir / "objects" / "pack").glob("*.pack")) / 1e6


def _same_content(mirrors: Mirrors, mirror: Mirror, head: str, jobs_dir: Path) -> bool:
    """The merged tree equals what clone + apply gives (the PR merges cleanly)."""
    with tempfile.TemporaryDirectory(dir=jobs_dir, prefix="check-") as tmp:
        prepared: Prepared = asyncio.run(mirrors.prepare(mirror, head, "main", Path(tmp) / "w"))
        anchor = Path(tmp) / "a"
        anchor_jobs(head, [anchor])
        (anchor / f"{PR}.diff").unlink()
        git(anchor, "add", "-A")
        same = git(anchor, "write-tree") == git(prepared.path, "rev-parse", "HEAD^{tree}")
        asyncio.run(mirrors.remove(prepared.path))
        return same


if __name__ == "__main__":
    main()
