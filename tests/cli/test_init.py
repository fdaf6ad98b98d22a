"""`layerbot init`: CPU kinds, node types, the written TOML; and the real command on Slurm."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from layerbot import config as config_mod
from layerbot.backends.slurm import SlurmBackend
from layerbot.cli.init import (
    Node,
    PartitionInfo,
    Probe,
    nodes_from,
    parse_scontrol_records,
    partitions_from,
    plan_node_types,
    render,
    target_from_cpuinfo,
    target_from_features,
)

# scontrol show node -o / show partition -o on the cluster of scripts/slurm.sh.
SCONTROL_NODE = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=3.13 "
    "AvailableFeatures=zen2,x86_64 ActiveFeatures=zen2,x86_64 Gres=(null) NodeAddr=127.0.0.1 "
    "NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=21694 AllocMem=0 FreeMem=20113 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 "
    "TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,build  "
    "BootTime=2026-11-27T14:32:21 SlurmdStartTime=2026-11-27T15:03:31 "
    "CfgTRES=cpu=2,mem=21694M,billing=2 AllocTRES= CapWatts=n/a\n"
)
SCONTROL_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=01:00:00 MinNodes=0 Nodes=vm State=UP "
    "TotalCPUs=2 TotalNodes=1\n"
    "PartitionName=build AllowGroups=ALL AllowAccounts=ALL Default=NO QoS=N/A "
    "DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 Nodes=vm State=UP "
    "TotalCPUs=2 TotalNodes=1\n"
)

ZEN3_CPUINFO = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: avx2\n"
ICELAKE_FLAGS = "avx2 avx512f avx512_vnni avx512_vbmi2 gfni"


def test_cpu_kinds_from_node_features() -> None:
    assert target_from_features(["x86_64", "zen2"]) == ("x86_64/amd/zen2", "zen2")
    assert target_from_features(["ib", "IceLake"]) == ("x86_64/intel/icelake", "IceLake")
    assert target_from_features(["a64fx"]) == ("aarch64/a64fx", "a64fx")
    assert target_from_features(["gpu", "ib"]) is None


@pytest.mark.parametrize(("cpuinfo", "arch", "target"), [
    (ZEN3_CPUINFO, "x86_64", "x86_64/amd/zen3"),
    ("vendor_id : AuthenticAMD\ncpu family : 25\nmodel : 17\n", "x86_64", "x86_64/amd/zen4"),
    ("vendor_id : AuthenticAMD\ncpu family : 23\nmodel : 49\n", "x86_64", "x86_64/amd/zen2"),
    (f"vendor_id : GenuineIntel\nflags : {ICELAKE_FLAGS}\n", "x86_64", "x86_64/intel/icelake"),
    ("vendor_id : GenuineIntel\nflags : avx2 amx_tile\n", "x86_64",
     "x86_64/intel/sapphirerapids"),
    ("vendor_id : GenuineIntel\nflags : avx2 avx512f\n", "x86_64", "x86_64/intel/skylake_avx512"),
    ("vendor_id : GenuineIntel\nflags : sse4_2\n", "x86_64", "x86_64/generic"),
    ("CPU implementer : 0x41\nCPU part : 0xd40\n", "aarch64", "aarch64/neoverse_v1"),
    ("CPU part : 0xabc\n", "aarch64", "aarch64/generic"),
])
def test_cpu_kind_of_this_host_from_cpuinfo(cpuinfo: str, arch: str, target: str) -> None:
    assert target_from_cpuinfo(cpuinfo, arch) == target


def probe(notes: tuple[str, ...] = ()) -> Probe:
    nodes = nodes_from(parse_scontrol_records(SCONTROL_NODE))
    partitions = partitions_from(parse_scontrol_records(SCONTROL_PARTITIONS))
    return Probe(cluster="layerbot", partitions=tuple(partitions), nodes=tuple(nodes),
                 accounts=("layerbot", "root"), default_account="layerbot",
                 local_host="vm", local_target="x86_64/intel/sapphirerapids", notes=notes)


def test_scontrol_records_are_read() -> None:
    (node,) = nodes_from(parse_scontrol_records(SCONTROL_NODE))
    assert node == Node("vm", ("debug", "build"), ("zen2", "x86_64"), 2, 21694, "x86_64")
    debug, build = partitions_from(parse_scontrol_records(SCONTROL_PARTITIONS))
    assert debug == PartitionInfo("debug", True, 60, "UP")
    assert build.max_time_minutes is None and not build.default


def test_a_node_type_per_partition_and_cpu_kind() -> None:
    plans = plan_node_types(probe())
    assert [(p.name, p.cpu_target, p.partition, p.constraint, p.time) for p in plans] == [
        ("debug-zen2", "x86_64/amd/zen2", "debug", "zen2", "01:00:00"),
        ("build-zen2", "x86_64/amd/zen2", "build", "zen2", None),
    ]
    # two kinds of node in one partition; one without a telling feature (this host)
    nodes = (Node("a1", ("p",), ("milan",), 128, 256000, "x86_64"),
             Node("a2", ("p",), ("milan",), 128, 256000, "x86_64"),
             Node("vm", ("p",), (), 2, 2000, "x86_64"),
             Node("g1", ("p",), (), 72, 480000, "aarch64"))
    mixed = Probe(None, (PartitionInfo("p", True, 2 * 1440 + 30, "UP"),), nodes,
                  local_host="vm", local_target="x86_64/intel/icelake")
    plans = plan_node_types(mixed)
    assert [(p.name, p.constraint, p.nodes, p.time) for p in plans] == [
        ("p-zen3", "milan", ["a1", "a2"], "2-00:30:00"),
        ("p-icelake", None, ["vm"], "2-00:30:00"),
        ("p-generic", None, ["g1"], "2-00:30:00"),
    ]
    assert plans[2].cpu_target == "aarch64/generic"


def test_the_written_file_is_commented_and_loads(tmp_path: Path) -> None:
    text = render(probe(notes=("this host (vm) has a x86_64/intel/sapphirerapids CPU",)),
                  "cluster-a")
    data = tomllib.loads(text)
    assert data["backend"] == {"kind": "slurm", "poll_seconds": 30,
                               "slurm": {"handover": "hold_release",
                                         "defaults": {"account": "layerbot"}}}
    assert [n["name"] for n in data["node_types"]] == ["debug-zen2", "build-zen2"]
    assert "# Same CPU target as build-zen2" in text and "also yours: root" in text
    assert "#   debug: MaxTime 01:00:00, state UP, default" in text
    path = tmp_path / "layerbot.toml"
    path.write_text(text)
    cfg = config_mod.load(path)
    assert cfg.instance.name == "cluster-a"
    assert cfg.node_types[0].options == {"partition": "debug", "constraint": "zen2",
                                         "time": "01:00:00"}
    assert [r.id for r in cfg.repo_targets] == ["eessi-2023.06"]


def test_nothing_found_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "layerbot.toml"
    path.write_text(render(Probe(None, (), ()), "x"))
    assert config_mod.load(path).backend.kind == "slurm"


# --- the real command ----------------------------------------------------------------------


def layerbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerbot", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**os.environ})


@pytest.mark.slurm
def test_init_asks_the_local_slurm_and_doctor_accepts_the_result(tmp_path: Path) -> None:
    from tests.backends.conftest import discover

    discover()
    out = tmp_path / "site.toml"
    first = layerbot("init", "--output", str(out), "--instance", "site-a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # debug, build and shared (4 jobs per core) of scripts/slurm.sh
    assert "3 node type(s) over 3 partition(s)" in first.stdout
    cfg = config_mod.load(out)
    assert cfg.instance.name == "site-a" and cfg.backend.kind == "slurm"
    by_name = {n.name: n for n in cfg.node_types}
    assert by_name["debug-zen2"].options["time"] == "01:00:00"
    assert by_name["build-zen2"].options == {"partition": "build", "constraint": "zen2"}
    assert by_name["shared-zen2"].options["partition"] == "shared"
    again = layerbot("init", "--output", str(out), cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    assert layerbot("init", "--output", str(out), "--force", cwd=tmp_path).returncode == 0
    # every node type it wrote is accepted by sbatch --test-only
    checks = asyncio.run(SlurmBackend(cfg.backend.slurm, cfg.node_types).check())
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_init_without_slurm_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no scontrol to be found
    result = subprocess.run([sys.executable, "-m", "layerbot", "init", "--output",
                             str(tmp_path / "x.toml")], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60, env=env)
    assert result.returncode == 2 and "cannot ask Slurm" in result.stderr
    assert not (tmp_path / "x.toml").exists()
