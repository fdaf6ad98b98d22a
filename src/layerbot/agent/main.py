"""`layerbot agent`: register with the control plane, then run the agent's loops.

The agent needs no inbound port, no database, no GitHub credentials: it reads its own
configuration (backend, node types, build settings, data directory, and the staging area
and signing key its deployments go to), its token, and the control plane's URL, and from
then on only makes HTTPS requests (and the staging area's).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import time
from pathlib import Path

from layerbot import __version__, log
from layerbot.agent.client import ControlPlane, Refused, ServerUnreachable
from layerbot.agent.remote import Journal, RemoteLedger
from layerbot.agent.remote_uploads import RemoteUploads, UploadJournal
from layerbot.agent.runner import AgentRunner, capabilities_of
from layerbot.backends import make_backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.core.protocol import PROTOCOL_VERSION, RegisterRequest, RegisterResponse
from layerbot.deploy.staging import StagingError
from layerbot.deploy.upload import Stager, Stagings
from layerbot.loops import pause

_log = log.get("agent")

TOKEN_ENV = "LAYERBOT_AGENT_TOKEN"  # noqa: S105 (a variable name)
#: How long a claim may wait at the server for work (long poll).
CLAIM_WAIT_SECONDS = 20.0


class AgentError(Exception):
    """The agent cannot run; the message says what to fix."""


def read_token(config: Config) -> str:
    if token := os.environ.pop(TOKEN_ENV, ""):
        return token.strip()
    path = config.agent.token_file
    if path is None:
        raise AgentError(f"no agent token: set agent.token_file or {TOKEN_ENV} "
                         "(`layerbot agents add NAME` on the control plane prints one)")
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise AgentError(f"agent.token_file: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise AgentError(f"agent.token_file: {path} is empty")
    return token


def register(server: ControlPlane, config: Config, journal: Journal,
             protocol: int = PROTOCOL_VERSION) -> RegisterResponse:
    """Say who this agent is, and reconcile what it holds with what the server says."""
    answer = server.register(RegisterRequest(
        protocol=protocol, version=__version__, cluster=config.agent_cluster,
        capabilities=capabilities_of(config)))
    theirs = {j.id: j for j in answer.jobs}
    for held in journal.all():
        server_view = theirs.get(held.spec.id)
        if server_view is None or server_view.lease_id != held.spec.lease_id:
            # Leased elsewhere (or ended) while this agent was away: stop what runs here.
            held.gone = held.cancel = True
            journal.save(held)
        elif server_view.cancel:
            held.cancel = True
            journal.save(held)
    _log.info("registered", agent=answer.agent, server_jobs=len(theirs),
              local_jobs=len(journal.all()))
    return answer


async def run(config: Config, server_url: str, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``); raises AgentError when it cannot."""
    # `kill -USR1 <agent>` prints every thread's stack to the log: for a stuck agent.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    token = read_token(config)
    server = ControlPlane(server_url, token, ca_file=config.agent.ca_file)
    journal = Journal(config.instance.data_dir / "agent" / "jobs")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    answer, asked = None, time.monotonic()
    while answer is None and not stop.is_set():
        asked = time.monotonic()  # the leases it renews run from before the question
        try:
            answer = await asyncio.to_thread(register, server, config, journal)
        except Refused as exc:
            raise AgentError(f"the control plane refused this agent: {exc}") from None
        except ServerUnreachable as exc:
            _log.warning("control plane unreachable; retrying", error=str(exc))
            await asyncio.sleep(5)
    if answer is None:
        return
    ledger = RemoteLedger(server, journal, answer.lease_seconds)
    ledger.renewed(asked, answer.lease_seconds)
    backend = make_backend(config)
    mirrors = Mirrors(config.mirrors_dir, attempts=config.build.fetch_attempts)
    stagings = await prepared_stagings(config)
    uploads = RemoteUploads(server, UploadJournal(config.instance.data_dir / "agent" / "uploads"))
    runner = AgentRunner(config, ledger, backend, mirrors,
                         claim_wait_seconds=CLAIM_WAIT_SECONDS, lease_valid=ledger.lease_valid,
                         heartbeat_seconds=answer.heartbeat_seconds, uploads=uploads,
                         stager=stager_of(config, stagings), stagings=stagings)
    watcher = asyncio.create_task(_stop_when_refused(ledger, stop))
    try:
        await runner.run(stop)
    finally:
        watcher.cancel()
        server.close()
    if ledger.refused:
        raise AgentError(f"the control plane refused this agent: {ledger.refused}")


async def prepared_stagings(config: Config) -> Stagings:
    """The staging areas, their S3 clients made now: a bad ``[deploy]`` stops the agent at
    start rather than failing its first deployment hours later."""
    stagings = Stagings(config)
    if "deploy" in config.model_fields_set:
        try:
            await asyncio.to_thread(stagings.prepare)
        except (StagingError, ValueError) as exc:  # botocore: ValueError for an endpoint
            raise AgentError(f"[deploy]: the staging area cannot be used: {exc}") from None
    return stagings


def stager_of(config: Config, stagings: Stagings | None = None) -> Stager:
    """This agent's stager. Without a ``[deploy]`` section of its own it stages nothing and
    says so on the PR: the embedded default (a directory in its data dir) is read by no
    ingest server, so "uploaded" there would be a lie."""
    return Stager(config, stagings, configured="deploy" in config.model_fields_set)


async def _stop_when_refused(ledger: RemoteLedger, stop: asyncio.Event) -> None:
    """A revoked token or an unsupported protocol ends the agent (an operator must act)."""
    while not stop.is_set():
        if ledger.refused:
            _log.error("refused by the control plane; stopping", reason=ledger.refused)
            stop.set()
            return
        await pause(stop, 1.0)
