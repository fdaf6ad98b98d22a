"""The examples build for real with `layerbot run`, as the README's quick start does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EB = Path(os.environ.get("LAYERBOT_EB", "/opt/layerbot-easybuild/bin/eb"))


def run(args: list[str], data_dir: Path, config: Path | None = None) -> tuple[int, dict]:
    if config is None:  # embedded defaults, but with the data kept in the test's tmp dir
        config = data_dir / "layerbot.toml"
        config.write_text(f'[instance]\ndata_dir = "{data_dir / "data"}"\n')
    proc = subprocess.run([sys.executable, "-m", "layerbot", "run", *args, "--json",
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_the_software_layer_example_builds_its_tarball(tmp_path: Path) -> None:
    code, result = run([str(ROOT / "examples" / "software-layer")], tmp_path)
    assert code == 0 and result["succeeded"], result
    (job,) = result["jobs"]
    (artifact,) = job["artifacts"]
    assert artifact["name"].startswith("hello-1.0-") and artifact["size"] > 0
    tarballs = list((tmp_path / "data" / "jobs").rglob(artifact["name"]))
    # The digest a deploy signs, so a script can check the file before it is staged.
    assert artifact["sha256"] == hashlib.sha256(tarballs[0].read_bytes()).hexdigest()
    with tarfile.open(tarballs[0]) as tar:
        assert "software/bin/hello" in tar.getnames()


def test_a_plain_directory_is_snapshotted_again_when_it_changes(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    subprocess.run(["cp", "-r", str(ROOT / "examples" / "software-layer"), str(layer)],
                   check=True)
    _, first = run([str(layer)], tmp_path)
    (layer / "src" / "hello.c").write_text("int main(void) { return 1; }\n")
    code, second = run([str(layer)], tmp_path)
    assert first["head_sha"] != second["head_sha"]
    assert code == 1 and second["jobs"][0]["state"] == "failed"


def test_a_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "layerbot", "run", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "not a directory and not a git URL" in proc.stderr


def test_the_easybuild_example_installs_a_module(tmp_path: Path) -> None:
    if not EB.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{EB} is missing: scripts/easybuild.sh must run before the tests")
        pytest.skip("EasyBuild is not installed (run scripts/easybuild.sh)")
    config = tmp_path / "layerbot.toml"
    example = ROOT / "examples" / "easybuild-layer"
    text = (example / "layerbot.toml").read_text().replace(
        '"../../var/easybuild-example"', f'"{tmp_path / "data"}"')
    config.write_text(text)
    code, result = run([str(example)], tmp_path, config)
    assert code == 0, result
    assert "module load hello/1.0" in result["jobs"][0]["summary"]


def pipeline_run(tmp_path: Path, backend: dict[str, object] | None = None,
                 env: dict[str, str] | None = None) -> tuple[int, dict]:
    if not EB.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{EB} is missing: scripts/easybuild.sh must run before the tests")
        pytest.skip("EasyBuild is not installed (run scripts/easybuild.sh)")
    example = ROOT / "examples" / "easybuild-pipeline"
    text = (example / "layerbot.toml").read_text().replace(
        '"../../var/easybuild-pipeline-example"', f'"{tmp_path / "data"}"')
    if backend:
        text += "\n[backend]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in backend.items())
    config = tmp_path / "layerbot.toml"
    config.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "layerbot", "run", str(example), "--json",
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, **(env or {})})
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def check_stack(result: dict, data: Path) -> None:
    """A plan job and three steps: libgreet and farewell at once, greeter after libgreet;
    each step's tarball kept in the agent's artifact store."""
    plan_job, *steps = result["jobs"]
    assert plan_job["summary"] == "a plan of 3 steps", result
    by_name = {}
    for job in steps:
        assert job["state"] == "succeeded", job
        (tarball,) = (data / "jobs" / ".step-artifacts" / str(job["id"])).glob("*.tar.gz")
        by_name[tarball.name.removesuffix(".tar.gz")] = job
    assert set(by_name) == {"libgreet-1.0", "greeter-1.0", "farewell-1.0"}, by_name
    greeter, libgreet = by_name["greeter-1.0"], by_name["libgreet-1.0"]
    assert greeter["started_at"] >= libgreet["ended_at"]  # it needs libgreet


def test_the_easybuild_pipeline_builds_its_stack_on_the_local_executor(tmp_path: Path) -> None:
    code, result = pipeline_run(tmp_path)
    assert code == 0, result
    check_stack(result, tmp_path / "data")


@pytest.mark.slurm
def test_the_easybuild_pipeline_builds_its_stack_on_slurm(tmp_path: Path) -> None:
    from tests.backends.conftest import discover

    cluster = discover()
    code, result = pipeline_run(tmp_path, {"kind": "slurm", "poll_seconds": 0.5},
                                env={"SLURM_CONF": cluster.conf})
    assert code == 0, result
    check_stack(result, tmp_path / "data")
    assert all(j["backend_id"].split("/")[0].isdigit() for j in result["jobs"])  # sbatch ids
