"""Missed deliveries: GitHub never redelivers a failed delivery by itself, so we ask.

At start and then periodically, list the App's recent deliveries and request a
redelivery of each event whose deliveries all failed and that is not in the inbox.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from layerbot import clock, log
from layerbot.config import DeliveriesConfig
from layerbot.github.client import GitHubApp, GitHubError
from layerbot.store.inbox import Inbox

_log = log.get("deliveries")

MAX_PAGES = 20


async def recent_deliveries(github: GitHubApp, since: datetime) -> list[dict[str, Any]]:
    """Deliveries newer than ``since``, newest first, following the cursor pagination."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"per_page": 100}
    for _ in range(MAX_PAGES):
        response = await github.app_request_raw("GET", "/app/hook/deliveries", params=params)
        page = response.json() or []
        out.extend(page)
        oldest = _time(page[-1]["delivered_at"]) if page else None
        cursor = _next_cursor(response.headers.get("link", ""))
        if not page or cursor is None or (oldest is not None and oldest < since):
            break
        params = {"per_page": 100, "cursor": cursor}
    return [d for d in out if _time(d["delivered_at"]) >= since]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _next_cursor(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part and "cursor=" in part:
            url = part[part.find("<") + 1 : part.find(">")]
            for pair in url.split("?", 1)[-1].split("&"):
                if pair.startswith("cursor="):
                    return pair.split("=", 1)[1]
    return None


def to_redeliver(deliveries: list[dict[str, Any]], known: set[str]) -> list[dict[str, Any]]:
    """The newest failed delivery of each event that never got through and is not stored.

    A GUID identifies the event across all its attempts: if any attempt succeeded, or we
    have the event in the inbox, nothing needs to be asked again.
    """
    succeeded = {d["guid"] for d in deliveries if 200 <= int(d.get("status_code") or 0) < 300}
    chosen: dict[str, dict[str, Any]] = {}
    for d in deliveries:
        guid = d["guid"]
        if guid in succeeded or guid in known or d.get("event") == "ping":
            continue
        chosen.setdefault(guid, d)  # the list is newest first
    return list(chosen.values())


async def recover_once(github: GitHubApp, inbox: Inbox, config: DeliveriesConfig) -> int:
    since = clock.now() - timedelta(hours=config.lookback_hours)
    deliveries = await recent_deliveries(github, since)
    known = await asyncio.to_thread(inbox.known_deliveries, [d["guid"] for d in deliveries])
    asked = 0
    for d in to_redeliver(deliveries, known):
        try:
            await github.app_request("POST", f"/app/hook/deliveries/{d['id']}/attempts")
            asked += 1
            _log.info("redelivery requested", delivery_id=d["guid"], github_event=d.get("event"))
        except GitHubError as exc:
            _log.warning("redelivery refused", delivery_id=d["guid"], error=str(exc))
    return asked


async def run(github: GitHubApp, inbox: Inbox, config: DeliveriesConfig,
              stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recover_once(github, inbox, config)
        except GitHubError as exc:
            _log.warning("could not list deliveries", error=str(exc))
        except Exception:
            _log.exception("delivery recovery crashed")
        if config.recover_interval_seconds <= 0:
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=config.recover_interval_seconds)
        except TimeoutError:
            pass
