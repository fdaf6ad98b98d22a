"""Options layerbot sets itself are refused when the configuration is loaded (and so by
`layerbot doctor`), naming the key and what to do instead; not later, on a PR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerbot import config as config_mod
from layerbot.core.slurm_options import RESERVED, option_problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "layerbot.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("option", sorted(RESERVED))
def test_every_reserved_option_is_refused_in_the_site_defaults(tmp_path: Path,
                                                                option: str) -> None:
    path = write(tmp_path, f'[backend.slurm.defaults]\n"{option}" = "x"\n')
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(path)
    (problem,) = caught.value.problems
    assert problem.startswith("backend.slurm.defaults:")
    assert f"--{option} itself" in problem and RESERVED[option] in problem


def test_spellings_and_every_place_an_option_can_be_set(tmp_path: Path) -> None:
    path = write(tmp_path, """
[backend]
kind = "slurm"
[backend.slurm]
defaults = { account = "eessi", "--Job_Name" = "prod" }
overridable = ["time", "hold"]
[[node_types]]
name = "zen2"
cpu_target = "x86_64/amd/zen2"
options = { partition = "rome", output = "/tmp/x.out" }
""")
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(path)
    text = "\n".join(caught.value.problems)
    assert "backend.slurm.defaults: '--Job_Name': layerbot sets --job-name itself" in text
    assert "instance.name" in text  # what to do instead: tell instances apart by name
    assert "backend.slurm.overridable: 'hold': layerbot sets --hold itself" in text
    assert "backend.slurm.handover" in text
    assert "node_types.0.options: 'output': layerbot sets --output itself" in text
    assert "slurm-<JOBID>.out" in text


def test_short_names_are_refused_in_slurm_defaults_but_local_keys_pass() -> None:
    assert option_problems({"p": "debug"}, long_names=True) == [
        "'p' is not an sbatch long option name (write e.g. partition, not p)"]
    assert option_problems({"cpus": "4", "partition": "x", "time": "1:00:00"},
                           long_names=True) == []


def test_doctor_says_the_same_before_touching_anything(tmp_path: Path) -> None:
    path = write(tmp_path, '[backend.slurm]\ndefaults = { comment = "mine" }\n')
    result = subprocess.run([sys.executable, "-m", "layerbot", "doctor", "--config", str(path)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 2
    assert "backend.slurm.defaults: 'comment': layerbot sets --comment itself" in result.stderr
    assert "Traceback" not in result.stderr


def test_allowed_options_still_load(tmp_path: Path) -> None:
    path = write(tmp_path, """
[backend.slurm]
defaults = { account = "eessi", time = "04:00:00" }
overridable = ["time", "mem"]
[[node_types]]
name = "zen2"
cpu_target = "x86_64/amd/zen2"
options = { partition = "rome", cpus = "16" }
""")
    cfg = config_mod.load(path)
    assert cfg.backend.slurm.defaults["account"] == "eessi"
