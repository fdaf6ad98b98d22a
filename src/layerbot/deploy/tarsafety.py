"""Inspect a tarball before it is ingested into a repository.

``cvmfs_server ingest`` (or a plain tar extraction) writes what the tarball says, where it
says. A tarball that was built by a PR's scripts is not trusted: it must stay inside the
tree it is extracted into. We read it as a stream (``r|*``: any compression, one pass, no
seeking, little memory) and report every problem instead of stopping at the first, so the
PR author sees all that is wrong at once.

Errors (refused): absolute paths, ``..`` components, symlinks or hard links that resolve
outside the tree (symlinks relative to the member's directory, hard links relative to the
archive root, both following symlinks seen earlier in the archive), members written
through a symlink that leaves the tree, device files, FIFOs and unknown member types.
Warnings (reported, not refused): setuid/setgid bits.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from collections.abc import Sequence
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


class _Tree:
    """The symlinks seen so far, to resolve later paths the way extraction would."""

    def __init__(self, allowed_link_prefixes: Sequence[str]) -> None:
        self.links: dict[str, str] = {}
        self.allowed_prefixes = tuple(p.rstrip("/") + "/" for p in allowed_link_prefixes)

    def allowed_absolute(self, target: str) -> bool:
        return any(target.startswith(p) for p in self.allowed_prefixes)

    def resolve(self, path: str) -> str | None:
        """``path`` (relative to the root) with known symlinks followed, normalised;
        None when it leaves the tree. An allowed absolute target counts as inside."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        depth = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            current = "/".join([*done, part])
            target = self.links.get(current)
            if target is None:
                done.append(part)
                continue
            depth += 1
            if depth > _MAX_LINK_DEPTH:
                return None
            if target.startswith("/"):
                if self.allowed_absolute(target):
                    return target  # leaves this tree for an allowed place: stop here
                return None
            # A relative link replaces its own name by its target, from its directory.
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
        return "/".join(done)


def _name_problems(name: str) -> list[str]:
    if name.startswith("/"):
        return ["has an absolute path"]
    if ".." in name.split("/"):
        return ["leaves the tree (a '..' component)"]
    return []


def _link_problem(member: tarfile.TarInfo, name: str, tree: _Tree) -> str | None:
    if not (member.issym() or member.islnk()):
        return None
    target = member.linkname
    if member.issym():
        kind = "symlink"
        if target.startswith("/"):
            if tree.allowed_absolute(posixpath.normpath(target)):
                return None
            return f"is a {kind} to the absolute path '{target}' outside the tree"
        joined = posixpath.join(posixpath.dirname(name), target)
    else:
        kind = "hard link"
        if target.startswith("/") or ".." in target.split("/"):
            return f"is a {kind} to '{target}' outside the tree"
        joined = target
    if tree.resolve(joined) is None:
        return f"is a {kind} to '{target}', which points outside the tree"
    return None


def _type_problem(member: tarfile.TarInfo) -> str | None:
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return f"has an unsupported type {member.type!r}"
    return None


def _check_member(member: tarfile.TarInfo, tree: _Tree, report: TarReport) -> None:
    name = member.name
    errors = _name_problems(name)
    clean = posixpath.normpath(name).lstrip("/")
    # Where extraction really puts it: its directory with the links seen so far followed.
    parent = posixpath.dirname(clean)
    real_parent = tree.resolve(parent) if parent else ""
    if not errors and (real_parent is None or real_parent.startswith("/")):
        errors.append("is written through a symlink that leaves the tree")
    real_name = posixpath.join(real_parent or "", posixpath.basename(clean))
    link_problem = _link_problem(member, real_name, tree) if not errors else None
    if link_problem:
        errors.append(link_problem)
    if problem := _type_problem(member):
        errors.append(problem)
    report.problems.extend(Problem("error", name, e) for e in errors)
    if member.mode & (stat.S_ISUID | stat.S_ISGID) and member.isfile():
        report.problems.append(Problem("warning", name, "has the setuid or setgid bit"))
    if real_parent is None or real_parent.startswith("/") or _name_problems(name):
        return
    # Escaping links are recorded too, so that members written through them are caught.
    if member.issym():
        tree.links[real_name] = member.linkname
    else:
        # A later member of the same name replaces the link on extraction.
        tree.links.pop(real_name, None)


def inspect_tarball(path: Path, allowed_link_prefixes: Sequence[str] = ()) -> TarReport:
    """All problems of the tarball at ``path``.

    ``allowed_link_prefixes``: absolute symlink targets that are fine (e.g. ``/cvmfs/repo``
    for links inside the repository the tarball is ingested into).
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
    return report
