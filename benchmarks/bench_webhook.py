"""Webhook answer latency, alone and with event handling running, and event throughput
of a real `layerbot serve` (issue 2 and issue 13 figures).

Two phases against one bot, each N signed `issue_comment` deliveries sent C at a time over
loopback (each delivery durable before its answer):

1. receiver alone: the bot's worker process (all handling) is stopped with SIGSTOP while
   the deliveries are sent, so only the receiver runs;
2. with handling: the worker is let go, and once it is replying (the first `eyes`
   reaction reached the fake GitHub) N more deliveries are sent while it works through
   the first N (a backlog that lasts far longer than the sending).

Then it waits until the fake GitHub has received the `eyes` reaction for all 2N.

    python benchmarks/bench_webhook.py [--deliveries 1000] [--concurrency 50]
                                       [--database sqlite|postgres]

``--database postgres`` makes a fresh database on the server of ``LAYERBOT_TEST_PG_URL``
(see /var/tmp/layerbot-pg/env) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.botproc import SECRET, BotProcess, child_role, free_port, write_config
from tests.support.databases import fresh_database
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    encode,
    issue_comment_created,
)

OWNER, NAME = DEFAULT_REPO.split("/")
PRS = 50


def prepare(fake: FakeGitHub, count: int) -> list[tuple[bytes, dict[str, str], int]]:
    for number in range(1, PRS + 1):
        fake.add_pull(OWNER, NAME, number, head_sha=f"{number:040x}")
    fake.set_permission(OWNER, NAME, "alice", "write")
    out = []
    for i in range(count):
        number = 1 + i % PRS
        comment_id = fake.add_comment(OWNER, NAME, number, "bot: status", login="alice")
        body = encode(issue_comment_created("bot: status", "alice", pr_number=number,
                                            comment_id=comment_id))
        headers = delivery_headers("issue_comment", body, SECRET, delivery_id=str(uuid.uuid4()))
        out.append((body, headers, comment_id))
    return out


def raw_request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one HTTP/1.1 request, made up front: the client must cost next to
    nothing, or the benchmark measures its own overhead on this 2-core machine."""
    lines = ["POST /webhook HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send_all(url: str, items: list[tuple[bytes, dict[str, str], int]],
                   concurrency: int) -> list[float]:
    """Send every delivery over ``concurrency`` keep-alive connections; each one's latency,
    in the order they were sent."""
    host, port = url.removeprefix("http://").split(":")
    requests = [raw_request(int(port), body, headers) for body, headers, _ in items]
    latencies = [0.0] * len(requests)
    position = 0

    async def connection() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(host, int(port))
        while position < len(requests):
            sent = position
            request = requests[sent]
            position += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies[sent] = time.perf_counter() - started
            if not head.startswith(b"HTTP/1.1 202"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies


def _client(url: str, items: list[tuple[bytes, dict[str, str], int]], concurrency: int,
            out: Connection) -> None:
    ran, waited = sched_seconds(os.getpid())
    latencies = asyncio.run(send_all(url, items, concurrency))
    ran_after, waited_after = sched_seconds(os.getpid())
    out.send((latencies, (ran_after - ran, waited_after - waited)))


def send_from_another_process(url: str, items: list[tuple[bytes, dict[str, str], int]],
                              concurrency: int,
                              cpu: dict[str, tuple[float, float]]) -> list[float]:
    """The client in a process of its own: the fake GitHub, which lives in this process and
    answers the bot's requests meanwhile, must not hold the client's interpreter lock.

    The client's own CPU (and time waiting for one) goes to ``cpu["client"]``: a client
    short of CPU reads its answers late, and that would be counted as the bot's latency."""
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=_client, args=(url, items, concurrency, send))
    process.start()
    latencies: list[float]
    latencies, cpu["client"] = receive.recv()
    process.join()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def worker_pid(bot_pid: int, timeout: float = 30) -> int:
    """The pid of the bot's worker process: its child started by multiprocessing's spawn
    (not the resource tracker, the other child it may have)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{bot_pid}/task/{bot_pid}/children").read_text().split()
        for child in map(int, children):
            if child_role(child) == "worker":
                return child
        time.sleep(0.1)
    raise RuntimeError(f"no worker process under pid {bot_pid}")


def holds_flock(pid: int, path: Path) -> bool:
    """Whether ``pid`` holds a flock on ``path`` (/proc/locks; a waiter's line has "->")."""
    inode = f":{path.stat().st_ino} "
    return any(inode in line and "->" not in line and line.split()[4] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def stop(pid: int) -> None:
    """SIGSTOP, and wait until every thread of ``pid`` has stopped."""
    os.kill(pid, signal.SIGSTOP)
    while any((task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T"
              for task in Path(f"/proc/{pid}/task").iterdir()):
        time.sleep(0.001)


@contextmanager
def worker_stopped(store_url: str, pid: int) -> Iterator[None]:
    """The worker process stopped (SIGSTOP) meanwhile: the receiver alone.

    On SQLite it must not be stopped holding the write lock, which the receiver would wait
    for until the end. Stopping it while another process holds the lock is not enough: a
    thread waiting for the lock gets it in the kernel and stops only on its way out (seen:
    the benchmark hung). So it is stopped, and let go again while it holds the lock.
    (On PostgreSQL the receiver's inserts wait for no lock a worker's transaction holds.)"""
    lock = Path(store_url.split("///", 1)[1] + ".writelock") if "///" in store_url else None
    while True:
        stop(pid)
        if lock is None or not holds_flock(pid, lock):
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def sched_seconds(pid: int) -> tuple[float, float]:
    """(on a CPU, runnable but waiting for one): seconds so far, over the process's live
    threads (/proc/PID/task/TID/schedstat)."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, on_queue, _ = (task / "schedstat").read_text().split()
        except (FileNotFoundError, ValueError):
            continue  # a thread that just ended
        ran, waited = ran + int(on_cpu), waited + int(on_queue)
    return ran / 1e9, waited / 1e9


@contextmanager
def cpu_used(pids: dict[str, int], into: dict[str, tuple[float, float]]) -> Iterator[None]:
    """(CPU seconds, seconds waiting for a CPU) of each of ``pids`` meanwhile, by name."""
    before = {name: sched_seconds(pid) for name, pid in pids.items()}
    yield
    for name, pid in pids.items():
        ran, waited = sched_seconds(pid)
        into[name] = (ran - before[name][0], waited - before[name][1])


def report(name: str, latencies: list[float], seconds: float,
           cpu: dict[str, tuple[float, float]], concurrency: int) -> None:
    ms = [x * 1000 for x in latencies]
    print(f"{name}_cpu_ms_per_delivery=" + " ".join(
        f"{who}:{used / len(ms) * 1000:.2f}" for who, (used, _) in cpu.items()))
    print(f"{name}_cpu_wait_ms_per_delivery=" + " ".join(
        f"{who}:{waited / len(ms) * 1000:.2f}" for who, (_, waited) in cpu.items()))
    print(f"{name}_p50_ms={statistics.median(ms):.2f}")
    print(f"{name}_p99_ms={percentile(ms, 99):.2f}")
    print(f"{name}_max_ms={max(ms):.2f}")
    # Where the slowest answers are: the first wave (the first ``concurrency`` sent, all at
    # once on connections just opened, meeting whatever the machine was doing when the
    # burst began) or the steady state after it.
    first, rest = ms[:concurrency], ms[concurrency:]
    print(f"{name}_first_wave_p50_ms={statistics.median(first):.2f} "
          f"{name}_first_wave_max_ms={max(first):.2f} "
          f"{name}_after_first_wave_p99_ms={percentile(rest, 99):.2f}")
    print(f"{name}_accept_rate_per_s={len(ms) / seconds:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="per phase")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    admin_url = os.environ.get("LAYERBOT_TEST_PG_URL", "")
    if args.database == "postgres" and not admin_url:
        parser.error("--database postgres needs LAYERBOT_TEST_PG_URL "
                     "(source /var/tmp/layerbot-pg/env)")
    database = (fresh_database(admin_url, prefix="bench") if args.database == "postgres"
                else nullcontext(None))
    private, _ = generate_app_key()
    with (tempfile.TemporaryDirectory() as tmp, database as pg_url,
          FakeGitHub(DEFAULT_APP_ID, private) as fake):
        fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
        alone_items = prepare(fake, args.deliveries)
        busy_items = prepare(fake, args.deliveries)
        port = free_port()
        store_url = pg_url or f"sqlite:///{Path(tmp) / 'layerbot.db'}"
        config = write_config(Path(tmp), api_url=fake.url, app_id=DEFAULT_APP_ID,
                              private_key_pem=private, port=port, store_url=store_url,
                              extra={"logging": {"level": "warning"}})
        with BotProcess(config, port) as bot:
            assert bot.proc is not None
            # warm-up: one delivery end to end (token, permission cache, connections)
            warm = prepare(fake, 1)
            asyncio.run(send_all(bot.url, warm, 1))
            fake.wait_for(lambda: fake.reactions(warm[0][2]) == ["eyes"], timeout=30)
            reactions = "reactions/create-for-issue-comment"
            pids = {"web": bot.proc.pid, "worker": worker_pid(bot.proc.pid)}
            alone_cpu: dict[str, tuple[float, float]] = {}
            busy_cpu: dict[str, tuple[float, float]] = {}
            with (worker_stopped(store_url, pids["worker"]),
                  cpu_used(pids, alone_cpu)):
                started = time.perf_counter()
                alone = send_from_another_process(bot.url, alone_items, args.concurrency,
                                                 alone_cpu)
                alone_seconds = time.perf_counter() - started
            handling_from = time.perf_counter()
            cpu_before, requests_before = time.process_time(), len(fake.requests)
            # the worker is replying: the first N are the backlog it works through meanwhile
            fake.wait_for(lambda: fake.count(reactions) >= 2, timeout=60)
            with cpu_used({**pids, "bench": os.getpid()}, busy_cpu):
                started = time.perf_counter()
                busy = send_from_another_process(bot.url, busy_items, args.concurrency,
                                                busy_cpu)
                busy_seconds = time.perf_counter() - started
            handled_meanwhile = fake.count(reactions) - 1
            # a cheap check, rarely: the polling must not take the CPU it measures
            target = 2 * args.deliveries + 1
            fake.wait_for(lambda: fake.count(reactions) >= target, timeout=1200,
                          interval=0.25)
            # nothing lost, nothing done twice
            assert all(fake.reactions(c) == ["eyes"] for _, _, c in alone_items + busy_items)
            done = time.perf_counter()
            fake_cpu = time.process_time() - cpu_before
            fake_requests = len(fake.requests) - requests_before
        fake.assert_no_violations()
    print(f"database={args.database} deliveries_per_phase={args.deliveries} "
          f"concurrency={args.concurrency}")
    # CPU per delivery sent in the phase: the web process's own, and what ran beside it
    # (the client; the worker; the bench process, that is the fake GitHub answering the
    # worker).
    report("receiver_alone", alone, alone_seconds, alone_cpu, args.concurrency)
    report("with_handling", busy, busy_seconds, busy_cpu, args.concurrency)
    if handled_meanwhile >= 2 * args.deliveries:
        print("WARNING: the backlog was handled before the second phase ended")
    events = 2 * args.deliveries
    print(f"events_handled_per_s={events / (done - handling_from):.1f} "
          f"({events} events, worker let go to last eyes reaction: "
          f"{done - handling_from:.1f} s)")
    # The fake GitHub runs in this process and checks every request against the OpenAPI
    # description: its CPU per request bounds the rate above on this 2-core machine.
    print(f"fake_github_requests={fake_requests} "
          f"fake_github_cpu_ms_per_request={fake_cpu / max(fake_requests, 1) * 1000:.1f}")


if __name__ == "__main__":
    main()
