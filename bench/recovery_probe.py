"""Restart time of one data directory: start `tally serve` on it, time start -> GET /health 200,
read the RSS, stop it (by its PID); `--runs` times, back to back.

    python -m bench.recovery_probe DATA_DIR [--runs 2] [--code-root ../other-checkout]

`--code-root` runs the server from another checkout's code (e.g. main, for a before/after pair):
the server's Python then imports from that directory (PYTHONSAFEPATH, PYTHONPATH), not from here.
The data directory is left as found except for what a start writes (nothing when no key is
missing: bench.fill --direct makes both keys).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.run import Server

RUNS_MAX = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery_probe", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--code-root", type=Path, help="run the server from this checkout's code")
    parser.add_argument("--api-key", default="tly_probe", help="TALLY_BOOTSTRAP_KEY (unused when a key exists)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= RUNS_MAX or not args.data_dir.is_dir():
        print(f"bench.recovery_probe: --runs 1..{RUNS_MAX} and an existing data directory", file=sys.stderr)
        return 2
    if args.code_root is not None:
        os.environ["PYTHONSAFEPATH"] = "1"  # the server's cwd (this checkout) is not put on sys.path
        os.environ["PYTHONPATH"] = str(args.code_root.resolve())
    work_dir = Path(tempfile.mkdtemp(prefix="recovery-probe-"))
    no_snapshots = ("--snapshot-interval-records", "0", "--snapshot-interval-s", "0")
    for run in range(args.runs):
        server = Server("tally", work_dir, args.api_key, data_dir=args.data_dir, extra_args=no_snapshots)
        try:
            start_s = server.start()
            rss = server.rss_bytes()
        finally:
            stop_s = server.stop()
        print(f"run {run + 1}: start -> /health {start_s:.2f} s, RSS {rss / 2**20:,.0f} MiB, stop {stop_s:.2f} s",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
