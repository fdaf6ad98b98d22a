"""`layerbot serve` as two processes: the web process answers, the worker process works.

GitHub's deliveries must be answered in milliseconds even while a burst of events is being
handled. Handling (GitHub calls, git, the backend) is CPU work in Python; in the same process
it would share one interpreter lock with the receiver. So the web process runs only the
receiver (and the API), and a worker process runs every loop. They share nothing but the
store; after each inbox commit the web process nudges the worker through a pipe, so events
are picked up at once (and the worker also polls, so a lost nudge costs nothing). While the
receiver is answering, the worker's database work waits (app/answers_first.py).

The worker dies with the web process (PR_SET_PDEATHSIG) and is restarted if it dies alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

from layerbot import log
from layerbot.app.answers_first import ReceiverBusy
from layerbot.config import Config

_log = log.get("app")

RESTART_DELAY_SECONDS = 1.0
WORKER_NICENESS = 10
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the web process dies; and if it died already, go now.

    The death signal is only armed once the worker runs this, a second or more after the
    spawn (a fresh interpreter unpickles the configuration first). A web process killed in
    that window leaves the worker orphaned and never signalled: it would run the bot's loops
    forever beside whatever starts next. Checking the parent after arming closes the window.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the supervisor's terminate() still ends it
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(config: Config, nudges: Connection, parent_pid: int | None = None,
                receiver: ReceiverBusy | None = None) -> None:
    """The worker process: every background loop of the bot.

    ``receiver``: the web process's mark of when it is answering; the worker's database
    work waits for it (app/answers_first.py)."""
    _die_with_parent(parent_pid if parent_pid is not None else os.getppid())
    from layerbot.app.hardening import harden
    from layerbot.app.memory import limit_malloc_arenas

    harden()  # a process of its own (spawned): not dumpable either
    limit_malloc_arenas()
    # Handling is throughput work; answering GitHub is latency work: on a busy machine the
    # web process goes first.
    os.nice(WORKER_NICENESS)
    # A thread in a transaction holds SQLite's write lock, which the web process's inbox
    # writer waits for; with the default 5 ms switch interval it waited for the
    # interpreter lock while the loop ran handlers, and held the database 30 ms at a time
    # (bench_webhook). The web process does the same (`serve`).
    sys.setswitchinterval(0.0005)
    log.configure(config.logging.format, config.logging.level, config.logging.levels)
    from layerbot.app import Bot
    from layerbot.store.db import Store

    async def main() -> None:
        pace = receiver.wait if receiver is not None else None
        bot = Bot(config, Store(config.store_url, durable=False, pace=pace))
        gc.collect()
        gc.freeze()  # long-lived objects out of full collections (they stall held locks)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def nudged() -> None:
            with contextlib.suppress(EOFError, OSError, BlockingIOError):
                while nudges.poll():
                    nudges.recv_bytes()
            bot.processor.wakeup.set()
            bot.wake_sender()  # an agent's report may have written to the outbox

        loop.add_reader(nudges.fileno(), nudged)
        await bot.run_loops(stop)

    asyncio.run(main())


class WorkerSupervisor:
    """Starts the worker process, restarts it if it dies, and forwards nudges to it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._send: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        #: Marked by the web process's receiver; every worker it starts waits for it.
        self.receiver = ReceiverBusy()

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def nudge(self) -> None:
        if self._send is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            self._send.send_bytes(b"!")

    def _start(self) -> None:
        receive, send = self._context.Pipe(duplex=False)
        os.set_blocking(send.fileno(), False)  # a full pipe means the worker is awake anyway
        process = self._context.Process(target=worker_main,
                                        args=(self.config, receive, os.getpid(),
                                              self.receiver),
                                        name="layerbot-worker", daemon=True)
        process.start()
        receive.close()
        self._process, self._send = process, send
        _log.info("worker process started", pid=process.pid)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if not self.alive():
                code = self._process.exitcode if self._process else None
                _log.error("worker process ended; restarting", exitcode=code)
                self.restarts += 1
                await asyncio.sleep(RESTART_DELAY_SECONDS)
                self._start()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerSupervisor]:
        self._start()
        self._task = asyncio.create_task(self._watch(), name="worker-supervisor")
        try:
            yield self
        finally:
            self._task.cancel()
            if self._process is not None and self._process.is_alive():
                self._process.terminate()
                await asyncio.to_thread(self._process.join, 15)
                if self._process.is_alive():
                    self._process.kill()
