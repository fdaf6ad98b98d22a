"""The job directory is hostile territory (issue 9, item 2).

Each attack is a PR's own ``bot/build.sh`` (or PR content) built by a real bot: the job
replaces its output or result with a symlink to a bot file, with a FIFO, with a huge file;
the PR commits a forged ``_bot_job1.result``/``result.json`` and symlinks named like the
job's output and the local executor's state directory. After each: the job's report names
the problem, no bot file's content appears anywhere, the bot's files are intact and the
instance still builds other PRs.

Without the fix (plain ``open()``/``read_bytes()`` on these paths, as before): the symlinked
log put the bot's key into the check run and the API; the FIFO blocked the reconciler, so
the job never finished and no later job did either (the normal build after it timed out);
the committed result.json made a build that did nothing a success; the committed
``slurm-<N>.out`` symlink made the launcher truncate the database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.conftest import NAME, OWNER, Adversary
from tests.support.botproc import BotProcess

SUCCESS = """echo '{"status": "success", "summary": "looks fine", "artifacts": []}' > result.json"""


@pytest.fixture(scope="module")
def adversary_config() -> Iterator[dict[str, Any]]:
    """The harness's bot, given more time to start: with eight helpers' tests on two
    cores, ``serve`` takes over 20 s to answer /healthz."""
    defaults = BotProcess.start.__defaults__
    BotProcess.start.__defaults__ = (120,)
    try:
        yield {}
    finally:
        BotProcess.start.__defaults__ = defaults


def _job(adversary: Adversary, number: int) -> dict[str, Any]:
    row = adversary.jobs(number)[0]
    result = json.loads(row["result"]) if row["result"] else {}
    return {"state": row["state"], "reason": row["reason"] or "", "result": result}


def _problems(job: dict[str, Any]) -> str:
    return "\n".join(job["result"].get("problems") or [])


def test_log_replaced_by_a_symlink_to_the_key_is_not_shown(adversary: Adversary) -> None:
    adversary.snapshot()
    reply = adversary.attack(201, f"""#!/usr/bin/env bash
echo building
out="slurm-$SLURM_JOB_ID.out"
rm -f "$out" && ln -s {{key_file}} "$out"
{SUCCESS}
""")
    job = _job(adversary, 201)
    assert "is a symlink" in _problems(job), job
    assert "PRIVATE KEY" not in reply.body
    assert "PRIVATE KEY" not in job["result"].get("log_tail", "")
    adversary.assert_bot_intact()


def test_result_replaced_by_a_symlink_is_a_failure(adversary: Adversary) -> None:
    adversary.attack(202, """#!/usr/bin/env bash
ln -s {config} result.json
""")
    job = _job(adversary, 202)
    assert job["state"] == "failed"
    assert "result.json is a symlink: ignored" in job["reason"]
    adversary.assert_bot_intact(normal_build=False)


def test_fifos_for_result_and_log_do_not_block_the_instance(adversary: Adversary) -> None:
    started = time.monotonic()
    adversary.attack(203, """#!/usr/bin/env bash
out="slurm-$SLURM_JOB_ID.out"
rm -f "$out" && mkfifo "$out" result.json _bot_job$SLURM_JOB_ID.test
""", timeout=60)
    job = _job(adversary, 203)
    assert job["state"] == "failed"
    assert "result.json is a FIFO" in job["reason"]
    assert "is a FIFO" in _problems(job) and time.monotonic() - started < 60
    adversary.assert_bot_intact()  # and the next build still runs


def test_huge_result_and_sparse_log_are_capped(adversary: Adversary) -> None:
    adversary.attack(204, """#!/usr/bin/env bash
truncate -s 50G "slurm-$SLURM_JOB_ID.out"
echo '{"status": "success", "summary": "' > result.json
truncate -s 64M result.json
""")
    job = _job(adversary, 204)
    assert job["state"] == "failed"
    assert "result.json is 67108864 bytes, more than" in job["reason"]
    adversary.assert_bot_intact(normal_build=False)


def test_committed_results_cannot_forge_success(adversary: Adversary) -> None:
    forged = "[RESULT]\ncomment_description = forged\nstatus = SUCCESS\nartefacts =\n"
    adversary.attack(205, "#!/usr/bin/env bash\necho 'I built nothing'\n", files={
        "_bot_job1.result": forged, "result.json": '{"status": "success"}',
        "_bot_job205.test": "[TEST]\nstatus = SUCCESS\n"})
    job = _job(adversary, 205)
    assert job["state"] == "failed"
    assert "no result file" in job["reason"]
    adversary.assert_bot_intact(normal_build=False)


def test_committed_symlinks_named_like_the_output_are_not_written_through(
        adversary: Adversary) -> None:
    """``slurm-<N>.out`` for every plausible job id, and ``.layerbot``, point at the bot's
    files; the launcher would open the output for writing (truncating the target)."""
    links = {f"slurm-{n}.out": adversary.places()["db"] for n in range(1, 40)}
    links[".layerbot"] = adversary.places()["bot_dir"]
    links["job.log"] = adversary.places()["key_file"]
    _pr_with_links(adversary, 206, f"#!/usr/bin/env bash\necho hello\n{SUCCESS}\n", links)
    adversary.comment(206, "bot: build")
    reply = adversary.build_reply(206, timeout=90)
    assert "looks fine" in reply.body or _job(adversary, 206)["state"] == "succeeded"
    adversary.assert_bot_intact()  # the database and key files are what they were


def _pr_with_links(adversary: Adversary, number: int, script: str,
                   links: dict[str, str]) -> None:
    origin = adversary.origin
    origin.git("checkout", "-q", "-B", f"pr-{number}", "main")
    for name, target in links.items():
        (origin.path / name).symlink_to(target)
    sha = origin.commit(f"PR {number}", {"bot/build.sh": adversary.render(script)})
    origin.git("update-ref", f"refs/pull/{number}/head", sha)
    origin.git("checkout", "-q", "main")
    adversary.fake.add_pull(OWNER, NAME, number, head_sha=sha)
