"""A benchmark agent for bench_fleet.py: registers, beats and claims over the real protocol
(layerbot.agent.client.ControlPlane), and runs nothing. Light on imports, so that twenty of
them start quickly on a small machine.

    python benchmarks/fleet_agent.py < SPEC_JSON

The spec (JSON on stdin: it holds the agent's token) names the control plane, the token,
the node types, the timing and the file the agent appends its records to (JSON lines,
written one by one, so a SIGKILL loses nothing that was answered). Signals: SIGUSR1 starts
claiming, SIGUSR2 stops it, SIGTERM ends.

Records: {"kind": "claim", "asked": t, "answered": t, "jobs": [[id, lease_id], ...]} and
{"kind": "beat", "asked": t, "answered": t, "held": n, "gone": [...]}; t is wall time
(time.time()), latencies are taken with a monotonic clock ("ms").
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbot import __version__
from layerbot.agent.client import ControlPlane
from layerbot.core.protocol import (
    PROTOCOL_VERSION,
    Capabilities,
    ClaimRequest,
    HeartbeatRequest,
    NodeTypeCapability,
    RegisterRequest,
)


@dataclass(frozen=True)
class Spec:
    name: str
    url: str
    token: str
    node_types: list[dict[str, str]]
    concurrency: int
    slots: int
    claim_wait: float
    #: After a claim that got nothing, wait this long before the next (a long poll's
    #: stand-in when claim_wait is 0).
    idle_seconds: float
    heartbeat_seconds: float
    out: str


class Agent:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.held: dict[int, str] = {}
        self.lock = threading.Lock()
        self.claiming = threading.Event()
        self.stop = threading.Event()
        self.out = Path(spec.out)

    def record(self, **fields: Any) -> None:
        line = json.dumps(fields)
        with self.lock, self.out.open("a") as f:
            f.write(line + "\n")

    def register(self) -> None:
        server = ControlPlane(self.spec.url, self.spec.token, timeout=60)
        try:
            answer = server.register(RegisterRequest(
                protocol=PROTOCOL_VERSION, version=__version__, cluster=self.spec.name,
                capabilities=Capabilities(
                    backend="bench", concurrency=self.spec.concurrency,
                    node_types=[NodeTypeCapability(**n) for n in self.spec.node_types])))
        finally:
            server.close()
        with self.lock:
            self.held.update({j.id: j.lease_id for j in answer.jobs})
        self.record(kind="registered", at=time.time())

    def beat_loop(self) -> None:
        server = ControlPlane(self.spec.url, self.spec.token, timeout=60)
        while not self.stop.is_set():
            with self.lock:
                holding = dict(self.held)
            asked, started = time.time(), time.perf_counter()
            try:
                answer = server.heartbeat(HeartbeatRequest(
                    holding=holding,
                    free_slots=max(0, self.spec.concurrency - len(holding))))
            except Exception as exc:
                self.record(kind="error", what="beat", error=f"{type(exc).__name__}: {exc}")
            else:
                elapsed = time.perf_counter() - started
                with self.lock:
                    for job_id in answer.gone:
                        self.held.pop(job_id, None)
                self.record(kind="beat", asked=asked, answered=time.time(),
                            ms=elapsed * 1000, held=len(holding), gone=answer.gone)
            self.stop.wait(self.spec.heartbeat_seconds - (time.time() - asked))
        server.close()

    def claim_loop(self) -> None:
        server = ControlPlane(self.spec.url, self.spec.token, timeout=60)
        while not self.stop.is_set():
            if not self.claiming.wait(0.2):
                continue
            with self.lock:
                free = self.spec.concurrency - len(self.held)
            if free <= 0:
                self.stop.wait(self.spec.idle_seconds)
                continue
            asked, started = time.time(), time.perf_counter()
            try:
                answer = server.claim(ClaimRequest(slots=min(self.spec.slots, free),
                                                   wait_seconds=self.spec.claim_wait))
            except Exception as exc:
                self.record(kind="error", what="claim", error=f"{type(exc).__name__}: {exc}")
                self.stop.wait(1.0)
                continue
            elapsed = time.perf_counter() - started
            with self.lock:
                self.held.update({j.id: j.lease_id for j in answer.jobs})
            self.record(kind="claim", asked=asked, answered=time.time(), ms=elapsed * 1000,
                        jobs=[[j.id, j.lease_id] for j in answer.jobs])
            if not answer.jobs:
                self.stop.wait(self.spec.idle_seconds)
        server.close()


def main() -> None:
    agent = Agent(Spec(**json.loads(sys.stdin.read())))
    signal.signal(signal.SIGUSR1, lambda *_: agent.claiming.set())
    signal.signal(signal.SIGUSR2, lambda *_: agent.claiming.clear())
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    agent.register()
    beats = threading.Thread(target=agent.beat_loop, daemon=True)
    beats.start()
    claims = threading.Thread(target=agent.claim_loop, daemon=True)
    claims.start()
    while not agent.stop.wait(0.5):
        pass
    claims.join(30)
    beats.join(30)


if __name__ == "__main__":
    main()
