"""The soak (issue 13): the whole fleet on this machine under seeded activity and faults.

Starts its own PostgreSQL and S3 server, the fake GitHub, two control-plane replicas, three
agents (two local, one on the Slurm of scripts/slurm.sh) and an ingest loop; drives PRs,
commands, pushes, deploy labels and faults from one seed for the given time; lets the system
settle; checks the invariants and prints the figures. Exit status 1 on any violation.

    python benchmarks/soak.py --minutes 60 --seed 7 [--root DIR] [--rate 0.5]

Run as root on a machine prepared by scripts/ (Slurm, the job user, sudo for the bot).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.soak.run import run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.5, help="actions per second")
    parser.add_argument("--root", type=Path, help="where the system keeps its files "
                        "(default: a new directory under /var/tmp)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="layerbot-soak-", dir="/var/tmp"))
    started = time.monotonic()
    report = run_soak(root / "system", args.minutes, args.seed, rate=args.rate)
    print("\n".join(report.lines()))
    print(f"wall time: {time.monotonic() - started:.0f} s; files in {root}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
