"""Issue 11 figures: a fleet of agent processes pulling 2,000 queued jobs from one real
`layerbot serve` (PostgreSQL by default, SQLite with --sqlite).

1. Claim latency (wall time of each /agent/v1/claim as the agent sees it): p50, p99, max,
   over claims that returned jobs and over all claims. Target: p99 under 100 ms.
2. Jobs leased twice (must be 0): a job id received by two agents while the first lease was
   live, from the agents' own records; and the database's single lease of every job checked
   against the last agent that received it.
3. Control-plane CPU per heartbeat: CPU time of the serve process tree (web + worker
   process, /proc/<pid>/stat) while the agents only beat, over the beats answered; also
   net of the idle control plane's own loops, measured before the agents start.
4. A lost agent: one agent holding queued (unstarted) jobs is killed (SIGKILL); seconds from
   its jobs' `lease_until` to the job being back in the queue (read from the database every
   50 ms) and to another agent receiving it.

The agents are benchmarks/fleet_agent.py processes: they register, beat and claim over the
real protocol and run nothing.

    uv run python benchmarks/bench_fleet.py [--agents 20] [--jobs 2000] [--duration 20]
        [--sqlite] [--replicas 1] [--heartbeat 2 --lease 10 --grace 5] [--slots 10]
        [--claims-at-once N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import func, select
from tests.support.botproc import BotProcess, free_port, write_config
from tests.support.databases import fresh_database
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

from layerbot import clock
from layerbot.config import NodeType, load
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations import agents as agentops
from layerbot.store.db import Store
from layerbot.store.models import Job

OWNER, NAME = DEFAULT_REPO.split("/")
AGENT_SCRIPT = Path(__file__).resolve().parent / "fleet_agent.py"
NODE_TYPES = [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
              {"name": "zen3", "cpu_target": "x86_64/amd/zen3"},
              {"name": "zen4", "cpu_target": "x86_64/amd/zen4"},
              {"name": "haswell", "cpu_target": "x86_64/intel/haswell"}]
REPO_TARGETS = [{"id": "eessi-2025.06", "name": "software.eessi.io", "version": "2025.06"}]
PG_ENV = Path("/var/tmp/layerbot-pg/env")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the database -----------------------------------------------------------------------------

def pg_admin_url() -> str:
    if url := os.environ.get("LAYERBOT_TEST_PG_URL"):
        return url
    for line in PG_ENV.read_text().splitlines():
        if m := re.match(r"(?:export\s+)?LAYERBOT_TEST_PG_URL=['\"]?([^'\"]+)", line.strip()):
            return m.group(1)
    raise SystemExit(f"no LAYERBOT_TEST_PG_URL in the environment or {PG_ENV}")


@contextmanager
def database(sqlite: bool, tmp: Path) -> Iterator[str]:
    """A fresh database's URL; a PostgreSQL one is dropped afterwards."""
    if sqlite:
        yield f"sqlite:///{tmp / 'layerbot.db'}"
        return
    with fresh_database(pg_admin_url(), "bench_fleet") as url:
        yield url


def record_jobs(store: Store, config_path: Path, count: int) -> None:
    """``count`` queued jobs, in builds of one job per node type (as `bot: build` makes)."""
    config = load(config_path)
    repo = config.repo_targets[0]
    targets = [PlannedTarget(NodeType(**n), repo, n["cpu_target"], None, n["cpu_target"])
               for n in NODE_TYPES]
    now = clock.now()
    with store.transaction() as s:
        for start in range(0, count, len(targets)):
            pr = 1 + start // len(targets)
            request = BuildRequest(repo=DEFAULT_REPO, pr=pr, installation_id=None,
                                   head_sha=f"{pr:040x}", base_ref="main",
                                   clone_url="https://github.com/" + DEFAULT_REPO,
                                   command="bot: build", requested_by="bench")
            record_build(s, config, request, targets[:count - start], now)


def unleased(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count(Job.id)).where(
            Job.state == JobState.QUEUED.value, Job.agent.is_(None))) or 0)


# --- CPU of processes --------------------------------------------------------------------------

def _stat(pid: str) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


@dataclass
class Phase:
    """Wall time (time.time()) and CPU seconds of the serve process tree, the PostgreSQL
    backends of the benchmark's database and the agent processes during one phase."""

    start: float
    end: float = 0.0
    serve: float = 0.0
    db: float = 0.0
    agents: float = 0.0
    #: Share of the machine's CPU time that was busy (every process, ours or not).
    machine_busy: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else 0.0


class Meter:
    def __init__(self, serve_pgids: set[int], dbname: str) -> None:
        self.serve_pgids = serve_pgids
        self.dbname = dbname
        self.agent_pids: set[str] = set()

    def sample(self) -> tuple[float, float, float]:
        """CPU seconds (user + system) of: every process in the groups of the serves (each
        leads a session of its own: the web process, the worker process and anything they
        started, waited-for children included); the database's backends (by their process
        title); the agents."""
        ticks = [0, 0, 0]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            fields = _stat(pid)
            if fields is None:
                continue
            if int(fields[2]) in self.serve_pgids:
                ticks[0] += sum(int(x) for x in fields[11:15])
            elif pid in self.agent_pids:
                ticks[2] += int(fields[11]) + int(fields[12])
            elif self.dbname and self._is_backend(pid):
                ticks[1] += int(fields[11]) + int(fields[12])
        serve, db, agents = (t / CLK_TCK for t in ticks)
        return serve, db, agents

    def _is_backend(self, pid: str) -> bool:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        return title.startswith(b"postgres: ") and f" {self.dbname} ".encode() in title

    @staticmethod
    def machine() -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = ticks[3] + ticks[4]  # idle, iowait
        return sum(ticks) - idle, sum(ticks)

    @contextmanager
    def phase(self) -> Iterator[Phase]:
        before, machine = self.sample(), self.machine()
        phase = Phase(time.time())
        yield phase
        phase.end = time.time()
        phase.serve, phase.db, phase.agents = (b - a for a, b in zip(before, self.sample(),
                                                                     strict=True))
        busy, total = (b - a for a, b in zip(machine, self.machine(), strict=True))
        phase.machine_busy = busy / total if total else 0.0


# --- agents -----------------------------------------------------------------------------------

@dataclass
class AgentProc:
    name: str
    records: Path
    proc: subprocess.Popen[bytes]
    node_types: list[str]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def read(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(ln) for ln in self.records.read_text().splitlines() if ln.strip()]


def start_agents(args: argparse.Namespace, store: Store, urls: list[str], tmp: Path
                 ) -> list[AgentProc]:
    """The agents, agent i talking to replica i modulo their number."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERBOT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    agents = []
    for i in range(args.agents):
        name = f"bench-{i:02d}"
        token = agentops.add(store, name, "bench", clock.now())
        # Two node types each (every type has several agents), or all of them when few.
        kinds = ([NODE_TYPES[i % len(NODE_TYPES)], NODE_TYPES[(i + 1) % len(NODE_TYPES)]]
                 if args.agents >= len(NODE_TYPES) else NODE_TYPES)
        spec = {"name": name, "url": urls[i % len(urls)], "token": token, "node_types": kinds,
                "concurrency": args.concurrency, "slots": args.slots,
                "claim_wait": args.claim_wait, "idle_seconds": args.idle,
                "heartbeat_seconds": args.heartbeat, "out": str(tmp / f"{name}.jsonl")}
        log = (tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, str(AGENT_SCRIPT)], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        agents.append(AgentProc(name, Path(spec["out"]), proc, [k["name"] for k in kinds]))
    return agents


def wait_until(predicate: Any, timeout: float, message: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise SystemExit(message)


# --- figures ----------------------------------------------------------------------------------

def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def spread(name: str, values: Sequence[float], unit: str, digits: int = 1) -> None:
    print(f"{name}_p50_{unit}={pct(values, 50):.{digits}f}")
    print(f"{name}_p99_{unit}={pct(values, 99):.{digits}f}")
    print(f"{name}_max_{unit}={max(values, default=0.0):.{digits}f}")


@dataclass
class Receipt:
    at: float
    agent: str
    lease: str


@dataclass
class Run:
    records: dict[str, list[dict[str, Any]]]
    victim: str
    victim_lease_until: dict[int, float] = field(default_factory=dict)
    back_in_queue: dict[int, float] = field(default_factory=dict)

    def receipts(self) -> dict[int, list[Receipt]]:
        out: dict[int, list[Receipt]] = defaultdict(list)
        for agent, recs in self.records.items():
            for r in recs:
                if r["kind"] == "claim":
                    for job_id, lease in r["jobs"]:
                        out[job_id].append(Receipt(r["answered"], agent, lease))
        for got in out.values():
            got.sort(key=lambda r: r.at)
        return out

    def leased_twice(self) -> list[int]:
        """Jobs received by a second agent (or twice by one) while the first lease lived:
        only the killed agent's leases end, at their ``lease_until``."""
        twice = []
        for job_id, got in self.receipts().items():
            for first, then in itertools.pairwise(got):
                ended = self.victim_lease_until.get(job_id) if first.agent == self.victim \
                    else None
                if ended is None or then.at < ended:
                    twice.append(job_id)
                    break
        return sorted(twice)

    def of(self, kind: str, start: float = 0.0, end: float = float("inf")
           ) -> list[dict[str, Any]]:
        return [r for recs in self.records.values() for r in recs
                if r["kind"] == kind and start <= r.get("answered", 0) < end]


def db_check(store: Store, run: Run) -> dict[str, int]:
    """Each job's one lease in the database against the last agent that received it."""
    last = {job_id: got[-1] for job_id, got in run.receipts().items()}
    with store.read() as s:
        rows = s.execute(select(Job.id, Job.agent, Job.lease_id)).all()
    out = {"jobs": len(rows), "unleased": 0, "held_by_lost_agent": 0, "not_as_received": 0}
    for job_id, agent, lease in rows:
        if agent is None:
            out["unleased"] += 1
        elif agent == run.victim:
            out["held_by_lost_agent"] += 1
        elif job_id not in last or (last[job_id].agent, last[job_id].lease) != (agent, lease):
            out["not_as_received"] += 1
    return out


# --- the run ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20,
                        help="seconds of the heartbeat-only phase")
    parser.add_argument("--idle-duration", type=float, default=8,
                        help="seconds the idle control plane is measured, before the agents")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--pg", action="store_true", help="PostgreSQL (the default)")
    db.add_argument("--sqlite", action="store_true")
    parser.add_argument("--replicas", type=int, default=1,
                        help="control-plane processes on the one database")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--slots", type=int, default=10, help="jobs asked per claim")
    parser.add_argument("--claim-wait", type=float, default=0.0,
                        help="long poll of each claim at the server")
    parser.add_argument("--claims-at-once", type=int, default=None,
                        help="fleet.claims_at_once of the control plane (default: its own)")
    parser.add_argument("--idle", type=float, default=0.25,
                        help="an agent's pause after a claim that got nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.agents * args.concurrency < args.jobs * 1.5:
        parser.error("give the agents room: --agents x --concurrency must be at least 1.5 x "
                     "--jobs (each agent builds two of the four node types)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        with database(args.sqlite, tmp) as url:
            run(args, url, tmp)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            print(f"# kept {tmp}")
    print(f"# load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")


def run(args: argparse.Namespace, url: str, tmp: Path) -> None:
    dbname = "" if args.sqlite else url.rsplit("/", 1)[1]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"),
                                                os.environ.get("PYTHONPATH", "")])
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.start()
    settings = {"fleet": {"builtin_agent": False, "heartbeat_seconds": args.heartbeat,
                          "lease_seconds": args.lease, "grace_seconds": args.grace,
                          "claim_wait_seconds": max(args.claim_wait, 0.0),
                          **({"claims_at_once": args.claims_at_once}
                             if args.claims_at_once else {})},
                "node_types": [], "repo_targets": REPO_TARGETS,
                "server": {"worker_process": True}}
    bots: list[BotProcess] = []
    agents: list[AgentProc] = []
    meter = Meter(set(), dbname)
    store = Store(url)
    try:
        for i in range(args.replicas):  # one after the other: the first one migrates
            port = free_port()
            config = write_config(tmp / f"serve-{i}", api_url=fake.url, app_id=DEFAULT_APP_ID,
                                  private_key_pem=private, port=port, store_url=url,
                                  instance="fleet", extra=settings)
            bots.append(BotProcess(config, port).start())
        meter.serve_pgids = {b.proc.pid for b in bots if b.proc is not None}
        started = time.perf_counter()
        record_jobs(store, bots[0].config, args.jobs)
        print(f"# {args.jobs} jobs recorded in {time.perf_counter() - started:.1f} s")
        time.sleep(3.0)  # the worker process finishes starting
        with meter.phase() as idle:
            time.sleep(args.idle_duration)

        agents = start_agents(args, store, [b.url for b in bots], tmp)
        meter.agent_pids = {str(a.proc.pid) for a in agents}
        wait_until(lambda: all(any(r["kind"] == "registered" for r in a.read())
                               for a in agents), 120, "the agents did not register")

        # 1. Every agent claims until no job is left unleased.
        with meter.phase() as claiming:
            for a in agents:
                a.signal(signal.SIGUSR1)
            wait_until(lambda: unleased(store) == 0, 300, "jobs were left unleased",
                       every=0.05)
        for a in agents:
            a.signal(signal.SIGUSR2)
        time.sleep(max(1.0, args.claim_wait + 0.5))  # claims under way are answered

        # 2. The agents only beat.
        with meter.phase() as beating:
            time.sleep(args.duration)

        # 3. The agent holding the most jobs is killed; the others claim again.
        victim, lease_until, back = (lose_an_agent(args, store, agents) if len(agents) > 1
                                     else ("", {}, {}))
        time.sleep(args.heartbeat + 0.5)  # the others beat once more: any 'gone' would show
    finally:
        for a in agents:
            a.signal(signal.SIGCONT)
            a.signal(signal.SIGTERM)
        for a in agents:
            try:
                a.proc.wait(30)
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait(5)
        for bot in bots:
            bot.stop()
        fake.stop()

    result = Run({a.name: a.read() for a in agents}, victim, lease_until, back)
    checked = db_check(store, result)
    store.close()
    report(args, result, checked, idle, claiming, beating)
    errors = result.of("error")
    if errors:
        print(f"# {len(errors)} agent request errors, e.g. {errors[0]}")


def lose_an_agent(args: argparse.Namespace, store: Store, agents: list[AgentProc]
                  ) -> tuple[str, dict[int, float], dict[int, float]]:
    """SIGKILL the agent holding the most jobs and let the others claim; returns its name,
    its jobs' lease ends and when each was seen with another agent or none (wall times)."""
    with store.read() as s:
        held = dict(s.execute(select(Job.agent, func.count(Job.id))
                              .where(Job.agent.is_not(None)).group_by(Job.agent)).all())
    victim = next(a for a in agents if a.name == max(held, key=lambda n: held[n]))
    victim.proc.kill()
    victim.proc.wait(10)
    for a in agents:
        a.signal(signal.SIGUSR1)
    time.sleep(1.0)  # a beat the killed agent had sent is answered by now
    with store.read() as s:
        mine = {j.id: j.lease_until for j in s.scalars(
            select(Job).where(Job.agent == victim.name))}
    lease_until = {i: u.timestamp() for i, u in mine.items() if isinstance(u, datetime)}
    back: dict[int, float] = {}

    def all_back() -> bool:
        with store.read() as s:
            rows = s.execute(select(Job.id, Job.agent).where(Job.id.in_(list(mine)))).all()
        now = time.time()
        for job_id, agent in rows:
            if agent != victim.name:
                back.setdefault(job_id, now)
        return len(back) == len(mine)

    wait_until(all_back, args.lease + args.grace + 60, "the lost agent's jobs stayed",
               every=0.05)
    wait_until(lambda: unleased(store) == 0, 30, "requeued jobs were not leased again",
               every=0.05)
    return victim.name, lease_until, back


def report(args: argparse.Namespace, run: Run, checked: dict[str, int], idle: Phase,
           claiming: Phase, beating: Phase) -> None:
    claims = run.of("claim")
    productive = [r["ms"] for r in claims if r["jobs"]]
    everything = [r["ms"] for r in claims]
    phase1 = run.of("claim", claiming.start, claiming.end + 0.5)
    answered = run.of("beat", beating.start, beating.end)
    beats = max(1, len(answered))
    per_beat = beating.serve / beats * 1000
    net = (beating.serve - idle.cores(idle.serve) * beating.seconds) / beats * 1000
    twice = run.leased_twice()
    gone = sum(len(r["gone"]) for r in run.of("beat") if r.get("gone"))
    requeued = [run.back_in_queue[i] - u for i, u in run.victim_lease_until.items()
                if i in run.back_in_queue]
    receipts = run.receipts()
    relet = [next(r.at for r in receipts[i] if r.agent != run.victim) - u
             for i, u in run.victim_lease_until.items()
             if any(r.agent != run.victim for r in receipts.get(i, []))]

    print(f"database={'sqlite' if args.sqlite else 'postgresql'}")
    print(f"replicas={args.replicas}")
    print(f"agents={args.agents}")
    print(f"jobs={args.jobs}")
    print(f"claims={len(everything)}")
    print(f"claims_with_jobs={len(productive)}")
    spread("claim_latency_with_jobs", productive, "ms")
    spread("claim_latency_all", everything, "ms")
    print(f"claim_phase_s={claiming.seconds:.2f}")
    print(f"claim_phase_claims={len(phase1)}")
    print(f"claim_phase_serve_cpu_ms_per_claim={claiming.serve / max(1, len(phase1)) * 1000:.2f}")
    print(f"claim_phase_cores_serve={claiming.cores(claiming.serve):.2f}")
    if not args.sqlite:
        print(f"claim_phase_cores_db={claiming.cores(claiming.db):.2f}")
    print(f"claim_phase_cores_agents={claiming.cores(claiming.agents):.2f}")
    print(f"claim_phase_machine_cpu_busy={claiming.machine_busy:.2f}")
    print(f"jobs_leased_twice={len(twice)}")
    print(f"db_jobs={checked['jobs']}")
    print(f"db_jobs_unleased={checked['unleased']}")
    print(f"db_jobs_held_by_lost_agent={checked['held_by_lost_agent']}")
    print(f"db_jobs_lease_not_as_received={checked['not_as_received']}")
    print(f"heartbeat_gone={gone}")
    spread("heartbeat_latency", [r["ms"] for r in run.of("beat")], "ms")
    print(f"heartbeats_in_phase={len(answered)}")
    print(f"serve_idle_cpu_ms_per_s={idle.cores(idle.serve) * 1000:.1f}")
    print(f"serve_cpu_ms_per_heartbeat={per_beat:.2f}")
    print(f"serve_cpu_ms_per_heartbeat_net_of_idle={net:.2f}")
    if not args.sqlite:
        print(f"db_cpu_ms_per_heartbeat={beating.db / beats * 1000:.2f}")
    print(f"lost_agent={run.victim}")
    print(f"lost_agent_jobs={len(run.victim_lease_until)}")
    spread("requeue_after_lease_expiry", requeued, "s", 2)
    spread("leased_again_after_lease_expiry", relet, "s", 2)

    print(f"\n{args.agents} agents took {args.jobs} jobs in {claiming.seconds:.1f} s "
          f"({len(productive)} claims with jobs of {len(everything)}): claim p99 "
          f"{pct(productive, 99):.0f} ms with jobs, {pct(everything, 99):.0f} ms over all "
          f"(target < 100 ms). Leased twice: {len(twice)}. Control plane CPU "
          f"{per_beat:.2f} ms per heartbeat ({net:.2f} ms net of its idle loops). "
          f"A killed agent's {len(run.victim_lease_until)} jobs were back in the queue "
          f"{pct(requeued, 50):.2f} s (max {max(requeued, default=0):.2f} s) after their "
          f"lease ended, and leased again {pct(relet, 50):.2f} s "
          f"(max {max(relet, default=0):.2f} s) after it.")


if __name__ == "__main__":
    main()
