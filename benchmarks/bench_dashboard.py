"""Dashboard and API server time with a busy store: 10,000 jobs of 500 pull requests.

The store (SQLite by default, or --store-url) is filled with realistic builds, jobs,
state transitions and artifacts; then each page is requested many times in-process
(httpx's ASGI transport: server time, no network) and p50/p95 are printed per page.
Target: p95 under 100 ms for the overview and the job list.

    uv run python benchmarks/bench_dashboard.py [--requests 200] [--store-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.web.conftest import REPO, make_config
from tests.web.seed import TARGETS, seed

from layerbot import clock
from layerbot.app import Bot
from layerbot.store.db import Store

PAGES = {
    "overview (HTML)": "/",
    "job list, first page (HTML)": "/jobs",
    "job list, filtered (HTML)": "/jobs?state=failed&target=zen2",
    "job list, page 100 (HTML)": "/jobs?page=100",
    "PR list (HTML)": "/pulls",
    "costs (HTML)": "/costs",
    "API overview": "/api/overview",
    "API jobs, first page": "/api/jobs",
    "API jobs, filtered": "/api/jobs?state=failed&target=zen2&limit=50",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(app: object, requests: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, path in PAGES.items():
            for _ in range(5):  # warm up: templates compiled, caches filled
                assert (await client.get(path)).status_code == 200, path
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                response = await client.get(path)
                samples.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
            timings[name] = samples
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--prs", type=int, default=500)
    parser.add_argument("--store-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), args.store_url or None,
                             node_types=[{"name": n, "cpu_target": c} for n, c in TARGETS])
        store = Store(config.store_url)
        start = time.perf_counter()
        seeded = seed(store, now=clock.now(), prs=args.prs, jobs=args.jobs, repo=REPO,
                      instance=config.instance.name)
        print(f"seeded {seeded.jobs} jobs, {seeded.builds} builds, {seeded.prs} PRs "
              f"({store.engine.dialect.name}) in {time.perf_counter() - start:.1f} s")
        app = Bot(config, store).app()
        timings = asyncio.run(measure(app, args.requests))
        print(f"\n{'page':<32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  ({args.requests} "
              "requests each)")
        worst = 0.0
        for name, samples in timings.items():
            p95 = percentile(samples, 95)
            if name.startswith(("overview", "job list", "API overview", "API jobs")):
                worst = max(worst, p95)
            print(f"{name:<32} {statistics.median(samples):8.1f} {p95:8.1f} "
                  f"{max(samples):8.1f}")
        verdict = "met" if worst < 100 else "NOT met"
        print(f"\noverview and job lists: worst p95 {worst:.1f} ms; target < 100 ms {verdict}")
        store.close()


if __name__ == "__main__":
    main()
