"""`doctor`'s check of which bot files the job user could read or write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbot.build.identity import JobUser
from layerbot.cli.file_exposure import exposure, remedy

JOB = JobUser("nobody", 65534, 65534, ())

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="files owned by root")


def test_a_world_readable_key_in_a_traversable_dir_is_named(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)
    key = tmp_path / "app.pem"
    key.write_text("k")
    key.chmod(0o644)
    found = exposure(key, "App private key", JOB)
    assert found is not None and found.access == "read"
    assert remedy(found) == f"chmod 600 {key}"
    key.chmod(0o600)
    assert exposure(key, "App private key", JOB) is None


def test_a_closed_directory_protects_what_is_inside(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    key = tmp_path / "app.pem"
    key.write_text("k")
    key.chmod(0o644)
    assert exposure(key, "App private key", JOB) is None


def test_a_listable_or_writable_data_dir_is_named(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    found = exposure(data, "data directory", JOB, directory=True)
    assert found is not None and found.access == "list"
    data.chmod(0o777)
    found = exposure(data, "data directory", JOB, directory=True)
    assert found is not None and found.access == "write"
    data.chmod(0o711)
    assert exposure(data, "data directory", JOB, directory=True) is None
