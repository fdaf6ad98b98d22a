"""The repository is self-contained (issue 10, item 7).

A clean clone must run its tests with nothing beside it. Two checks: no tracked (or
about-to-be-tracked) file refers to the old sibling ``shared/`` directory or its override
variable, and the tests that read the GitHub reference data pass from a copy of the tree
placed in an otherwise empty directory (with the override variable set to a decoy, so a
lookup outside the copy would fail loudly).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Built from parts so this file does not match its own search.
_FORBIDDEN = (
    "LAYERBOT_" + "SHARED_DIR",
    "../" + "shared",
    "/work/" + "shared",
    'parent / "' + 'shared"',
)


def _tree_files() -> list[Path]:
    """Files a commit of the working tree would hold: tracked plus untracked, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name and (REPO / name).is_file()]


def test_no_file_refers_to_data_outside_the_repository() -> None:
    offenders = []
    for path in _tree_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}: {bad}" for bad in _FORBIDDEN if bad in text]
    assert not offenders, offenders


def test_reference_data_is_inside_the_repository() -> None:
    from tests.support.shared import github_data_dir

    data = github_data_dir()
    assert data.resolve().is_relative_to(REPO)
    assert (data / "README.md").is_file()  # provenance of every file


@pytest.mark.slow
def test_data_tests_pass_from_a_copy_with_nothing_beside_it(tmp_path: Path) -> None:
    clone = tmp_path / "alone" / "layerbot"
    for path in _tree_files():
        target = clone / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["layerbot"]
    decoy = tmp_path / "decoy"  # exists, empty: any read through it fails
    decoy.mkdir()
    env = {**os.environ, "LAYERBOT_" + "SHARED_DIR": str(decoy)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/support/test_webhook_payloads.py", "tests/support/test_fakegithub.py"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
