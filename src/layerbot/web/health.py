"""GET /healthz (alive), /readyz (able to work), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from layerbot import clock, log, metrics
from layerbot.store.db import Store
from layerbot.store.inbox import Inbox
from layerbot.store.outbox import Outbox

_log = log.get("web")


def health_router(store: Store, inbox: Inbox, outbox: Outbox, max_lag: float,
                  worker_alive: Callable[[], bool] | None = None,
                  singletons_held: Callable[[], dict[str, bool]] | None = None) -> APIRouter:
    """``singletons_held``: which singleton loops this replica runs (read from the store
    when they run in the worker process, whose own metrics are not served here)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks: dict[str, dict[str, object]] = {}
        try:
            await asyncio.to_thread(store.ping)
            checks["database"] = {"ok": True}
            lag = await asyncio.to_thread(inbox.lag_seconds, clock.now())
            checks["inbox_lag"] = {"ok": lag <= max_lag, "seconds": round(lag, 3),
                                   "threshold": max_lag}
        except Exception as exc:
            checks["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if worker_alive is not None:
            checks["worker"] = {"ok": worker_alive()}
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics_endpoint() -> Response:
        try:
            metrics.INBOX_LAG.set(await asyncio.to_thread(inbox.lag_seconds, clock.now()))
            metrics.OUTBOX_BACKLOG.set(await asyncio.to_thread(outbox.backlog))
            if singletons_held is not None:
                for name, held in (await asyncio.to_thread(singletons_held)).items():
                    metrics.SINGLETON_HELD.labels(name=name).set(1 if held else 0)
        except Exception as exc:  # metrics must still be served when the database is down
            _log.warning("metrics: store unreachable", error=str(exc))
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
