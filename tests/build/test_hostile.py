"""Reading a job directory the job controls: real symlinks, FIFOs, huge and growing files.

Each case is what a job can leave behind; before build.hostile, ``Path.read_bytes`` followed
the symlinks (printing the target), blocked on the FIFOs (for ever) and read huge files
whole.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from layerbot.build import hostile
from layerbot.build.jobdir import remove_reserved
from layerbot.build.results import failure_reason, job_log_tail, read_result, tail


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot for jobs\n")
    return path


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def test_symlinked_file_is_refused(job: Path, secret: Path) -> None:
    (job / "result.json").symlink_to(secret)
    with pytest.raises(hostile.Refused, match=r"result\.json is a symlink"):
        hostile.read_bytes(job, "result.json", 1000)


def test_symlinked_parent_directory_is_refused(job: Path, secret: Path) -> None:
    (job / "cfg").symlink_to(secret.parent)
    with pytest.raises(hostile.Refused, match=r"cfg is a symlink \(in the path of cfg/app.pem"):
        hostile.read_bytes(job, "cfg/app.pem", 1000)


def test_a_fifo_is_refused_at_once(job: Path) -> None:
    os.mkfifo(job / "result.json")
    started = time.monotonic()
    with pytest.raises(hostile.Refused, match=r"result\.json is a FIFO, not a regular file"):
        hostile.read_bytes(job, "result.json", 1000)
    with pytest.raises(hostile.Refused, match="is a FIFO"):
        hostile.tail_bytes(job, "result.json", 5)
    assert time.monotonic() - started < 2


def test_too_big_is_refused_without_reading(job: Path) -> None:
    with (job / "result.json").open("wb") as f:
        f.truncate(50 * 1024**3)  # sparse: 50 GiB that would take minutes to read
    with pytest.raises(hostile.Refused, match="more than the 1000 allowed"):
        hostile.read_bytes(job, "result.json", 1000)
    # The tail of a huge log costs a few blocks only.
    started = time.monotonic()
    assert hostile.tail_bytes(job, "result.json", 3, max_bytes=4096) == b"\0" * 4096
    assert time.monotonic() - started < 2


def test_paths_leaving_the_directory_are_refused(job: Path) -> None:
    for rel in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(hostile.Refused, match="not a path inside the job directory"):
            hostile.read_bytes(job, rel, 1000)


def test_regular_files_are_read(job: Path) -> None:
    (job / "sub").mkdir()
    (job / "sub" / "a.tar.gz").write_bytes(b"tarball" * 10)
    assert hostile.read_bytes(job, "sub/a.tar.gz", 100) == b"tarball" * 10
    assert hostile.size_and_sha256(job, "sub/a.tar.gz") == (
        70, hashlib.sha256(b"tarball" * 10).hexdigest())


def test_a_hung_read_costs_its_time_limit_and_no_more() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(hostile.Refused, match=r"took longer than 0\.3 s"):
        hostile.bounded(lambda: release.wait(30), 0.3, "slurm-1.out")
    assert time.monotonic() - started < 2
    release.set()


def test_entries_do_not_follow_links(job: Path, secret: Path) -> None:
    (job / "_bot_job1.result").symlink_to(secret)
    (job / "real").write_text("x")
    found = {e.name: e.regular for e in hostile.entries(job)}
    assert found == {"_bot_job1.result": False, "real": True}


# --- through the result reader ---------------------------------------------------------------


def test_symlinked_eessi_result_is_a_failure_with_a_clear_line(job: Path, secret: Path) -> None:
    (job / "_bot_job12.result").symlink_to(secret)
    result = read_result(job, "12")
    assert result.status == "failure"
    assert result.problems == ["_bot_job12.result is a symlink: ignored"]
    assert "PRIVATE KEY" not in repr(result)


def test_symlinked_log_is_named_not_shown(job: Path, secret: Path) -> None:
    (job / "slurm-7.out").symlink_to(secret)
    (job / "_bot_job7.result").write_text("[RESULT]\nstatus = SUCCESS\n")
    result = read_result(job, "7")
    assert result.status == "success"  # the build stands; the log is not its result
    assert result.log_tail == ""
    assert result.problems == ["log: slurm-7.out is a symlink: ignored"]
    assert tail(job / "slurm-7.out", 5).startswith("[layerbot: slurm-7.out is a symlink")
    assert "PRIVATE KEY" not in job_log_tail(job, 5)


def test_output_found_by_either_id_else_newest(job: Path) -> None:
    (job / "slurm-3.out").write_text("old\n")
    os.utime(job / "slurm-3.out", (1, 1))
    (job / "slurm-55.out").write_text("one\ntwo\n")
    assert read_result(job, "55;cluster/9").log_tail == "one\ntwo"
    assert read_result(job, None, job_ids=["3"]).log_tail == "old"
    assert job_log_tail(job, 1) == "two"  # newest


def test_test_file_with_result_section_and_no_verdict_is_unknown(job: Path) -> None:
    (job / "_bot_job4.result").write_text("[RESULT]\ncomment_description = built\n"
                                          "status = SUCCESS\n")
    (job / "_bot_job4.test").write_text("[RESULT]\ncomment_description = "
                                        "no check-test.sh, no verdict\n")
    result = read_result(job, "4")
    assert result.status == "success" and result.problems == []
    assert result.tests is not None and result.tests.status == "unknown"


def test_test_file_result_section_with_verdict_is_read(job: Path) -> None:
    (job / "_bot_job4.result").write_text("[RESULT]\nstatus = SUCCESS\n")
    (job / "_bot_job4.test").write_text("[RESULT]\ncomment_description = x\nstatus = FAILURE\n")
    result = read_result(job, "4")
    assert result.tests is not None and result.tests.status == "failure"
    assert result.status == "success"


def test_failure_reason_names_the_build_first_then_the_tests(job: Path) -> None:
    (job / "_bot_job5.result").write_text("[RESULT]\ncomment_description = compiler died\n"
                                          "status = FAILURE\n")
    os.mkfifo(job / "_bot_job5.test")
    result = read_result(job, "5")
    assert result.status == "failure"
    assert failure_reason(result) == (
        "compiler died; tests: _bot_job5.test is a FIFO, not a regular file: ignored")


def test_symlinked_artifact_directory_is_not_published(job: Path, secret: Path) -> None:
    (job / "out").symlink_to(secret.parent)
    (job / "result.json").write_text(
        '{"status": "success", "artifacts": [{"path": "out/app.pem"}]}')
    result = read_result(job)
    assert result.status == "failure" and result.artifacts == []
    assert "out is a symlink (in the path of out/app.pem)" in result.problems[0]


# --- reserved names in the checkout ----------------------------------------------------------


def test_reserved_names_committed_by_a_pr_are_removed(job: Path, secret: Path) -> None:
    (job / "_bot_job1.result").write_text("[RESULT]\nstatus = SUCCESS\n")
    (job / "result.json").write_text('{"status": "success"}')
    (job / "slurm-1.out").symlink_to(secret)
    (job / ".layerbot").symlink_to(secret.parent)
    (job / "_bot_job2.test").mkdir()
    (job / "_bot_job2.test" / "x").write_text("x")
    (job / "README.md").write_text("kept")
    removed = remove_reserved(job)
    assert removed == [".layerbot", "_bot_job1.result", "_bot_job2.test", "result.json",
                       "slurm-1.out"]
    assert sorted(p.name for p in job.iterdir()) == ["README.md"]
    assert secret.exists() and secret.parent.is_dir()  # links removed, not followed


def test_job_json_replaced_by_a_fifo_does_not_block_archiving(job: Path, tmp_path: Path) -> None:
    from layerbot.build.jobdir import archive

    (job / "cfg").mkdir()
    os.mkfifo(job / "cfg" / "job.json")
    started = time.monotonic()
    target = archive(job, tmp_path / "archive")
    assert target.is_file() and not job.exists()
    assert time.monotonic() - started < 5
