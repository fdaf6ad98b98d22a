"""The bot's processes keep to two malloc arenas, however many threads allocate."""

from __future__ import annotations

import subprocess
import sys

# Eight threads that allocate at once, long enough to collide: each collision gives a thread
# a heap of its own (64 MB of address space, aligned to 64 MB) unless the arenas are capped.
SCRIPT = """
import ctypes, sys, threading
from layerbot.app.memory import limit_malloc_arenas
if sys.argv[1] == "limited":
    assert limit_malloc_arenas()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)
def churn():
    start.wait()
    for _ in range(20000):
        libc.free(libc.malloc(512))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
heaps = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    begin, end = (int(x, 16) for x in fields[0].split("-"))
    if len(fields) == 5 and begin % (64 << 20) == 0 and fields[1] == "rw-p":
        heaps += 1
print(heaps)
"""


def heaps_of_threads(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True).stdout
    return int(out)


def test_threads_share_at_most_one_heap_beside_the_main_arena() -> None:
    assert heaps_of_threads("limited") <= 1
    # The check itself sees per-thread heaps when nothing caps them.
    assert heaps_of_threads("default") >= 2
