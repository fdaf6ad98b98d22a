"""Reading result files, artifacts and logs from real files in a job directory."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from layerbot.build.results import read_result, tail


def artifact(job_dir: Path, name: str, content: bytes) -> dict[str, Any]:
    path = job_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return {"path": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def write_json(job_dir: Path, data: dict[str, Any]) -> None:
    (job_dir / "result.json").write_text(json.dumps(data))


# --- result.json -----------------------------------------------------------------------------


def test_result_json_success_with_checked_artifacts(tmp_path: Path) -> None:
    entry = artifact(tmp_path, "out/stack.tar.gz", b"tarball bytes" * 1000)
    write_json(
        tmp_path,
        {
            "status": "success",
            "summary": "built **3** packages",
            "artifacts": [entry],
            "tests": {"status": "success", "summary": "all good", "passed": 12, "failed": 0},
            "future_field": "ignored",
        },
    )
    result = read_result(tmp_path, "17")
    assert result.status == "success"
    assert result.problems == []
    assert result.summary == "built **3** packages"
    (art,) = result.artifacts
    assert art.name == "stack.tar.gz"
    assert art.path == (tmp_path / "out/stack.tar.gz").resolve()
    assert (art.size, art.sha256) == (entry["size"], entry["sha256"])
    assert result.tests is not None
    assert (result.tests.status, result.tests.passed, result.tests.failed) == ("success", 12, 0)
    assert result.source == tmp_path / "result.json"


def test_result_json_bad_sha_and_size_are_problems(tmp_path: Path) -> None:
    entry = artifact(tmp_path, "a.tar.gz", b"real content")
    entry["sha256"] = "0" * 64
    entry["size"] = 999
    write_json(tmp_path, {"status": "success", "artifacts": [entry]})
    result = read_result(tmp_path)
    assert result.status == "failure"
    assert any("sha256" in p and "a.tar.gz" in p for p in result.problems)
    assert any("size is 12 bytes" in p and "999" in p for p in result.problems)
    # Still measured, so a report can show what is really there.
    assert result.artifacts[0].size == 12


def test_result_json_without_size_or_sha_gets_them_computed(tmp_path: Path) -> None:
    artifact(tmp_path, "x.bin", b"abc")
    write_json(tmp_path, {"status": "success", "artifacts": [{"path": "x.bin"}]})
    result = read_result(tmp_path)
    assert result.status == "success"
    assert result.artifacts[0].sha256 == hashlib.sha256(b"abc").hexdigest()


def test_result_json_missing_and_escaping_artifacts(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (tmp_path / "secret").write_text("not yours")
    (job_dir / "link").symlink_to(tmp_path / "secret")
    write_json(
        job_dir,
        {
            "status": "success",
            "artifacts": [{"path": "gone.tar.gz"}, {"path": "../secret"}, {"path": "link"}],
        },
    )
    result = read_result(job_dir)
    assert result.status == "failure"
    assert result.artifacts == []
    assert any("gone.tar.gz" in p and "does not exist" in p for p in result.problems)
    assert sum("outside the job directory" in p for p in result.problems) == 1
    # A symlink is never followed, even to a file inside the job directory.
    assert any("link" in p and "is a symlink" in p for p in result.problems)


def test_result_json_malformed(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text('{"status": "success", ')
    (tmp_path / "job.log").write_text("line 1\nline 2\n")
    result = read_result(tmp_path)
    assert result.status == "failure"
    assert result.problems and result.problems[0].startswith("result.json is not valid JSON")
    assert result.log_tail == "line 1\nline 2"


def test_result_json_with_wrong_fields(tmp_path: Path) -> None:
    write_json(tmp_path, {"status": "ok", "artifacts": [{"path": "a", "sha256": "xyz"}]})
    result = read_result(tmp_path)
    assert result.status == "failure"
    assert "result.json is not a valid result" in result.problems[0]
    assert "status" in result.problems[0]


def test_result_json_is_preferred_over_eessi_files(tmp_path: Path) -> None:
    write_json(tmp_path, {"status": "success", "summary": "from json"})
    (tmp_path / "_bot_job5.result").write_text("[RESULT]\nstatus = FAILURE\n")
    result = read_result(tmp_path, "5")
    assert (result.status, result.summary) == ("success", "from json")


# --- EESSI's INI files -----------------------------------------------------------------------

EESSI_SUCCESS = """\
[RESULT]
comment_description = <details><summary>:grin: SUCCESS _(click triangle for details)_</summary>
    <ul><li>100% of the modules installed</li></ul>
    # not a comment: markdown heading
    </details>
status = SUCCESS
artefacts =
    eessi-2023.06-software-linux-x86_64-generic-1700000000.tar.gz
    eessi-2023.06-software-linux-x86_64-generic-1700000001.tar.gz
"""


def test_eessi_success_with_two_artefacts_and_tests(tmp_path: Path) -> None:
    first = artifact(
        tmp_path, "eessi-2023.06-software-linux-x86_64-generic-1700000000.tar.gz", b"1"
    )
    second = artifact(
        tmp_path, "eessi-2023.06-software-linux-x86_64-generic-1700000001.tar.gz", b"22"
    )
    (tmp_path / "_bot_job4711.result").write_text(EESSI_SUCCESS)
    (tmp_path / "_bot_job4711.test").write_text(
        "[TEST]\ncomment_description = :grin: tests passed\nstatus = SUCCESS\n"
    )
    result = read_result(tmp_path, "4711")
    assert result.status == "success"
    assert result.problems == []
    assert [a.sha256 for a in result.artifacts] == [first["sha256"], second["sha256"]]
    assert [a.size for a in result.artifacts] == [1, 2]
    assert "100% of the modules installed" in result.summary
    assert "# not a comment: markdown heading" in result.summary
    assert result.tests is not None
    assert (result.tests.status, result.tests.summary) == ("success", ":grin: tests passed")


def test_eessi_failure(tmp_path: Path) -> None:
    (tmp_path / "_bot_job12.result").write_text(
        "[RESULT]\ncomment_description = :cry: FAILURE\nstatus = FAILURE\nartefacts =\n"
    )
    result = read_result(tmp_path, "12")
    assert result.status == "failure"
    assert result.summary == ":cry: FAILURE"
    assert result.artifacts == []
    assert result.problems == []
    assert result.tests is None


def test_eessi_multiline_artefacts_with_blank_lines_and_any_job_id(tmp_path: Path) -> None:
    for name in ("a.tar.gz", "b.tar.gz", "c.tar.gz"):
        artifact(tmp_path, name, name.encode())
    (tmp_path / "_bot_job12.result").write_text(
        "; written by check-build.sh\n[RESULT]\nstatus = SUCCESS\n"
        "artefacts = a.tar.gz\n    b.tar.gz\n\n    c.tar.gz\ncomment_description = ok\n"
    )
    (tmp_path / "_bot_job12.test").write_text("[TEST]\nstatus = FAILURE\n")
    # The backend's id does not match the file's (e.g. the local executor): any one is used.
    result = read_result(tmp_path, "/var/lib/layerbot/jobs/9")
    assert result.status == "success"
    assert [a.name for a in result.artifacts] == ["a.tar.gz", "b.tar.gz", "c.tar.gz"]
    assert result.tests is not None and result.tests.status == "failure"
    assert result.source == tmp_path / "_bot_job12.result"


def test_eessi_missing_section_and_unknown_status(tmp_path: Path) -> None:
    (tmp_path / "_bot_job1.result").write_text("[RESULTS]\nstatus = SUCCESS\n")
    result = read_result(tmp_path, "1")
    assert result.status == "failure"
    assert result.problems == [
        "_bot_job1.result has no [RESULT] section (sections found: [RESULTS])"
    ]

    (tmp_path / "_bot_job1.result").write_text("[RESULT]\nstatus = UNKNOWN\n")
    result = read_result(tmp_path, "1")
    assert result.status == "failure"
    assert "status UNKNOWN" in result.problems[0]


def test_eessi_corrupt_ini_and_missing_artefact(tmp_path: Path) -> None:
    (tmp_path / "_bot_job2.result").write_text("status = SUCCESS\n")  # no section header
    result = read_result(tmp_path, "2")
    assert result.status == "failure"
    assert "not a valid INI file" in result.problems[0]

    (tmp_path / "_bot_job2.result").write_text(
        "[RESULT]\nstatus = SUCCESS\nartefacts = missing.tar.gz\n"
    )
    result = read_result(tmp_path, "2")
    assert result.status == "failure"
    assert result.problems == ["artifact missing.tar.gz (in _bot_job2.result) does not exist"]


def test_eessi_broken_test_file_does_not_fail_the_build(tmp_path: Path) -> None:
    (tmp_path / "_bot_job3.result").write_text("[RESULT]\nstatus = SUCCESS\n")
    (tmp_path / "_bot_job3.test").write_text("[OTHER]\nstatus = SUCCESS\n")
    result = read_result(tmp_path, "3")
    assert result.status == "success"
    assert result.tests is None
    assert result.problems == [
        "tests: _bot_job3.test has no [TEST] or [RESULT] section (sections found: [OTHER])"
    ]


# --- no result, logs -------------------------------------------------------------------------


def test_no_result_file_gives_failure_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "build.log"
    log.parent.mkdir()
    log.write_text("".join(f"step {i}\n" for i in range(100)) + "error: compiler died\n")
    result = read_result(tmp_path, "77", log_file=log, tail_lines=3)
    assert result.status == "failure"
    assert result.summary == (
        "no result file: the job produced no result.json or _bot_job77.result"
    )
    assert result.problems == [result.summary]
    assert result.log_tail == "step 98\nstep 99\nerror: compiler died"
    assert result.source is None


def test_tail_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert tail(path, 5) == ""  # absent
    path.write_text("a\nb\nc")  # no final newline
    assert tail(path, 2) == "b\nc"
    assert tail(path, 10) == "a\nb\nc"
    assert tail(path, 0) == ""
    path.write_bytes(b"ok\n\xff\xfe broken utf-8\n")
    assert tail(path, 1) == "\ufffd\ufffd broken utf-8"
    # Lines longer than a block are put together across blocks.
    path.write_text("x" * 200_000 + "\nlast\n")
    assert tail(path, 2, block_size=4096) == "x" * 200_000 + "\nlast"


def test_tail_of_a_huge_log_reads_only_its_end(tmp_path: Path) -> None:
    path = tmp_path / "huge.log"
    with path.open("wb") as f:
        f.truncate(4 * 1024**3)  # 4 GiB, sparse: reading it all would take many seconds
        f.seek(0, 2)
        f.write(b"".join(b"line %d\n" % i for i in range(1000)))
    started = time.monotonic()
    text = tail(path, 5)
    assert time.monotonic() - started < 0.5
    assert text == "line 995\nline 996\nline 997\nline 998\nline 999"
