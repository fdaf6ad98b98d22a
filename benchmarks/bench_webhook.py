"""Webhook answer latency and event throughput of a real `layerbot serve` (issue 2 figures).

Sends N signed `issue_comment` deliveries, C at a time, over loopback to a `layerbot serve`
with the default SQLite store (each delivery durable before its answer), then waits until
the fake GitHub has received the `eyes` reaction for every one of them.

    uv run python benchmarks/bench_webhook.py [--deliveries 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.botproc import SECRET, BotProcess, free_port, write_config
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
    """Send every delivery over ``concurrency`` keep-alive connections; per-request latency."""
    host, port = url.removeprefix("http://").split(":")
    requests = [raw_request(int(port), body, headers) for body, headers, _ in items]
    latencies: list[float] = []
    position = 0

    async def connection() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(host, int(port))
        while position < len(requests):
            request = requests[position]
            position += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 202"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies


def _client(url: str, items: list[tuple[bytes, dict[str, str], int]], concurrency: int,
            out: Connection) -> None:
    out.send(asyncio.run(send_all(url, items, concurrency)))


def send_from_another_process(url: str, items: list[tuple[bytes, dict[str, str], int]],
                              concurrency: int) -> list[float]:
    """The client in a process of its own: the fake GitHub, which lives in this process and
    answers the bot's requests meanwhile, must not hold the client's interpreter lock."""
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=_client, args=(url, items, concurrency, send))
    process.start()
    latencies: list[float] = receive.recv()
    process.join()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    private, _ = generate_app_key()
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(DEFAULT_APP_ID, private) as fake:
        fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
        items = prepare(fake, args.deliveries)
        port = free_port()
        config = write_config(Path(tmp), api_url=fake.url, app_id=DEFAULT_APP_ID,
                              private_key_pem=private, port=port,
                              extra={"logging": {"level": "warning"}})
        with BotProcess(config, port) as bot:
            # warm-up: one delivery end to end (token, permission cache, connections)
            warm = prepare(fake, 1)
            asyncio.run(send_all(bot.url, warm, 1))
            fake.wait_for(lambda: fake.reactions(warm[0][2]) == ["eyes"], timeout=30)
            started = time.perf_counter()
            cpu_before, requests_before = time.process_time(), len(fake.requests)
            latencies = send_from_another_process(bot.url, items, args.concurrency)
            sent = time.perf_counter()
            # a cheap check, rarely: the polling must not take the CPU it measures
            target = len(items) + 1
            fake.wait_for(lambda: fake.count("reactions/create-for-issue-comment") >= target,
                          timeout=600, interval=0.25)
            assert all(fake.reactions(c) == ["eyes"] for _, _, c in items)
            done = time.perf_counter()
            fake_cpu = time.process_time() - cpu_before
            fake_requests = len(fake.requests) - requests_before
        fake.assert_no_violations()
    ms = [x * 1000 for x in latencies]
    print(f"deliveries={len(items)} concurrency={args.concurrency}")
    print(f"webhook_answer_p50_ms={statistics.median(ms):.2f}")
    print(f"webhook_answer_p99_ms={percentile(ms, 99):.2f}")
    print(f"webhook_answer_max_ms={max(ms):.2f}")
    print(f"accept_rate_per_s={len(items) / (sent - started):.0f}")
    print(f"events_handled_per_s={len(items) / (done - started):.1f} "
          f"(delivery to eyes reaction received, {done - started:.1f} s for all)")
    # The fake GitHub runs in this process and checks every request against the OpenAPI
    # description: its CPU per request bounds the rate above on this 2-core machine.
    print(f"fake_github_requests={fake_requests} "
          f"fake_github_cpu_ms_per_request={fake_cpu / max(fake_requests, 1) * 1000:.1f}")


if __name__ == "__main__":
    main()
