"""`layerbot init --from-eessi`: EESSI's own app.cfg.example (unmodified) migrated, loaded
and checked; every section and setting accounted for (issue 10, item 5)."""

from __future__ import annotations

import asyncio
import configparser
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from layerbot import config as config_mod
from layerbot.cli.doctor import run_checks
from layerbot.cli.eessi_migration import MigrationError, migrate, parse_slurm_params

DATA = Path(__file__).resolve().parents[1] / "data" / "eessi"
APP_CFG = DATA / "app.cfg.example"
REPOS_CFG = DATA / "repos.cfg"


def layerbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerbot", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**os.environ})


@pytest.fixture
def migrated(tmp_path: Path) -> tuple[Path, config_mod.Config]:
    out = tmp_path / "layerbot.toml"
    result = layerbot("init", "--from-eessi", str(APP_CFG), "--repos-cfg", str(REPOS_CFG),
                      "--output", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 node type(s), 6 repository target(s)" in result.stdout
    return out, config_mod.load(out, overrides={"instance": {"data_dir": str(tmp_path)}})


def test_eessis_example_migrates_to_a_configuration_that_loads(
        migrated: tuple[Path, config_mod.Config]) -> None:
    _, cfg = migrated
    assert cfg.instance.name == "MY-bot" and cfg.github.app_id == 123456
    assert cfg.backend.kind == "slurm" and cfg.backend.poll_seconds == 60
    slurm = cfg.backend.slurm
    assert (slurm.handover, slurm.delayed_begin_seconds) == ("hold_release", 120)
    assert (slurm.sbatch, slurm.squeue, slurm.scontrol) == (
        "/usr/bin/sbatch", "/usr/bin/squeue", "/usr/bin/scontrol")
    assert slurm.defaults == {}  # slurm_params was only --hold, which layerbot sets itself
    nodes = {n.name: n for n in cfg.node_types}
    assert nodes["x86_64-amd-zen2"].cpu_target == "x86_64/amd/zen2"
    assert nodes["x86_64-amd-zen2"].options == {"partition": "x86-64-amd-zen2-node"}
    assert nodes["x86_64-amd-zen2"].repo_targets == ["eessi.io-2023.06-software",
                                                      "eessi.io-2025.06-software"]
    assert nodes["x86_64-generic"].options == {"partition": "x86-64-generic-node"}
    repos = {r.id: r for r in cfg.repo_targets}
    assert len(repos) == 6
    software = repos["eessi.io-2025.06-software"]
    assert (software.name, software.version, software.container) == (
        "software.eessi.io", "2025.06", "docker://ghcr.io/eessi/build-node:debian12")
    assert software.facts["config_bundle"] == "eessi.io-cfg_files.tgz"
    assert cfg.access.command == ["role:read"]  # empty command_permission: everyone
    assert cfg.access.build == ["-NOT_ALLOWED_GH_ACCOUNT_NAME-"]
    assert cfg.access.deploy == []  # empty deploy_permission: nobody, as in EESSI
    assert cfg.reporting.chatlevel == "normal"
    assert cfg.deploy.policy == "once" and cfg.deploy.staging == "s3"
    assert cfg.deploy.s3.buckets == {"*": "eessi-staging"}
    # EESSI's staging layout; empty prefixes: EESSI's legacy path, as its bot would use
    assert cfg.deploy.layout == "eessi"
    assert (cfg.deploy.artifact_prefix, cfg.deploy.metadata_prefix) == ("", "")
    assert cfg.build.site_config["local_tmp"] == "/tmp/$USER/EESSI"
    assert cfg.build.jobs_dir == Path(os.environ["HOME"]) / "jobs"


def test_every_setting_of_app_cfg_is_mapped_or_commented(
        migrated: tuple[Path, config_mod.Config]) -> None:
    out, _ = migrated
    text = out.read_text()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(APP_CFG)
    settings = {f"{s}.{k}" for s in parser.sections() for k in parser[s]}
    migration = migrate(APP_CFG.read_text(), REPOS_CFG.read_text(), environ={})
    assert migration.accounted == settings
    assert len(settings) == 63 and len(parser.sections()) == 14  # the example, unmodified
    for setting in migration.unmapped:  # each without an equivalent says what to do
        section, key = setting.split(".", 1)
        assert f"# [{section}] {key} = " in text and "\n#   -> " in text, setting
    assert "--hold: layerbot sets it itself" in text
    assert "TODO: [github] private_key names no file here" in text
    assert "private_key_file" not in tomllib.loads(text)["github"]  # the file is missing


def test_doctor_loads_the_result_and_checks_it(migrated: tuple[Path, config_mod.Config]) -> None:
    _, cfg = migrated
    checks = {c.name: c for c in asyncio.run(run_checks(cfg))}
    assert checks["configuration"].ok
    # What the example leaves as placeholders is what doctor reports, with remedies.
    assert not checks["GitHub App"].ok and checks["GitHub App"].remedy


def test_node_type_map_with_accelerators_and_short_sbatch_options(tmp_path: Path) -> None:
    # EESSI >= 0.9, as its README documents node_type_map.
    app_cfg = """
[github]
app_id = 1
app_name = eessi-bot-site
[buildenv]
slurm_params = --hold --account eessi --get-user-env
job_handover_protocol = delayed_begin
job_delay_begin_factor = 5
build_job_script = /opt/eessi-bot/scripts/bot-build.slurm
allowed_exportvars = ["SKIP_TESTS=yes", "SKIP_TESTS=no", "EESSI_DEBUG=1"]
clone_git_repo_via = ssh
[deploycfg]
bucket_name = {"eessi.io-2023.06-software": "eessi.io-staging-2023.06"}
upload_policy = none
endpoint_url = https://s3.example.org
artefact_prefix = {"eessi.io-2023.06-software": "new/${github_repository}/${pull_request_number}"}
metadata_prefix = {"eessi.io-2023.06-software": "new/${github_repository}/${pull_request_number}"}
[architecturetargets]
node_type_map = {
    "cpu_zen2": {"os": "linux", "cpu_subdir": "x86_64/amd/zen2",
                 "slurm_params": "-p rome --nodes 1 --ntasks-per-node 16 --cpus-per-task 1",
                 "repo_targets": ["eessi.io-2023.06-software"]},
    "gpu_h100": {"os": "linux", "cpu_subdir": "x86_64/amd/zen4", "accel": "nvidia/cc90",
                 "slurm_params": "-p gpu_h100 --nodes 1 --gpus-per-node 1 --output=x.out",
                 "repo_targets": ["eessi.io-2023.06-software"]}}
[job_manager]
poll_interval = 30
scontrol_command = /usr/bin/scontrol --clusters=%%(cluster)s
[some_future_section]
shiny = yes
"""
    migration = migrate(app_cfg, None, environ={})
    out = tmp_path / "site.toml"
    out.write_text(migration.render())
    cfg = config_mod.load(out)
    nodes = {n.name: n for n in cfg.node_types}
    assert nodes["cpu_zen2"].options == {"partition": "rome", "nodes": "1",
                                         "ntasks-per-node": "16", "cpus-per-task": "1"}
    assert nodes["gpu_h100"].accelerator == "nvidia/cc90"
    assert nodes["gpu_h100"].options == {"partition": "gpu_h100", "nodes": "1",
                                         "gpus-per-node": "1"}
    assert cfg.backend.slurm.defaults == {"account": "eessi"}
    assert (cfg.backend.slurm.handover, cfg.backend.slurm.delayed_begin_seconds) == (
        "delayed_begin", 150)
    assert cfg.build.job_script == "/opt/eessi-bot/scripts/bot-build.slurm"
    assert cfg.build.allowed_exportvars == ["EESSI_DEBUG", "SKIP_TESTS"]
    assert cfg.build.clone_url == "git@github.com:{repo}.git"
    assert cfg.deploy.s3.buckets == {"eessi.io-2023.06-software": "eessi.io-staging-2023.06"}
    assert cfg.access.deploy == []  # upload_policy = none
    assert [r.id for r in cfg.repo_targets] == ["eessi.io-2023.06-software"]
    text = out.read_text()
    assert "--output: layerbot sets it itself" in text
    assert "--get-user-env: layerbot sets it itself" in text
    assert "[some_future_section] shiny = yes" in text
    assert cfg.deploy.artifact_prefix == cfg.deploy.metadata_prefix == {
        "eessi.io-2023.06-software": "new/${github_repository}/${pull_request_number}"}
    assert "[job_manager] scontrol_command" in text and "backend.slurm.clusters" in text
    assert "TODO: not defined in repos.cfg" in text


def test_a_metadata_prefix_elsewhere_is_left_for_the_operator(tmp_path: Path) -> None:
    migration = migrate("[deploycfg]\nartefact_prefix = a/${pull_request_number}\n"
                        "metadata_prefix = meta/${pull_request_number}\n")
    out = tmp_path / "x.toml"
    out.write_text(migration.render())
    cfg = config_mod.load(out)
    assert cfg.deploy.artifact_prefix == "a/${pull_request_number}"
    assert cfg.deploy.metadata_prefix == ""
    assert "TODO: EESSI's metadata_prefix differs from artefact_prefix" in out.read_text()


def test_slurm_params_in_the_forms_eessi_sites_write() -> None:
    options, problems = parse_slurm_params(
        "-p rome -N1 --time=04:00:00 --constraint shape=c5a.2xlarge --exclusive -A 'my proj'")
    assert options == {"partition": "rome", "nodes": "1", "time": "04:00:00",
                       "constraint": "shape=c5a.2xlarge", "exclusive": "true",
                       "account": "my proj"}
    assert problems == []
    _, problems = parse_slurm_params("--hold -J prod stray")
    assert problems[0].startswith("--hold: layerbot sets it itself")
    assert problems[1].startswith("--job-name: layerbot sets it itself")
    assert problems[2] == "'stray' is not an sbatch option; left out"


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="not an INI file"):
        migrate("no section here")
    with pytest.raises(MigrationError, match=r"\[architecturetargets\] node_type_map is not "
                                             "valid JSON"):
        migrate("[architecturetargets]\nnode_type_map = {broken\n")
    missing = layerbot("init", "--from-eessi", str(tmp_path / "nope.cfg"), "--output",
                       str(tmp_path / "x.toml"), cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read app.cfg" in missing.stderr
    broken = tmp_path / "app.cfg"
    broken.write_text("[architecturetargets]\narch_target_map = {\n")
    result = layerbot("init", "--from-eessi", str(broken), "--output", str(tmp_path / "y.toml"),
                      cwd=tmp_path)
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "y.toml").exists()
