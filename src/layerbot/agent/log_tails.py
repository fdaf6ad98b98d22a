"""The tails of running jobs' output, sent to the control plane while the jobs run.

A tail counts as sent only once the ledger says it was delivered. A tail held back (the
job's state change has not reached the server yet, or the server did not answer) is
offered again on the next pass even if the output has not changed: a job that prints a
line and then works for an hour would otherwise show nothing until it ends.
"""

from __future__ import annotations

from pathlib import Path

from layerbot.agent.ledger import Ledger
from layerbot.build import results
from layerbot.core.jobs import JobState


class LogTailSender:
    def __init__(self, ledger: Ledger, lines: int) -> None:
        self.ledger = ledger
        self.lines = lines
        self._sent: dict[int, str] = {}

    def send_changed(self) -> set[int]:
        """Send the tails that changed since they were last delivered; returns the jobs
        whose tail was delivered now."""
        tails = self._changed()
        if not tails:
            return set()
        delivered = self.ledger.log_tails(tails)
        self._sent.update({i: tails[i] for i in delivered if i in tails})
        return delivered

    def _changed(self) -> dict[int, str]:
        running = [j for j in self.ledger.active()
                   if j.state is JobState.RUNNING and j.job_dir]
        for gone in set(self._sent) - {j.id for j in running}:
            del self._sent[gone]
        # Read as the reconciler reads: no link followed, bounded (the directory is the
        # job's, hostile).
        tails = {j.id: results.job_log_tail(Path(j.job_dir or ""), self.lines)
                 for j in running}
        return {i: t for i, t in tails.items() if t and self._sent.get(i) != t}
