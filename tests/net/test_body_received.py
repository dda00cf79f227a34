"""net/handlers.py body_received: a body that has all arrived, without request.read()'s loop.

What: a whole body within the limit is returned and request.read() returns the same bytes after;
a body still arriving, one over the limit, one whose stream failed, and an empty one give b"" so
the handler awaits read() (which waits, raises 413 or the stream's error, as before). How: a real
aiohttp StreamReader fed by hand behind a mocked request. How it could fail: a truncated body
parsed, a body over the limit accepted, or read() answering b"" after the fast path took it.
"""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import streams, web
from aiohttp.http_exceptions import TransferEncodingError
from aiohttp.test_utils import make_mocked_request

from net.handlers import body_received

_LIMIT = 64


def _request(chunks: list[bytes], *, eof: bool, paused: bool = False) -> web.Request:
    protocol = mock.Mock(_reading_paused=paused, _buffer_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=mock.Mock())
    for chunk in chunks:
        payload.feed_data(chunk)
    if eof:
        payload.feed_eof()
    return make_mocked_request("POST", "/v1/billing/deduct", payload=payload, client_max_size=_LIMIT)


async def test_a_whole_body_is_taken_and_read_gives_it_again() -> None:
    request = _request([b'{"a":', b"1}"], eof=True)
    assert body_received(request) == b'{"a":1}'
    assert await request.read() == b'{"a":1}'


async def test_a_body_at_the_limit_is_taken() -> None:
    request = _request([b"x" * _LIMIT], eof=True)
    assert body_received(request) == b"x" * _LIMIT


async def test_over_the_limit_is_left_to_read_and_its_413() -> None:
    request = _request([b"x" * (_LIMIT + 1)], eof=True)
    assert body_received(request) == b""
    with pytest.raises(web.HTTPRequestEntityTooLarge):
        await request.read()


async def test_a_body_still_arriving_or_empty_or_failed_is_left_to_read() -> None:
    assert body_received(_request([b'{"a":'], eof=False)) == b""
    assert body_received(_request([], eof=True)) == b""
    failed = _request([b'{"a":'], eof=False)
    failed.content.set_exception(TransferEncodingError("bad chunk"))
    failed.content.feed_eof()
    assert body_received(failed) == b""
    with pytest.raises(TransferEncodingError):
        await failed.read()


async def test_one_chunk_is_taken_as_read_nowait_takes_it_without_resuming_the_connection() -> None:
    """The one-chunk path (net/handlers.py _one_chunk) leaves the reader as read_nowait() does
    (empty, cursor past the body, at EOF) and skips its protocol.resume_reading(): nothing was
    paused. A paused connection takes read_nowait(), which resumes it."""
    taken, reference = _request([b'{"a":1}'], eof=True), _request([b'{"a":1}'], eof=True)
    assert body_received(taken) == reference.content.read_nowait() == b'{"a":1}'
    for reader in (taken.content, reference.content):
        assert (reader._size, reader._cursor, len(reader._buffer), reader.is_eof()) == (0, 7, 0, True)
    at_eof = [mock.call(resume_parser=False)]  # feed_eof's own
    assert taken.content._protocol.resume_reading.call_args_list == at_eof
    assert reference.content._protocol.resume_reading.call_args_list == [*at_eof, mock.call()]
    assert await taken.read() == b'{"a":1}'

    paused = _request([b'{"a":1}'], eof=True, paused=True)
    assert body_received(paused) == b'{"a":1}'
    assert paused.content._protocol.resume_reading.call_args_list == [*at_eof, mock.call()]
