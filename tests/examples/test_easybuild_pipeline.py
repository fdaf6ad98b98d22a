"""The EasyBuild pipeline example (examples/easybuild-pipeline), run for real without the bot.

The tests play the bot's part of docs/pipelines.md by hand: a checkout of the
example as a PR (a git repository whose head commit adds the easystack, and the
``cfg/job.cfg`` the bot writes), the plan script with ``$LAYERBOT_PLAN_FILE``, then each
step in a fresh job directory of its own with ``$LAYERBOT_STEP_OUTPUT``, ``cfg/needs.json``
and ``$LAYERBOT_NEED_<ID>``. As root, scripts run as the unprivileged job user
(``layerbot-job``, scripts/jobuser.sh) with ``HOME`` at the job directory, as jobs do.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "easybuild-pipeline"
EB = Path(os.environ.get("LAYERBOT_EB", "/opt/layerbot-easybuild/bin/eb"))
JOB_USER = "layerbot-job"
LMOD = "source $(ls -d /usr/share/lmod/*/init/bash | head -1)"

A, B, C = "libgreet-1.0", "greeter-1.0", "farewell-1.0"


@pytest.fixture(autouse=True, scope="module")
def _easybuild() -> None:
    if not EB.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{EB} is missing: scripts/easybuild.sh must run before the tests")
        pytest.skip(f"EasyBuild is not installed at {EB} (run scripts/easybuild.sh)")


# ------------------------------------------------------------------------ the job's side


def job_user() -> pwd.struct_passwd | None:
    """The user scripts run as: the job user when the tests run as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(JOB_USER)
    except KeyError:
        return None  # no job user: run as root (the scripts allow EasyBuild as root)


def give(path: Path) -> None:
    """Hand a directory the bot prepared to the job user (as the bot's job dirs are)."""
    user = job_user()
    if user is None:
        return
    for p in [path, *path.rglob("*")]:
        os.lchown(p, user.pw_uid, user.pw_gid)


def run(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``/bin/bash -c command`` in a job directory, with a job's small environment."""
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "HOME": str(cwd), "USER": JOB_USER, **env}
    if "LAYERBOT_EB" in os.environ:
        environment["LAYERBOT_EB"] = os.environ["LAYERBOT_EB"]
    argv = ["/bin/bash", "-c", command]
    if job_user() is not None:
        # runuser would reset HOME: the environment is given explicitly instead.
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", JOB_USER, "--", "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in environment.items()), *argv]
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600, check=False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def pr_checkout(path: Path, change: Callable[[Path], None] | None = None) -> Path:
    """The example as a PR's checkout: the base commit has the easyconfigs and an easystack
    the PR does not touch (it lists an easyconfig that does not exist, so reading it would
    fail the plan); the head commit adds easystacks/stack.yml (and ``change``)."""
    shutil.copytree(EXAMPLE, path)
    stack = path / "easystacks" / "stack.yml"
    text = stack.read_text()
    stack.unlink()
    (path / "easystacks" / "untouched.yml").write_text("easyconfigs:\n  - nowhere-1.0.eb\n")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    base = git(path, "rev-parse", "HEAD")
    stack.write_text(text)
    if change:
        change(path)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "the PR")
    # What the bot writes beside the checkout (untracked): the job's facts.
    (path / "cfg").mkdir()
    (path / "cfg" / "job.cfg").write_text(
        f"[layerbot]\nbase_sha = {base}\nhead_sha = {git(path, 'rev-parse', 'HEAD')}\n")
    give(path)
    return path


def plan(checkout: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    plan_file = checkout / "plan.json"
    proc = run("bot/plan.sh", checkout, LAYERBOT_PLAN_FILE=str(plan_file), **env)
    return proc, plan_file


def need_var(step_id: str) -> str:
    return "LAYERBOT_NEED_" + "".join(c if c.isalnum() else "_" for c in step_id.upper())


def run_step(root: Path, step: dict, artifacts: dict[str, Path]) -> Path:
    """One step as its own job: a fresh checkout, the needed artifacts named in
    cfg/needs.json and $LAYERBOT_NEED_<ID>; returns the job directory."""
    job = root / f"job-{step['id']}"
    shutil.copytree(EXAMPLE, job)
    needs = {need: str(artifacts[need]) for need in step["needs"]}
    (job / "cfg").mkdir()
    (job / "cfg" / "needs.json").write_text(json.dumps(needs))
    (job / "step-output").mkdir()
    give(job)
    proc = run(step["command"], job,
               LAYERBOT_STEP_ID=step["id"], LAYERBOT_STEP_NAME=step["name"],
               LAYERBOT_STEP_COMMAND=step["command"],
               LAYERBOT_STEP_OUTPUT=str(job / "step-output"),
               LAYERBOT_NEEDS_FILE=str(job / "cfg" / "needs.json"),
               **{need_var(k): v for k, v in needs.items()})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return job


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def the_plan(tmp_path_factory: pytest.TempPathFactory) -> dict:
    checkout = pr_checkout(tmp_path_factory.mktemp("plan") / "checkout")
    proc, plan_file = plan(checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(plan_file.read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, the_plan: dict) -> dict[str, Path]:
    """Runs the plan's steps A, C, then B: each artifact is moved out of its job directory
    (as the bot keeps it) and A's job directory is removed before B runs, so B can only use
    A through its artifact. Returns the artifact directories and B's job directory."""
    root = tmp_path_factory.mktemp("steps")
    steps = {step["id"]: step for step in the_plan["steps"]}
    artifacts: dict[str, Path] = {}
    jobs = {}
    for step_id in (A, C, B):
        jobs[step_id] = run_step(root, steps[step_id], artifacts)
        artifacts[step_id] = root / f"artifact-{step_id}"
        (jobs[step_id] / "step-output").rename(artifacts[step_id])
        if step_id == A:
            shutil.rmtree(jobs[A])
    return {**artifacts, "B-job": jobs[B]}


# --------------------------------------------------------------------------------- tests


def test_the_plan_has_a_step_per_missing_easyconfig_and_the_dependencies(
        the_plan: dict) -> None:
    assert the_plan["version"] == 1
    steps = {step["id"]: step for step in the_plan["steps"]}
    assert set(steps) == {A, B, C}
    assert steps[B]["needs"] == [A]
    assert steps[A]["needs"] == [] and steps[C]["needs"] == []
    for step_id, step in steps.items():
        assert step["command"] == f"bot/step.sh easyconfigs/{step_id}.eb"
        assert step["cache_key"].startswith(f"{step_id}-") and len(step["cache_key"]) > 20
    assert steps[B]["name"] == "greeter/1.0"


def test_the_steps_build_in_order_and_b_uses_a_through_its_artifact(
        built: dict[str, Path]) -> None:
    for step_id in (A, B, C):
        assert [p.name for p in built[step_id].iterdir()] == [f"{step_id}.tar.gz"]
    with tarfile.open(built[B] / f"{B}.tar.gz") as tar:
        names = tar.getnames()
    assert "software/greeter/1.0/bin/greeter" in names
    assert "modules/all/greeter/1.0.lua" in names
    assert not any("libgreet" in n for n in names)  # B's artifact is B only

    # B's module loads A's (unpacked from A's artifact into B's job), and the program
    # prints A's message from A's shared library.
    job = built["B-job"]
    proc = run(f"set +u; {LMOD}; module use _deps/*/modules/all _install/modules/all;"
               " module load greeter/1.0 && greeter && ldd \"$(command -v greeter)\"", job)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeter says: greetings from libgreet 1.0" in proc.stdout
    assert f"{job}/_deps/1/software/libgreet/1.0/lib/libgreet.so" in proc.stdout


def test_an_installed_dependency_is_not_a_step(
        tmp_path: Path, built: dict[str, Path]) -> None:
    # The layer already has libgreet (A's artifact unpacked as the deployed stack).
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(built[A] / f"{A}.tar.gz") as tar:
        tar.extractall(site, filter="tar")
    give(site)
    checkout = pr_checkout(tmp_path / "checkout")
    proc, plan_file = plan(checkout, LAYERBOT_EB_MODULEPATH=str(site / "modules" / "all"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {step["id"]: step for step in json.loads(plan_file.read_text())["steps"]}
    assert set(steps) == {B, C}
    assert steps[B]["needs"] == [] and steps[C]["needs"] == []


@pytest.mark.parametrize("broken, message", [
    ("dependencies = [('libgreet', '1.0')\n", "greeter-1.0.eb"),  # a syntax error
    ("dependencies = [('libnowhere', '9.9')]\n", "libnowhere"),   # nothing provides it
])
def test_a_broken_easyconfig_fails_the_plan_clearly(
        tmp_path: Path, broken: str, message: str) -> None:
    def break_greeter(checkout: Path) -> None:
        ec = checkout / "easyconfigs" / "greeter-1.0.eb"
        ec.write_text(ec.read_text().replace("dependencies = [('libgreet', '1.0')]\n", broken))

    checkout = pr_checkout(tmp_path / "checkout", break_greeter)
    proc, plan_file = plan(checkout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "plan: EasyBuild failed" in proc.stderr and message in proc.stderr
    assert not plan_file.exists()


def test_the_bots_diff_file_decides_which_easystacks_count(tmp_path: Path) -> None:
    # A PR that changes only the README: its <N>.diff names no easystack, so nothing to build.
    checkout = pr_checkout(tmp_path / "checkout")
    (checkout / "7.diff").write_text(
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        "@@ -1 +1 @@\n-old\n+new\n")
    give(checkout)
    proc, plan_file = plan(checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(plan_file.read_text()) == {"version": 1, "steps": []}


def test_without_a_known_change_every_easystack_counts(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, checkout)  # no git, no diff, no cfg/job.cfg
    give(checkout)
    proc, plan_file = plan(checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "taking every easystack" in proc.stderr
    assert len(json.loads(plan_file.read_text())["steps"]) == 3


def test_a_step_without_the_artifact_it_needs_fails_and_builds_nothing_else(
        tmp_path: Path, the_plan: dict) -> None:
    step = next(s for s in the_plan["steps"] if s["id"] == B)
    job = tmp_path / "job"
    shutil.copytree(EXAMPLE, job)
    (job / "step-output").mkdir()
    give(job)
    proc = run(step["command"], job, LAYERBOT_STEP_OUTPUT=str(job / "step-output"))
    assert proc.returncode != 0
    assert "libgreet/1.0" in proc.stdout + proc.stderr  # EasyBuild names the missing module
    assert not (job / "_install" / "software" / "libgreet").exists()
    assert list((job / "step-output").iterdir()) == []
