"""A server's child processes, from /proc (Linux): which run, and whether one is still alive.

The one place bench/ (CPU shares, py-spy targets, callgrind) and tests/ (a front or the WAL
flusher killed and replaced, children dying with the server) list a server's children."""

from __future__ import annotations

import os


def children_of(pid: int, module: str = "") -> set[int]:
    """Live PIDs whose parent is `pid` and that run `python -m <module>` ("net.front": a front;
    "wal.flusher_main": the WAL flusher process; "": any child), from /proc (Linux)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z" and (not module or module.encode() in argv):
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
