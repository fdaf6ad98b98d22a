"""Job scripts written for EESSI's bot run unchanged, on the local executor and on Slurm.

The scripts here were written for these tests and follow the contract of EESSI's site
script (``bot-build.slurm``) and its check scripts in software-layer's ``bot/``:

- the site script runs in the job directory, sources ``cfg/export_vars.sh``, runs the PR's
  ``bot/build.sh``, then ``bot/check-build.sh``, ``bot/test.sh`` and ``bot/check-test.sh``;
  without a ``bot/check-test.sh`` it writes ``_bot_job${SLURM_JOB_ID}.test`` with a
  ``[RESULT]`` section and no verdict;
- the check scripts look for the job's output as ``slurm-${SLURM_JOB_ID}.out`` in the job
  directory ("no job output file" otherwise) and write ``_bot_job${SLURM_JOB_ID}.result``
  (``[RESULT]``: comment_description, status, artefacts) and ``.test`` (``[TEST]``).

Before the fix, every such job failed with "no job output file" (the output went to
``layerbot-job.log``; the local executor had no ``SLURM_JOB_ID``), and the ``.test`` file
of a PR without ``check-test.sh`` was a test-file problem.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.botproc import BotProcess, free_port, write_config
from tests.support.e2e import Session
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")

SITE_SCRIPT = """#!/usr/bin/env bash
# EESSI-style site job script (written for layerbot's tests, after bot-build.slurm's contract)
echo "site script: job ${SLURM_JOB_ID} in ${PWD}"
[[ -f cfg/job.cfg ]] || { echo "no cfg/job.cfg"; exit 2; }
[[ -f cfg/export_vars.sh ]] && source cfg/export_vars.sh
bot/build.sh
[[ -f bot/check-build.sh ]] && bot/check-build.sh
[[ -f bot/test.sh ]] && bot/test.sh
if [[ -f bot/check-test.sh ]]; then
    bot/check-test.sh
else
    {
        echo "[RESULT]"
        echo "comment_description = :shrug: UNKNOWN _(no bot/check-test.sh in the PR)_"
    } > "_bot_job${SLURM_JOB_ID}.test"
fi
exit 0
"""

BUILD = """#!/usr/bin/env bash
echo "building for $(grep -m1 '^software_subdir' cfg/job.cfg || echo '?')"
echo "${BUILD_LINE:-build ok}"
tar czf "eessi-2023.06-software-linux-x86_64-generic-${SLURM_JOB_ID}.tar.gz" bot
"""

CHECK_BUILD = """#!/usr/bin/env bash
job_out="slurm-${SLURM_JOB_ID}.out"
result="_bot_job${SLURM_JOB_ID}.result"
if [[ ! -f "${job_out}" ]]; then
    status=FAILURE; why="no job output file ${job_out}"
elif grep -q '^build ok' "${job_out}"; then
    status=SUCCESS; why="built fine (seen in ${job_out})"
else
    status=FAILURE; why="build failed (see ${job_out})"
fi
{
    echo "[RESULT]"
    echo "comment_description = ${why}"
    echo "status = ${status}"
    echo "artefacts = "
    [[ ${status} == SUCCESS ]] && ls eessi-*.tar.gz | sed 's/^/    /'
} > "${result}"
"""

CHECK_TEST = """#!/usr/bin/env bash
[[ -f "slurm-${SLURM_JOB_ID}.out" ]] || exit 1
printf '[TEST]\\ncomment_description = all tests pass\\nstatus = %s\\n' "${TEST_STATUS:-SUCCESS}" \\
    > "_bot_job${SLURM_JOB_ID}.test"
"""


class Env(Session):
    backend: str = "local"


@pytest.fixture(scope="module", params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def env(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp(f"eessi-{request.param}")
    site = tmp / "site"
    site.mkdir()
    (site / "bot-build.slurm").write_text(SITE_SCRIPT)
    (site / "bot-build.slurm").chmod(0o755)
    for d in (tmp, site):
        d.chmod(0o755)
    backend: dict[str, Any] = {"kind": request.param, "poll_seconds": 0.3}
    env_vars: dict[str, str] = {}
    if request.param == "slurm":
        from tests.backends.conftest import discover
        slurm = discover()
        env_vars["SLURM_CONF"] = slurm.conf
        backend["slurm"] = {"handover": "hold_release"}
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    port = free_port()
    config = write_config(
        tmp / "bot", api_url=fake.url, app_id=DEFAULT_APP_ID, private_key_pem=private,
        port=port, instance=f"eessi-{uuid.uuid4().hex[:6]}", extra={
            "build": {"clone_url": str(tmp / "origin" / "{repo}"), "time_limit_minutes": 2,
                      "job_script": str(site / "bot-build.slurm"),
                      "allowed_exportvars": ["BUILD_LINE", "TEST_STATUS"]},
            "backend": backend,
            "reporting": {"min_edit_interval_seconds": 0},
            "node_types": [{"name": "generic", "cpu_target": "x86_64/generic",
                            **({"options": {"partition": "build"}}
                               if request.param == "slurm" else {})}],
            "repo_targets": [{"id": "eessi-2023.06", "name": "software.eessi.io",
                              "version": "2023.06"}]})
    bot = BotProcess(config, port, env=env_vars)
    bot.start(timeout=60)
    e = Env(fake, origin, bot)
    e.backend = request.param
    try:
        yield e
    finally:
        bot.stop()
        fake.stop()
    fake.assert_no_violations()


def _build(env: Env, number: int, files: dict[str, str], command: str = "") -> dict[str, Any]:
    env.pr(number, files={"bot/build.sh": BUILD, "bot/check-build.sh": CHECK_BUILD, **files})
    env.comment(number, f"bot: build for:arch=x86_64/generic {command}".strip())
    env.build_reply(number, timeout=120)
    row = env.jobs(number)[0]
    return {"state": row["state"], "reason": row["reason"] or "", "job_dir": row["job_dir"],
            "backend_id": row["backend_id"], "id": row["id"],
            "result": json.loads(row["result"]) if row["result"] else {}}


def test_eessi_job_with_check_test_succeeds(env: Env) -> None:
    job = _build(env, 1, {"bot/check-test.sh": CHECK_TEST})
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["summary"].startswith("built fine (seen in slurm-")
    assert result["tests"]["status"] == "success"
    assert result["problems"] == []
    # The output is where EESSI's scripts look for it, under the id the job saw.
    assert "site script: job" in result["log_tail"] and "build ok" in result["log_tail"]
    outputs = list(Path(job["job_dir"]).glob("slurm-*.out"))
    assert len(outputs) == 1
    job_id = outputs[0].name.removeprefix("slurm-").removesuffix(".out")
    expected = str(job["id"]) if env.backend == "local" else job["backend_id"].split("/")[0]
    assert job_id == expected.split(";")[0]
    assert (Path(job["job_dir"]) / f"_bot_job{job_id}.result").is_file()


def test_eessi_job_without_check_test_reads_as_tests_unknown(env: Env) -> None:
    job = _build(env, 2, {})
    assert job["state"] == "succeeded", job  # never a failure of a successful build
    tests = job["result"]["tests"]
    assert tests["status"] == "unknown"
    assert "no bot/check-test.sh" in tests["summary"]
    assert job["result"]["problems"] == []


def test_failed_eessi_build_names_the_build_first_then_the_test_file(env: Env) -> None:
    job = _build(env, 3, {"bot/check-test.sh": CHECK_TEST},
                 "exportvariable:BUILD_LINE=compiler_died exportvariable:TEST_STATUS=MAYBE")
    assert job["state"] == "failed", job
    assert job["reason"].startswith("build failed (see slurm-"), job["reason"]
    assert "; tests: _bot_job" in job["reason"] and "'MAYBE'" in job["reason"]
