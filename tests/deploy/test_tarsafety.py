"""Hostile tarballs are found, harmless ones pass."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from layerbot.deploy.tarsafety import inspect_tarball

from .conftest import add_file, add_special, good_tarball

Builder = Callable[[tarfile.TarFile], None]

#: name -> (what the tarball holds, the text expected in the error)
HOSTILE: dict[str, tuple[Builder, str]] = {
    "absolute path": (lambda t: add_file(t, "/etc/passwd"), "absolute path"),
    "dotdot": (lambda t: add_file(t, "../etc/passwd"), "member '../etc/passwd' leaves the tree"),
    "dotdot inside": (lambda t: add_file(t, "a/../../x"), "leaves the tree"),
    "symlink relative escape": (
        lambda t: add_special(t, "a/b/link", tarfile.SYMTYPE, "../../../etc"),
        "points outside the tree",
    ),
    "symlink absolute": (
        lambda t: add_special(t, "link", tarfile.SYMTYPE, "/etc/shadow"),
        "absolute path '/etc/shadow'",
    ),
    "hardlink escape": (
        lambda t: add_special(t, "hard", tarfile.LNKTYPE, "../outside"),
        "hard link to '../outside'",
    ),
    "hardlink absolute": (
        lambda t: add_special(t, "hard", tarfile.LNKTYPE, "/etc/passwd"),
        "hard link to '/etc/passwd'",
    ),
    "write through symlink": (
        lambda t: (
            add_special(t, "sub", tarfile.DIRTYPE),
            add_special(t, "sub/up", tarfile.SYMTYPE, ".."),
            add_special(t, "sub/up/esc", tarfile.SYMTYPE, ".."),
            add_file(t, "sub/up/esc/passwd"),
        ),
        "leaves the tree",
    ),
    "symlink chain escape": (
        lambda t: (
            add_special(t, "a", tarfile.SYMTYPE, "b/.."),
            add_special(t, "b", tarfile.SYMTYPE, "."),
            add_special(t, "c", tarfile.SYMTYPE, "a/../x"),
        ),
        "points outside the tree",
    ),
    "symlink loop": (
        lambda t: (
            add_special(t, "l1", tarfile.SYMTYPE, "l2"),
            add_special(t, "l2", tarfile.SYMTYPE, "l1"),
            add_special(t, "l3", tarfile.SYMTYPE, "l1/x"),
        ),
        "points outside the tree",
    ),
    "char device": (lambda t: add_special(t, "dev/null", tarfile.CHRTYPE), "device file"),
    "block device": (lambda t: add_special(t, "dev/sda", tarfile.BLKTYPE), "device file"),
    "fifo": (lambda t: add_special(t, "pipe", tarfile.FIFOTYPE), "FIFO"),
}


def make(path: Path, build: Builder, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        add_file(tar, "ok/file")
        build(tar)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_an_error(case: str, tmp_path: Path) -> None:
    build, expected = HOSTILE[case]
    report = inspect_tarball(make(tmp_path / "t.tar.gz", build))
    assert not report.ok
    assert expected in report.summary(), report.summary()


def test_good_tree_passes(tmp_path: Path) -> None:
    report = inspect_tarball(good_tarball(tmp_path / "good.tar.gz"))
    assert report.ok, report.summary()
    assert report.members == 4 and not report.problems


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_any_compression_is_read(mode: str, tmp_path: Path) -> None:
    path = make(tmp_path / "t.tar", lambda t: add_file(t, "../x"), mode)
    assert not inspect_tarball(path).ok


def test_internal_links_are_fine(tmp_path: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        add_special(t, "v/lib", tarfile.DIRTYPE)
        add_file(t, "v/lib/libz.so.1.3")
        add_special(t, "v/lib/libz.so", tarfile.SYMTYPE, "libz.so.1.3")
        add_special(t, "v/lib64", tarfile.SYMTYPE, "lib")
        add_file(t, "v/lib64/written-through-an-internal-link")
        add_special(t, "v/lib/sibling", tarfile.SYMTYPE, "../lib64/libz.so")
        add_special(t, "v/hard", tarfile.LNKTYPE, "v/lib/libz.so.1.3")

    report = inspect_tarball(make(tmp_path / "t.tar.gz", build))
    assert report.ok, report.summary()


def test_allowed_absolute_prefix(tmp_path: Path) -> None:
    path = make(
        tmp_path / "t.tar.gz",
        lambda t: add_special(t, "compat", tarfile.SYMTYPE, "/cvmfs/software.example.org/compat"),
    )
    assert not inspect_tarball(path).ok
    assert inspect_tarball(path, ["/cvmfs/software.example.org"]).ok
    # A prefix is a directory: /cvmfs/software.example.org-evil is not inside it.
    evil = make(
        tmp_path / "e.tar.gz",
        lambda t: add_special(t, "x", tarfile.SYMTYPE, "/cvmfs/software.example.org-evil/x"),
    )
    assert not inspect_tarball(evil, ["/cvmfs/software.example.org"]).ok


def test_setuid_is_a_warning(tmp_path: Path) -> None:
    report = inspect_tarball(
        make(tmp_path / "t.tar.gz", lambda t: add_file(t, "bin/su", b"x", 0o4755))
    )
    assert report.ok
    assert [w.member for w in report.warnings] == ["bin/su"]


def test_all_problems_are_listed(tmp_path: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        add_file(t, "/abs")
        add_file(t, "../up")
        add_special(t, "fifo", tarfile.FIFOTYPE)

    report = inspect_tarball(make(tmp_path / "t.tar.gz", build))
    assert [p.member for p in report.errors] == ["/abs", "../up", "fifo"]


def test_corrupt_and_empty(tmp_path: Path) -> None:
    corrupt = tmp_path / "c.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    assert "not a readable tarball" in inspect_tarball(corrupt).summary()
    empty = tmp_path / "e.tar"
    with tarfile.open(empty, "w"):
        pass
    assert "empty tarball" in inspect_tarball(empty).summary()
