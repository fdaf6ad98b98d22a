"""`layerbot init`: ask the local Slurm what it has and write a starting layerbot.toml.

The probe (sinfo, scontrol, sacctmgr, and /proc/cpuinfo for this host's own CPU) is the
only I/O; turning its answers into node types and TOML text is pure, so it is tested
without a cluster. Each partition and kind of CPU in it becomes one node type; a CPU kind
comes from a node feature that names a microarchitecture (``zen2``, ``icelake``, ...),
else, for this host, from its CPU, else ``<arch>/generic``.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from layerbot.backends.slurm_parse import parse_limit_minutes
from layerbot.config import SlurmBackendConfig

# --- CPU kinds -----------------------------------------------------------------------------

#: Node feature (lower case) -> EESSI CPU target. Sites name features freely; these are the
#: spellings seen most.
FEATURE_TARGETS: dict[str, str] = {
    **{f: "x86_64/amd/zen2" for f in ("zen2", "rome", "epyc_rome")},
    **{f: "x86_64/amd/zen3" for f in ("zen3", "milan", "epyc_milan")},
    **{f: "x86_64/amd/zen4" for f in ("zen4", "genoa", "bergamo", "epyc_genoa")},
    **{f: "x86_64/intel/haswell" for f in ("haswell", "hsw", "broadwell", "bdw")},
    **{f: "x86_64/intel/skylake_avx512" for f in ("skylake", "skylake_avx512", "skx")},
    **{f: "x86_64/intel/cascadelake" for f in ("cascadelake", "cascade_lake", "clx")},
    **{f: "x86_64/intel/icelake" for f in ("icelake", "ice_lake", "icx")},
    **{f: "x86_64/intel/sapphirerapids" for f in ("sapphirerapids", "sapphire_rapids",
                                                   "spr")},
    **{f: "aarch64/neoverse_n1" for f in ("neoverse_n1", "graviton2", "altra")},
    **{f: "aarch64/neoverse_v1" for f in ("neoverse_v1", "graviton3")},
    **{f: "aarch64/nvidia/grace" for f in ("grace", "neoverse_v2")},
    "a64fx": "aarch64/a64fx",
}

#: Arm "CPU part" values of /proc/cpuinfo.
ARM_PARTS = {"0xd0c": "aarch64/neoverse_n1", "0xd40": "aarch64/neoverse_v1",
             "0xd4f": "aarch64/nvidia/grace", "0x001": "aarch64/a64fx"}


def target_from_features(features: Iterable[str]) -> tuple[str, str] | None:
    """(cpu target, the feature that says so), or None if no feature names a CPU kind."""
    for feature in features:
        target = FEATURE_TARGETS.get(feature.strip().lower())
        if target:
            return target, feature.strip()
    return None


def target_from_cpuinfo(text: str, arch: str) -> str:
    """This host's CPU kind from /proc/cpuinfo (its first processor)."""
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if arch == "aarch64":
        return ARM_PARTS.get(fields.get("cpu part", "").lower(), "aarch64/generic")
    if arch != "x86_64":
        return f"{arch}/generic"
    flags = set(fields.get("flags", "").split())
    if fields.get("vendor_id") == "AuthenticAMD":
        return _amd_target(_int(fields.get("cpu family")), _int(fields.get("model")))
    if fields.get("vendor_id") == "GenuineIntel":
        return _intel_target(flags)
    return "x86_64/generic"


def _int(text: str | None) -> int:
    try:
        return int(text or "", 0)
    except ValueError:
        return -1


def _amd_target(family: int, model: int) -> str:
    if family == 0x17 and model >= 0x30:
        return "x86_64/amd/zen2"
    if family == 0x19:
        zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0xAF
        return "x86_64/amd/zen4" if zen4 else "x86_64/amd/zen3"
    return "x86_64/generic"


def _intel_target(flags: set[str]) -> str:
    # From the newest instruction sets down: flags are what the build can really use.
    if {"amx_tile", "avx512_fp16"} & flags:
        return "x86_64/intel/sapphirerapids"
    if {"avx512_vnni", "avx512_vbmi2", "gfni"} <= flags:
        return "x86_64/intel/icelake"
    if "avx512_vnni" in flags:
        return "x86_64/intel/cascadelake"
    if "avx512f" in flags:
        return "x86_64/intel/skylake_avx512"
    if "avx2" in flags:
        return "x86_64/intel/haswell"
    return "x86_64/generic"


# --- what Slurm says -----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    features: tuple[str, ...]
    cpus: int
    memory_mb: int
    arch: str


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    default: bool
    max_time_minutes: int | None  # None: unlimited
    state: str


@dataclass(frozen=True)
class Probe:
    cluster: str | None
    partitions: tuple[PartitionInfo, ...]
    nodes: tuple[Node, ...]
    accounts: tuple[str, ...] = ()
    default_account: str | None = None
    local_host: str = ""
    local_target: str | None = None  # this host's own CPU kind
    notes: tuple[str, ...] = ()


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """``scontrol show node|partition -o``: one ``Key=Value ...`` record per line."""
    records = []
    for line in text.splitlines():
        pairs = re.findall(r"(\w+)=(.*?)(?=\s+\w+=|$)", line.strip())
        if pairs:
            records.append({k: v.strip() for k, v in pairs})
    return records


def nodes_from(records: Sequence[Mapping[str, str]]) -> list[Node]:
    nodes = []
    for r in records:
        features = r.get("AvailableFeatures", "")
        nodes.append(Node(
            name=r.get("NodeName", "?"),
            partitions=tuple(p for p in r.get("Partitions", "").split(",") if p),
            features=tuple(f for f in features.split(",") if f and f != "(null)"),
            cpus=_int(r.get("CPUTot")), memory_mb=_int(r.get("RealMemory")),
            arch=r.get("Arch", "") or "x86_64"))
    return nodes


def partitions_from(records: Sequence[Mapping[str, str]]) -> list[PartitionInfo]:
    return [PartitionInfo(name=r.get("PartitionName", "?"), default=r.get("Default") == "YES",
                          max_time_minutes=parse_limit_minutes(r.get("MaxTime", "")),
                          state=r.get("State", "UP"))
            for r in records]


# --- node types ----------------------------------------------------------------------------


@dataclass
class NodeTypePlan:
    name: str
    cpu_target: str
    partition: str
    constraint: str | None
    time: str | None
    nodes: list[str] = field(default_factory=list)
    cpus: int = 0
    memory_mb: int = 0
    source: str = ""  # how the CPU kind was found


def plan_node_types(probe: Probe) -> list[NodeTypePlan]:
    """One node type per partition and kind of CPU in it."""
    plans: dict[tuple[str, str], NodeTypePlan] = {}
    for part in probe.partitions:
        for node in (n for n in probe.nodes if part.name in n.partitions):
            target, constraint, source = _kind(node, probe)
            key = (part.name, target)
            if key not in plans:
                plans[key] = NodeTypePlan(
                    name=f"{part.name}-{target.rsplit('/', 1)[-1]}", cpu_target=target,
                    partition=part.name, constraint=constraint,
                    time=_time_text(part.max_time_minutes), source=source)
            plan = plans[key]
            plan.nodes.append(node.name)
            plan.cpus = max(plan.cpus, node.cpus)
            plan.memory_mb = max(plan.memory_mb, node.memory_mb)
    return list(plans.values())


def _kind(node: Node, probe: Probe) -> tuple[str, str | None, str]:
    found = target_from_features(node.features)
    if found:
        return found[0], found[1], f"node feature {found[1]!r}"
    if node.name == probe.local_host and probe.local_target:
        return probe.local_target, None, "this host's CPU (/proc/cpuinfo)"
    return f"{node.arch}/generic", None, "no feature names the CPU kind"


def _time_text(minutes: int | None) -> str | None:
    """A partition's MaxTime as a --time value (None: unlimited, build.time_limit_minutes
    applies). Jobs asking for more than MaxTime are refused at submission."""
    if minutes is None:
        return None
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


# --- the file ------------------------------------------------------------------------------


def q(value: str) -> str:
    """A TOML basic string."""
    return json.dumps(value)


def render(probe: Probe, instance: str) -> str:
    """The commented starting configuration."""
    plans = plan_node_types(probe)
    lines = [
        "# layerbot.toml, written by `layerbot init` from what the local Slurm says.",
        "# Every key not written here has a default; see docs/configuration.md.",
        "# Check it with `layerbot doctor` (every node type is tried with sbatch --test-only).",
        "",
        "[instance]",
        f"name = {q(instance)}  # the bot's name on PRs; `inst:` filters match it",
        '# data_dir = "/var/lib/layerbot"',
        "",
        "[github]",
        "# app_id = 123456",
        '# private_key_file = "/etc/layerbot/app.pem"',
        '# webhook_secret_file = "/etc/layerbot/webhook-secret"',
        "",
        "[access]",
        "# Who may do what: logins, @org/team, or role:write / role:maintain / role:admin.",
        'build = ["role:write"]',
        'deploy = ["role:maintain"]',
        "",
        "[build]",
        '# job_script = "bot/build.sh"',
        "time_limit_minutes = 1440  # a node type's `time` option wins over this",
        "",
        "[backend]",
        'kind = "slurm"',
        "poll_seconds = 30",
        "",
        "[backend.slurm]",
        "# hold_release: jobs are submitted held and released once recorded;",
        "# delayed_begin: --begin=now+N, for sites where the bot may not release jobs.",
        'handover = "hold_release"',
        *_defaults_lines(probe),
        f"# clusters = [{q(probe.cluster)}]  # only for multi-cluster sites (sbatch -M)"
        if probe.cluster else "# clusters = []",
        "",
        *_limits_lines(probe),
    ]
    for plan in plans:
        lines += _node_type_lines(plan, plans)
    if not plans:
        lines += ["# No partition with nodes was found: add [[node_types]] by hand.", ""]
    lines += [
        "[[repo_targets]]",
        "# What jobs build for (EESSI: a section of repos.cfg); node types name them by id.",
        'id = "eessi-2023.06"',
        'name = "software.eessi.io"',
        'version = "2023.06"',
        "",
    ]
    return "\n".join(lines)


def _defaults_lines(probe: Probe) -> list[str]:
    lines = ["# Options every job gets (sbatch long option names), below the node types'."]
    if probe.default_account:
        others = [a for a in probe.accounts if a != probe.default_account]
        also = f"  # also yours: {', '.join(others)}" if others else ""
        lines.append(f"defaults = {{ account = {q(probe.default_account)} }}{also}")
    else:
        lines.append('# defaults = { account = "myproject" }')
    return lines


def _limits_lines(probe: Probe) -> list[str]:
    lines = ["# Partitions found:"]
    for p in probe.partitions:
        limit = _time_text(p.max_time_minutes) or "unlimited"
        default = ", default" if p.default else ""
        lines.append(f"#   {p.name}: MaxTime {limit}, state {p.state}{default}")
    lines += [f"# {note}" for note in probe.notes]
    return [*lines, ""]


def _node_type_lines(plan: NodeTypePlan, plans: Sequence[NodeTypePlan]) -> list[str]:
    same = [p.name for p in plans if p.cpu_target == plan.cpu_target and p is not plan]
    options = [f"partition = {q(plan.partition)}"]
    if plan.constraint:
        options.append(f"constraint = {q(plan.constraint)}")
    if plan.time:
        options.append(f"time = {q(plan.time)}")
    nodes = ", ".join(plan.nodes[:5]) + (" ..." if len(plan.nodes) > 5 else "")
    lines = [
        "[[node_types]]",
        f"# {len(plan.nodes)} node(s): {nodes}; up to {plan.cpus} CPUs and "
        f"{plan.memory_mb} MB each. CPU kind from {plan.source}.",
    ]
    if same:
        lines.append(f"# Same CPU target as {', '.join(same)}: keep the one whose partition "
                     "suits builds (both would build it).")
    lines += [
        f"name = {q(plan.name)}",
        f"cpu_target = {q(plan.cpu_target)}",
        f"# cpus = {q(str(plan.cpus))} and memory = \"...\" in options ask for more than "
        "1 CPU and the default memory",
        f"options = {{ {', '.join(options)} }}",
        "",
    ]
    return lines


# --- the probe (I/O) -----------------------------------------------------------------------


class ProbeError(Exception):
    pass


def _run(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"{argv[0]}: {exc}") from None
    if result.returncode != 0:
        raise ProbeError(f"{' '.join(argv)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def probe_slurm(config: SlurmBackendConfig) -> Probe:
    scontrol = shlex.split(config.scontrol)
    nodes = nodes_from(parse_scontrol_records(_run([*scontrol, "show", "node", "-o"])))
    partitions = partitions_from(parse_scontrol_records(
        _run([*scontrol, "show", "partition", "-o"])))
    cluster_line = re.search(r"^ClusterName\s*=\s*(\S+)", _run([*scontrol, "show", "config"]),
                             re.MULTILINE)
    notes: list[str] = []
    accounts, default_account = _accounts(notes)
    host = platform.node().split(".")[0]
    local = _local_target()
    if local:
        notes.append(f"this host ({host}) has a {local} CPU by /proc/cpuinfo")
    return Probe(cluster=cluster_line.group(1) if cluster_line else None,
                 partitions=tuple(partitions), nodes=tuple(nodes), accounts=accounts,
                 default_account=default_account, local_host=host, local_target=local,
                 notes=tuple(notes))


def _accounts(notes: list[str]) -> tuple[tuple[str, ...], str | None]:
    """The accounts this user may charge (sacctmgr); none if accounting cannot be asked."""
    import getpass

    user = getpass.getuser()
    try:
        assoc = _run(["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account"])
        default = _run(["sacctmgr", "-nP", "show", "user", user, "format=defaultaccount"])
    except ProbeError as exc:
        notes.append(f"accounts not known (sacctmgr: {exc})")
        return (), None
    accounts = tuple(dict.fromkeys(a.strip() for a in assoc.splitlines() if a.strip()))
    defaults = default.strip().splitlines()
    return accounts, defaults[0] if defaults else None


def _local_target() -> str | None:
    try:
        return target_from_cpuinfo(Path("/proc/cpuinfo").read_text(), platform.machine())
    except OSError:
        return None


# --- the command ---------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        output: Annotated[Path, typer.Option("--output", "-o",
                                             help="where to write")] = Path("layerbot.toml"),
        force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")]
        = False,
        instance: Annotated[str | None, typer.Option(help="the instance name (default: "
                                                     "the Slurm cluster's name)")] = None,
        from_eessi: Annotated[Path | None, typer.Option(
            "--from-eessi", metavar="APP_CFG",
            help="migrate EESSI's bot configuration (app.cfg) instead of asking Slurm")] = None,
        repos_cfg: Annotated[Path | None, typer.Option(
            "--repos-cfg", help="EESSI's repos.cfg (default: the one in app.cfg's "
            "repos_cfg_dir, if it exists)")] = None,
    ) -> None:
        """Ask the local Slurm (partitions, node features, CPUs, accounts, limits) and
        write a commented starting layerbot.toml with a node type per partition and CPU;
        or, with --from-eessi, migrate an EESSI bot's app.cfg (and repos.cfg)."""
        from layerbot import config as config_mod

        if output.exists() and not force:
            typer.echo(f"{output} exists; use --force to overwrite it", err=True)
            raise typer.Exit(1)
        if from_eessi is not None:
            from layerbot.cli.eessi import init_from_eessi

            init_from_eessi(from_eessi, repos_cfg, output)
            return
        if repos_cfg is not None:
            typer.echo("--repos-cfg goes with --from-eessi", err=True)
            raise typer.Exit(2)
        try:
            probe = probe_slurm(SlurmBackendConfig())
        except ProbeError as exc:
            typer.echo(f"cannot ask Slurm: {exc}\n(is slurmctld running, and SLURM_CONF "
                       "set?)", err=True)
            raise typer.Exit(2) from None
        name = instance or probe.cluster or platform.node().split(".")[0] or "layerbot"
        output.write_text(render(probe, name))
        try:
            config_mod.load(output)
        except config_mod.ConfigError as exc:  # a bug here, not the operator's problem
            typer.echo(f"the written file does not load: {exc}", err=True)
            raise typer.Exit(3) from None
        kinds = plan_node_types(probe)
        typer.echo(f"wrote {output}: {len(kinds)} node type(s) over "
                   f"{len({k.partition for k in kinds})} partition(s); "
                   "next: fill in [github], then `layerbot doctor`")
