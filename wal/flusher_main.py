"""`python -m wal.flusher_main SPEC`: the WAL flusher process (wal/flusher.py ProcessFlusher).

Started by a WalWriter, never by an operator. SPEC is a JSON FlusherSpec. It dies with its parent
(PR_SET_PDEATHSIG) and ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process
group; the writer stops it with a stop request once every batch is durable).

One batch at a time, in order: read it, SegmentAppender.write_batch (rotate, one write, one sync),
reply DONE, then top up the zeros while the loop answers the batch. Any error is a FAILED reply
and exit 1: fail-stop, nothing is retried. The end of the stream (the writer's process is gone)
is exit 0 without touching the file again.
"""

from __future__ import annotations

import math
import signal
import socket
import sys
from functools import partial
from pathlib import Path

import msgspec

from wal.appender import OsLogFile, SegmentAppender
from wal.flusher import DONE, FAILED, FAILURE_MESSAGE_MAX, READY, REPLY, REQUEST, FlusherSpec
from wal.process import die_with_parent

EXIT_FAILED = 1


def serve(sock: socket.socket, appender: SegmentAppender) -> int:
    """Batches until a stop request (close the segment: 0) or the end of the stream (0)."""
    header = bytearray(REQUEST.size)
    while _receive_into(sock, memoryview(header)):
        lsn_before, lsn_last, length = REQUEST.unpack(header)
        if lsn_last == 0:
            appender.close()
            return 0
        data = bytearray(length)
        if not _receive_into(sock, memoryview(data)):
            return 0
        latency_us = appender.write_batch(data, lsn_before)
        sock.sendall(REPLY.pack(DONE, 0, lsn_last, length, math.nan if latency_us is None else latency_us))
        appender.top_up()
    return 0


def _receive_into(sock: socket.socket, view: memoryview) -> bool:
    """Fill `view`; False at the end of the stream (a cut request counts as the end)."""
    while view:
        received = sock.recv_into(view)
        if received == 0:
            return False
        view = view[received:]
    return True


def report_failure(sock: socket.socket, error: BaseException) -> None:
    """FAILED with the error's errno (0: not an OSError) and its text, cut to the bound."""
    code = error.errno if isinstance(error, OSError) and error.errno else 0
    text = (error.strerror or str(error)) if isinstance(error, OSError) else repr(error)
    message = text.encode("utf-8", "replace")[:FAILURE_MESSAGE_MAX]
    try:
        sock.sendall(REPLY.pack(FAILED, code, 0, len(message), 0.0) + message)
    except OSError:
        pass  # the writer is gone: it fails on the closed stream by itself


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[1], type=FlusherSpec)
    die_with_parent(spec.parent_pid, EXIT_FAILED)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=spec.fd)
    appender = SegmentAppender(Path(spec.directory), segment_size_max=spec.segment_size_max, fsync=spec.fsync,
                               factory=partial(OsLogFile, dsync=spec.fsync))  # fmt: skip
    try:
        appender.resume(spec.position)
        sock.sendall(REPLY.pack(READY, 0, 0, 0, 0.0))
        return serve(sock, appender)
    except BrokenPipeError:
        return 0  # the writer's process is gone
    except BaseException as error:  # OSError: fail-stop; anything else is a bug: stop too
        report_failure(sock, error)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
