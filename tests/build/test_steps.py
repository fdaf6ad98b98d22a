"""A pipeline's files, read as hostile input: the plan a job wrote, and a step's output
copied into the artifact store (links, FIFOs and oversized files refused; the store's copy
out of the jobs' reach)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from layerbot.build import jobdir, steps
from layerbot.core.pipeline import PlanError, PlanLimits

LIMITS = PlanLimits(max_bytes=2048)
PLAN = {"version": 1, "steps": [{"id": "a", "command": "true"}]}


def job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "job"
    d.mkdir()
    return d


def test_the_plan_a_job_wrote_is_read(tmp_path: Path) -> None:
    d = job_dir(tmp_path)
    (d / "plan.json").write_text(json.dumps(PLAN))
    assert [s.id for s in steps.read_plan(d, LIMITS).steps] == ["a"]


@pytest.mark.parametrize("make", ["symlink", "fifo", "huge", "missing"])
def test_a_plan_file_that_is_not_a_small_regular_file_is_refused(tmp_path: Path,
                                                                make: str) -> None:
    d = job_dir(tmp_path)
    secret = tmp_path / "bot-secret.json"
    secret.write_text(json.dumps(PLAN))  # a valid plan: only the link makes it readable
    if make == "symlink":
        (d / "plan.json").symlink_to(secret)
    elif make == "fifo":
        os.mkfifo(d / "plan.json")
    elif make == "huge":
        (d / "plan.json").write_text(" " * 4096 + json.dumps(PLAN))
    with pytest.raises(PlanError) as err:
        steps.read_plan(d, LIMITS)
    said = {"symlink": "plan.json", "fifo": "plan.json", "huge": "more than the 2048",
            "missing": "the plan script wrote no plan.json"}[make]
    assert said in str(err.value)


def test_a_plan_the_pr_brought_along_is_removed_before_the_plan_script_runs(
        tmp_path: Path) -> None:
    d = job_dir(tmp_path)
    (d / "plan.json").write_text(json.dumps(PLAN))  # from the PR's content
    env = jobdir.write_plan_files(d)
    assert env["LAYERBOT_PLAN_FILE"] == str(d / "plan.json")
    assert not (d / "plan.json").exists()


def test_a_steps_output_is_copied_into_the_store(tmp_path: Path) -> None:
    d = job_dir(tmp_path)
    (d / "step-output" / "lib").mkdir(parents=True)
    (d / "step-output" / "lib" / "libx.so").write_bytes(b"\x7fELF")
    (d / "step-output" / "x.tar.gz").write_bytes(b"tar")
    kept = steps.collect_output(d, tmp_path / "store", 7)
    assert (kept.path, kept.files, kept.bytes) == (tmp_path / "store" / "7", 2, 7)
    assert (kept.path / "lib" / "libx.so").read_bytes() == b"\x7fELF"
    assert steps.collect_output(d, tmp_path / "store", 7) == kept  # idempotent
    assert steps.stored(tmp_path / "store", 7) == kept.path


@pytest.mark.parametrize("make", ["symlink", "fifo", "symlinked-dir"])
def test_a_link_or_fifo_in_a_steps_output_fails_the_step_and_nothing_is_kept(
        tmp_path: Path, make: str) -> None:
    d = job_dir(tmp_path)
    out = d / "step-output"
    out.mkdir()
    secret = tmp_path / "bot-secret"
    secret.write_text("private key")
    if make == "symlink":
        (out / "key").symlink_to(secret)
    elif make == "fifo":
        os.mkfifo(out / "pipe")
    else:
        (out / "dir").symlink_to(tmp_path)
    with pytest.raises(steps.OutputRefused, match="a step's output may hold only files"):
        steps.collect_output(d, tmp_path / "store", 8)
    assert steps.stored(tmp_path / "store", 8) is None
    assert [p.name for p in (tmp_path / "store").iterdir()] == []  # no partial copy


def test_a_step_output_that_is_itself_a_link_is_refused(tmp_path: Path) -> None:
    d = job_dir(tmp_path)
    (d / "step-output").symlink_to(tmp_path)
    with pytest.raises(steps.OutputRefused, match="not a directory"):
        steps.collect_output(d, tmp_path / "store", 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as the job user")
def test_the_job_user_can_read_the_store_but_not_change_it(tmp_path: Path) -> None:
    try:
        pwd.getpwnam("layerbot-job")
    except KeyError:
        pytest.skip("no layerbot-job user (scripts/jobuser.sh)")
    tmp_path.chmod(0o755)
    d = job_dir(tmp_path)
    (d / "step-output").mkdir()
    (d / "step-output" / "a.txt").write_text("built\n")
    kept = steps.collect_output(d, tmp_path / "store", 10)

    def as_job(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "layerbot-job", "--", "bash", "-c", script],
                              capture_output=True, text=True, check=False)

    assert as_job(f"cat {kept.path}/a.txt").stdout == "built\n"
    assert as_job(f"echo poisoned > {kept.path}/a.txt").returncode != 0
    assert as_job(f"rm -rf {kept.path}/a.txt; mv {kept.path} {kept.path}.x").returncode != 0
    assert (kept.path / "a.txt").read_text() == "built\n"
