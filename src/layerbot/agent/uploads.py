"""The agent's upload loop: stage the deployments of the jobs this agent built.

One deployment at a time, as the control plane's uploader did before the fleet (an S3
upload still sends ``deploy.upload_concurrency`` parts at once): take what is due from the
ledger (the store for the agent inside ``serve``, the control plane over HTTPS for a
cluster's agent), stage it with this machine's ``[deploy]`` (``deploy/upload.py``), report
how it went. The loop never stops on an error: a control plane or store away for a moment
is asked again after a pause.
"""

from __future__ import annotations

import asyncio

from layerbot import log
from layerbot.agent.ledger import UploadLedger
from layerbot.deploy.upload import Stager
from layerbot.loops import pause

_log = log.get("agent")

#: How long the loop waits after a failed round (the control plane may be away).
FAILURE_PAUSE_SECONDS = 30.0


class UploadLoop:
    def __init__(self, ledger: UploadLedger, stager: Stager, poll_seconds: float = 5.0
                 ) -> None:
        self.ledger = ledger
        self.stager = stager
        self.poll_seconds = poll_seconds
        #: Set when deployments may have been recorded (the built-in agent is woken).
        self.wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        # What this agent was staging when it stopped (or lost its turn) is taken again
        # first: the multipart upload resumes, an object already stored is skipped.
        resume = True
        while not stop.is_set():
            try:
                staged = await self.upload_once(resume)
                resume = False
            except Exception as exc:
                _log.warning("uploading failed; trying again",
                             error=f"{type(exc).__name__}: {exc}")
                await pause(stop, FAILURE_PAUSE_SECONDS, self.wakeup)
                continue
            if not staged:
                await pause(stop, self.poll_seconds, self.wakeup)

    async def upload_once(self, resume: bool = False) -> int:
        """Stage what is due now (one claim's worth); returns how many were staged."""
        specs = await asyncio.to_thread(self.ledger.take_uploads, 1, resume)
        for spec in specs:
            report = await asyncio.to_thread(self.stager.stage, spec)
            await asyncio.to_thread(self.ledger.report_upload, spec, report)
        return len(specs)
