"""Tarballs that got past the old check (issue 9, item 5), as real tar files.

The old check resolved each link once, against the links seen before it, and forgot a link
when a later member of the same name replaced it; hard links were resolved like paths. Two
archives walked through that:

* **type change**: ``b -> x/y``, then ``a -> b/../..`` (inside: ``x/y/../..`` is the root),
  then ``b`` as a directory, after which the extracted ``a`` is ``<root>/..``: a link out of
  the repository (no member needs to be written through it);
* **hard link to a symlink**: ``sub/s -> ..`` is inside (``sub/..`` is the root); a hard link
  ``h`` to it is a second symlink ``..`` read from the root, so ``h/escaped`` lands outside.

Each test says what the old check answered (run against the previous ``tarsafety``: both
bypass archives passed).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbot.deploy.tarsafety import inspect_tarball, walk_extracted


def _member(tar: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
    tar.addfile(info)


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"pwned\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def type_change_bypass(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _file(tar, "ok/file", b"fine\n")
        _member(tar, "b", tarfile.SYMTYPE, "x/y")
        _member(tar, "a", tarfile.SYMTYPE, "b/../..")
        _member(tar, "b", tarfile.DIRTYPE)  # now a is <root>/.. once extracted
    return path


def hardlink_to_symlink_bypass(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "sub", tarfile.DIRTYPE)
        _member(tar, "sub/s", tarfile.SYMTYPE, "..")
        _member(tar, "h", tarfile.LNKTYPE, "sub/s")
        _file(tar, "h/escaped")
    return path


def test_a_symlink_that_escapes_after_a_path_changes_type_is_refused(tmp_path: Path) -> None:
    report = inspect_tarball(type_change_bypass(tmp_path / "t.tar.gz"))
    assert not report.ok
    messages = [str(p) for p in report.errors]
    assert "member 'b' changes the type of 'b' (a symlink before, now a directory)" in messages


def test_a_symlink_retargeted_after_others_were_checked_through_it_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "b", tarfile.SYMTYPE, "x/y")
        _member(tar, "a", tarfile.SYMTYPE, "b/../..")
        _member(tar, "b", tarfile.SYMTYPE, ".")  # now a -> ./../.. : above the root
    report = inspect_tarball(path)
    assert "changes the target of the symlink 'b'" in report.summary()


def test_a_directory_used_by_a_link_cannot_become_a_link(tmp_path: Path) -> None:
    # 'sub/b' is a directory when 'sub/a -> b/../..' is checked (it ends at the root);
    # a later 'sub/b -> ..' is inside itself but would make 'a' point above the root.
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "sub", tarfile.DIRTYPE)
        _member(tar, "sub/a", tarfile.SYMTYPE, "b/../..")
        _member(tar, "sub/b", tarfile.SYMTYPE, "..")
    report = inspect_tarball(path)
    assert "changes the type of 'sub/b' (a directory before, now a symlink)" in report.summary()


def test_the_hard_link_bypass_is_real_with_a_trusting_extractor(tmp_path: Path) -> None:
    # The attack, shown for real: an extractor that trusts the archive writes outside.
    sandbox = tmp_path / "sandbox"
    (sandbox / "root").mkdir(parents=True)
    with tarfile.open(hardlink_to_symlink_bypass(tmp_path / "t.tar.gz")) as tar:
        tar.extractall(sandbox / "root", filter="fully_trusted")  # noqa: S202 - the attack
    assert (sandbox / "escaped").read_text() == "pwned\n"


def test_a_hard_link_to_a_symlink_is_refused(tmp_path: Path) -> None:
    report = inspect_tarball(hardlink_to_symlink_bypass(tmp_path / "t.tar.gz"))
    assert not report.ok
    assert (
        "member 'h' is a hard link to 'sub/s', which is not a regular file earlier in the "
        "archive" in report.summary()
    )


@pytest.mark.parametrize(
    "target", ["sub", "later", "missing"], ids=["directory", "later-member", "missing"]
)
def test_hard_links_only_to_regular_files_earlier_in_the_archive(
    target: str, tmp_path: Path
) -> None:
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "sub", tarfile.DIRTYPE)
        _member(tar, "h", tarfile.LNKTYPE, target)
        _file(tar, "later")
        _file(tar, "f")
        _member(tar, "good", tarfile.LNKTYPE, "f")  # this one is fine
    report = inspect_tarball(path)
    assert [p.member for p in report.errors] == ["h"]


def test_the_walk_after_extraction_finds_links_that_point_outside(tmp_path: Path) -> None:
    # What extraction made, whatever the model thought: checked on disk with lstat.
    outside = tmp_path / "secret"
    outside.write_text("bot's\n")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "s").symlink_to("..")  # inside
    os.link(root / "sub" / "s", root / "h", follow_symlinks=False)  # '..' from the root
    os.link(outside, root / "hard")  # a second name of a file outside
    (root / "fine").write_text("x")
    os.link(root / "fine", root / "fine2")  # both names inside: fine
    (root / "cvmfs").symlink_to("/cvmfs/repo.example.org/x")
    problems = {p.member: p.message for p in walk_extracted(root, ["/cvmfs/repo.example.org"])}
    assert set(problems) == {"h", "hard"}
    assert "outside the tree (found after extraction)" in problems["h"]
    assert "hard link to a file outside the tree" in problems["hard"]
    assert problems["hard"].endswith("(found after extraction)")


def test_a_good_archive_passes_both_checks(tmp_path: Path) -> None:
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _member(tar, "v", tarfile.DIRTYPE)
        _member(tar, "v/lib64", tarfile.SYMTYPE, "lib")
        _member(tar, "v/lib", tarfile.DIRTYPE)
        _file(tar, "v/lib/libz.so.1")
        _member(tar, "v/lib/libz.so", tarfile.SYMTYPE, "libz.so.1")
        _member(tar, "v/hard", tarfile.LNKTYPE, "v/lib64/libz.so.1")
        _member(tar, "v/compat", tarfile.SYMTYPE, "/cvmfs/repo.example.org/compat")
    report = inspect_tarball(path, ["/cvmfs/repo.example.org"], work_dir=tmp_path)
    assert report.ok, report.summary()
    assert [p.name for p in tmp_path.iterdir()] == ["t.tar.gz"]  # extraction cleaned up
