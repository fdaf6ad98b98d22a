"""The C allocator of the bot's long-running processes: few arenas, so memory stays flat.

Why: glibc gives every thread that allocates while another holds the main arena a heap of
its own (up to 8 per CPU), and memory freed in one heap is reused only by the threads that
land on it. The bot's processes run a pool of threads for database calls and uploads (the
worker had six such heaps after a minute of bench_webhook, 23 MB between them), and which
thread gets which heap changes from call to call: freed pages pile up in heaps that are not
asked again soon. The 60-minute soak saw a control-plane worker grow 10 % and the Slurm
agent 9 %, in steps. With two arenas the threads share their free memory; the interpreter
lock lets one thread allocate at a time anyway, so the contention that per-thread arenas
avoid hardly exists here.
"""

from __future__ import annotations

import ctypes

#: ``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's malloc.h).
M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas in this process from now on; False where the C
    library has no ``mallopt`` (not glibc). Call it before threads start: heaps that
    threads already own are kept."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas) == 1)
    except (OSError, AttributeError):
        return False
