"""bench/instructions.py reads callgrind's totals and reports the ratio bare / Tally.

What: the dump parsing takes the largest total among the dump files of one process (the dump
after the counted requests; callgrind also writes one at exit), never another pid's, and the
report's ratio and per-process shares (--workers 2: the sum over the ledger and its fronts).
How it could fail: a changed dump format read as 0 or the startup total, or the ratio inverted;
or a process counted before it listens (its start-up read as request work: the old 606k figure).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bench.instructions import CallgrindServer, listening_pids, process_name, report


def test_dumped_instructions_takes_the_largest_total(tmp_path: Path) -> None:
    server = CallgrindServer("tally", tmp_path, "key")
    for suffix, total in ((".123", 1_000), (".123.1", 52_000_000), (".123.2", 7), (".1234.1", 90_000_000)):
        Path(str(server.out_prefix) + suffix).write_text(f"version: 1\ncreator: callgrind-3.19.0\nsummary: {total}\n")
    assert server.dumped_instructions(123) == 52_000_000
    assert server.dumped_instructions(1234) == 90_000_000
    assert server.command()[:3] == ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    assert f"--callgrind-out-file={server.out_prefix}.%p" in server.command()


def test_no_dump_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no callgrind dump"):
        CallgrindServer("baseline", tmp_path, "key").dumped_instructions(123)


def test_report_ratio() -> None:
    lines = report({"requests": 1000, "connections": 16, "bare": 200_000.0, "tally": 400_000.0, "ratio": 0.5})
    assert lines[2] == "| bare aiohttp POST | 200,000 | — |"
    assert lines[3] == "| Tally deduct, hot, --workers 1 (durable) | 400,000 | 0.50× |"


def test_report_workers_sums_and_shares() -> None:
    lines = report({"requests": 1000, "connections": 16, "workers": 2, "bare": 230_000.0, "tally": 460_000.0,
                    "ratio": 0.5, "bare_each": [115_000.0, 115_000.0],
                    "tally_each": [150_000.0, 160_000.0, 150_000.0]})  # fmt: skip
    assert lines[2] == "| bare aiohttp POST, 2 processes | 230,000 | — |"
    assert lines[3] == "| Tally deduct, hot, --workers 2 (durable) | 460,000 | 0.50× |"
    assert lines[5] == ("- per process (instructions / all requests): Tally ledger 150,000, front 0 160,000, "
                        "front 1 150,000; bare 115,000, 115,000.")


def test_listening_pids_sees_a_listening_socket_not_a_bound_one() -> None:
    """A process counts as serving once it holds a LISTEN socket on the port; a bound,
    non-listening one (the ledger's port reservation) does not count."""
    with socket.socket() as listening, socket.socket() as bound:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bound.bind(("127.0.0.1", 0))
        me = os.getpid()
        assert listening_pids([me], listening.getsockname()[1]) == {me}
        assert listening_pids([me], bound.getsockname()[1]) == set()


def test_report_names_each_process_it_was_given() -> None:
    lines = report({"requests": 1000, "connections": 16, "bare": 230_000.0, "tally": 300_000.0, "ratio": 0.77,
                    "bare_each": [230_000.0], "tally_each": [290_000.0, 10_000.0],
                    "tally_names": ["server", "WAL flusher"]})  # fmt: skip
    assert lines[5] == "- per process (instructions / all requests): Tally server 290,000, WAL flusher 10,000; bare 230,000."


def test_process_name_reads_the_command_line() -> None:
    assert process_name(os.getpid(), [os.getpid()]) == "server"
