"""Inspect a tarball before it is ingested into a repository.

``cvmfs_server ingest`` (or a plain tar extraction) writes what the tarball says, where it
says. A tarball that was built by a PR's scripts is not trusted: it must stay inside the
tree it is extracted into. We report every problem instead of stopping at the first, so the
PR author sees all that is wrong at once.

Two passes (issue 9, item 5):

1. **The archive as a growing tree.** Read as a stream (``r|*``: any compression, one pass,
   little memory), each member is applied to a model of what extraction has made so far
   (directories, regular files, symlinks with their targets; directories implied by a
   member's path or used by a link's target count as directories):

   * a member that **changes the type** of a path seen before (a symlink that becomes a
     directory, a directory that becomes a symlink...) or re-points a symlink is refused.
     Checking each link once is only sound if what it was checked against cannot change
     afterwards: ``b -> x/y``, ``a -> b/../..`` (inside while ``b`` is a link), then ``b`` a
     directory made ``a`` point above the root;
   * every symlink is **resolved at its own location** against the tree so far (following
     the links it meets) and must stay inside, or reach an allowed absolute prefix;
   * a **hard link** must name a regular file that came earlier in the same archive: a hard
     link to a *symlink* makes a second symlink whose relative target is re-read from the
     hard link's directory, somewhere no check looked;
   * members written through a symlink that leaves the tree, absolute paths, ``..``,
     devices, FIFOs and unknown types are refused.

2. **What extraction really made.** If the model finds nothing, the tarball is extracted
   into a fresh private directory (tarfile's ``tar`` filter, which also refuses to write
   outside it) and the result is walked with ``lstat``: every symlink is resolved on disk
   and must stay inside; a regular file with more links than the tree holds is a hard link
   to something outside; anything but directories, regular files and symlinks is refused.
   This catches what a gap in the model would let through, by looking at the real thing.

Warnings (reported, not refused): setuid/setgid bits.
"""

from __future__ import annotations

import collections
import enum
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: Symlink chains longer than this are treated as escaping (as the kernel's ELOOP would).
_MAX_LINK_DEPTH = 40


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    member: str
    message: str

    def __str__(self) -> str:
        return f"member '{self.member}' {self.message}"


@dataclass
class TarReport:
    members: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self, limit: int = 5) -> str:
        """The first errors, one clause each, for a PR comment or a log line."""
        errors = self.errors
        text = "; ".join(str(p) for p in errors[:limit])
        if len(errors) > limit:
            text += f"; and {len(errors) - limit} more"
        return text


class Kind(enum.Enum):
    DIR = "a directory"
    FILE = "a regular file"
    SYMLINK = "a symlink"


@dataclass(frozen=True)
class Node:
    kind: Kind
    target: str = ""  # a symlink's target


#: What is at a path (relative to the root, normalised), or None if nothing is there yet.
Lookup = Callable[[str], Node | None]


class Outside(Exception):
    """A path resolves above the root, to a forbidden absolute path, or loops."""


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve(
    path: str,
    lookup: Lookup,
    allowed_prefixes: Sequence[str],
    *,
    on_dir: Callable[[str], None] | None = None,
) -> str:
    """``path`` (relative to the root) with every symlink on the way followed, as the
    kernel would: the normalised path inside the root, or an allowed absolute target.

    Raises ``Outside``. ``on_dir`` is told of every path used as a directory (a component
    followed by more), so that the caller can hold it to being one.
    """
    parts = _split(path)
    done: list[str] = []
    depth = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if not done:
                raise Outside
            done.pop()
            continue
        current = "/".join([*done, part])
        node = lookup(current)
        if node is None or node.kind is not Kind.SYMLINK:
            if parts and on_dir is not None:
                on_dir(current)
            done.append(part)
            continue
        depth += 1
        if depth > _MAX_LINK_DEPTH:
            raise Outside
        if node.target.startswith("/"):
            target = posixpath.normpath(node.target)
            if any(target == p or target.startswith(p + "/") for p in allowed_prefixes):
                return target  # leaves this tree for an allowed place: stop here
            raise Outside
        # A relative link replaces its own name by its target, from its directory.
        parts = _split(node.target) + parts
    return "/".join(done)


class _Tree:
    """What extraction has made so far, member by member."""

    def __init__(self, allowed_link_prefixes: Sequence[str]) -> None:
        self.nodes: dict[str, Node] = {"": Node(Kind.DIR)}
        self.allowed = tuple(posixpath.normpath(p).rstrip("/") for p in allowed_link_prefixes)
        self.conflicts: list[str] = []

    def resolve(self, path: str) -> str:
        return resolve(path, self.nodes.get, self.allowed, on_dir=self.mark_dir)

    def mark_dir(self, path: str) -> None:
        """``path`` is (or will be, on extraction) a directory: it must stay one."""
        node = self.nodes.setdefault(path, Node(Kind.DIR))
        if node.kind is not Kind.DIR:
            self.conflicts.append(f"uses '{path}', {node.kind.value}, as a directory")

    def inside(self, path: str) -> str | None:
        """``path`` resolved, if it stays inside the tree (not even an allowed prefix)."""
        try:
            real = self.resolve(path)
        except Outside:
            return None
        return None if real.startswith("/") else real


def _name_problem(name: str) -> str | None:
    if name.startswith("/"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "leaves the tree (a '..' component)"
    return None


def _type_problem(member: tarfile.TarInfo) -> str | None:
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return f"has an unsupported type {member.type!r}"
    return None


def _kind(member: tarfile.TarInfo) -> Node:
    if member.isdir():
        return Node(Kind.DIR)
    if member.issym():
        return Node(Kind.SYMLINK, member.linkname)
    return Node(Kind.FILE)  # regular files and hard links to them


def _symlink_problem(real: str, target: str, tree: _Tree) -> str | None:
    if target.startswith("/"):
        normal = posixpath.normpath(target)
        if any(normal == p or normal.startswith(p + "/") for p in tree.allowed):
            return None
        return f"is a symlink to the absolute path '{target}' outside the tree"
    try:
        tree.resolve(posixpath.join(posixpath.dirname(real), target))
    except Outside:
        return f"is a symlink to '{target}', which points outside the tree"
    return None


def _hardlink_problem(target: str, tree: _Tree) -> str | None:
    if _name_problem(target):
        return f"is a hard link to '{target}' outside the tree"
    parent = tree.inside(posixpath.dirname(posixpath.normpath(target)))
    if parent is None:
        return f"is a hard link to '{target}', which points outside the tree"
    node = tree.nodes.get(posixpath.join(parent, posixpath.basename(target)).lstrip("/"))
    if node is None or node.kind is not Kind.FILE:
        return f"is a hard link to '{target}', which is not a regular file earlier in the archive"
    return None


def _change_problem(real: str, new: Node, tree: _Tree) -> str | None:
    old = tree.nodes.get(real)
    if old is None or old == new or (old.kind is new.kind and new.kind is not Kind.SYMLINK):
        return None
    if old.kind is new.kind:
        return f"changes the target of the symlink '{real}' ('{old.target}' before)"
    return f"changes the type of '{real}' ({old.kind.value} before, now {new.kind.value})"


def _member_errors(member: tarfile.TarInfo, tree: _Tree) -> tuple[list[str], str | None]:
    """The member's errors, and where extraction puts it (None: outside, or unknown)."""
    name = member.name
    if problem := _name_problem(name):
        return [problem], None
    clean = posixpath.normpath(name)
    # Where extraction really puts it: its directory with the links seen so far followed.
    tree.conflicts.clear()
    parent = tree.inside(posixpath.dirname(clean))
    if parent is None:
        return ["is written through a symlink that leaves the tree"], None
    real = posixpath.join(parent, posixpath.basename(clean)).lstrip("/")
    if parent:
        tree.mark_dir(parent)
    errors = list(tree.conflicts)
    node = _kind(member)
    if change := _change_problem(real, node, tree):
        errors.append(change)
    if member.issym():
        tree.conflicts.clear()
        link = _symlink_problem(real, member.linkname, tree)
        errors.extend([link] if link else tree.conflicts)
    elif member.islnk() and (link := _hardlink_problem(member.linkname, tree)):
        errors.append(link)
    if problem := _type_problem(member):
        errors.append(problem)
    return errors, real


def _check_member(member: tarfile.TarInfo, tree: _Tree, report: TarReport) -> None:
    errors, real = _member_errors(member, tree)
    report.problems.extend(Problem("error", member.name, e) for e in errors)
    if member.mode & (stat.S_ISUID | stat.S_ISGID) and member.isfile():
        report.problems.append(Problem("warning", member.name, "has the setuid or setgid bit"))
    if real is None or _type_problem(member):
        return
    if not errors or (member.issym() and real not in tree.nodes):
        # Escaping links are recorded too, so that members written through them are caught.
        tree.nodes[real] = _kind(member)


def inspect_tarball(
    path: Path,
    allowed_link_prefixes: Sequence[str] = (),
    *,
    extract_check: bool = True,
    work_dir: Path | None = None,
) -> TarReport:
    """All problems of the tarball at ``path``.

    ``allowed_link_prefixes``: absolute symlink targets that are fine (e.g. ``/cvmfs/repo``
    for links inside the repository the tarball is ingested into). ``extract_check``: if
    the archive passes, extract it into a fresh directory under ``work_dir`` (default: the
    system's temporary directory; it needs room for the unpacked tarball) and walk it.
    """
    report = TarReport()
    tree = _Tree(allowed_link_prefixes)
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                report.members += 1
                _check_member(member, tree, report)
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.problems.append(Problem("error", path.name, f"is not a readable tarball: {exc}"))
    if report.members == 0 and report.ok:
        report.problems.append(Problem("error", path.name, "is an empty tarball"))
    if report.ok and extract_check:
        report.problems.extend(check_extracted(path, tree.allowed, work_dir))
    return report


# ---------------------------------------------------------------------------- extraction


def check_extracted(
    path: Path, allowed_link_prefixes: Sequence[str], work_dir: Path | None = None
) -> list[Problem]:
    """Extract ``path`` into a fresh private directory and walk the result with ``lstat``."""
    root = Path(tempfile.mkdtemp(prefix="layerbot-tarcheck-", dir=work_dir))
    try:
        try:
            with tarfile.open(path, mode="r|*") as tar:
                tar.extractall(root, filter="tar")
        except (tarfile.TarError, OSError, EOFError) as exc:
            return [Problem("error", path.name, f"cannot be extracted: {exc}")]
        return walk_extracted(root, allowed_link_prefixes)
    finally:
        _remove(root)


def walk_extracted(root: Path, allowed_link_prefixes: Sequence[str]) -> list[Problem]:
    """What in the extracted tree at ``root`` points outside it, or is not a plain entry."""
    allowed = tuple(posixpath.normpath(p).rstrip("/") for p in allowed_link_prefixes)
    lookup = _disk_lookup(root)
    problems: list[Problem] = []
    names: dict[tuple[int, int], list[str]] = collections.defaultdict(list)
    links: dict[tuple[int, int], int] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                try:
                    resolve(rel, lookup, allowed)
                except Outside:
                    target = os.readlink(os.path.join(dirpath, name))
                    problems.append(_after(rel, f"is a symlink to '{target}' outside the tree"))
            elif stat.S_ISREG(st.st_mode):
                names[(st.st_dev, st.st_ino)].append(rel)
                links[(st.st_dev, st.st_ino)] = st.st_nlink
            elif not stat.S_ISDIR(st.st_mode):
                problems.append(_after(rel, "is not a directory, regular file or symlink"))
    # A file with more names than the tree holds has one outside it.
    problems.extend(
        _after(found[0], "is a hard link to a file outside the tree")
        for inode, found in names.items()
        if links[inode] > len(found)
    )
    return problems


def _after(member: str, message: str) -> Problem:
    return Problem("error", member, f"{message} (found after extraction)")


def _disk_lookup(root: Path) -> Lookup:
    def lookup(rel: str) -> Node | None:
        full = root / rel
        try:
            st = os.lstat(full)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return Node(Kind.SYMLINK, os.readlink(full))
        return Node(Kind.DIR if stat.S_ISDIR(st.st_mode) else Kind.FILE)

    return lookup


def _remove(root: Path) -> None:
    """Delete the extracted tree; never follows a link (rmtree does not), even through
    directories the tarball made read-only."""

    def make_writable(func: Callable[..., object], target: str, _exc: object) -> None:
        parent = os.path.dirname(target)
        os.chmod(parent, stat.S_IRWXU)
        func(target)

    shutil.rmtree(root, onerror=make_writable)
