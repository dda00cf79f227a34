"""wal/frame.py: the byte layout.

What: encode/check of one frame and of the segment header, and the documented field offsets.
How: build frames and look at the bytes at the offsets FORMAT.md names.
Could fail if: a field moves, the crc stops covering the length, or a garbled length is trusted.
"""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wal import WalCorrupt
from wal.frame import (
    FRAME_OVERHEAD,
    PAYLOAD_SIZE_MAX,
    SEGMENT_HEADER,
    ZERO_SCAN_CHUNK,
    check_frame,
    crc32c,
    decode_segment_header,
    encode_frame,
    encode_frame_into,
    encode_segment_header,
    segment_name,
    zero_tail_start,
)


def test_frame_layout_matches_the_documented_offsets():
    frame = encode_frame(7, b"hello")
    crc, length, lsn = struct.unpack_from("<IIQ", frame, 0)
    assert (length, lsn) == (5, 7)
    assert frame[16:21] == b"hello"
    assert struct.unpack_from("<I", frame, 21)[0] == 5
    assert len(frame) == FRAME_OVERHEAD + 5
    assert crc == crc32c(frame[4:])  # crc covers length, lsn, payload and the length copy


@given(st.integers(1, 2**64 - 1), st.binary(max_size=300))
def test_frame_round_trip(lsn, payload):
    buffer = bytearray(b"junk")
    size = encode_frame_into(buffer, lsn, payload)
    assert size == len(buffer) - 4
    assert check_frame(bytes(buffer), 4) == (lsn, len(buffer))


def test_check_frame_rejects_a_garbled_length_before_reading():
    frame = bytearray(encode_frame(1, b"abc"))
    struct.pack_into("<I", frame, 4, PAYLOAD_SIZE_MAX + 1)
    assert check_frame(bytes(frame), 0) == "frame length exceeds PAYLOAD_SIZE_MAX"
    assert check_frame(encode_frame(1, b"abc")[:-1], 0) == "frame extends past end of file"
    assert check_frame(b"\0" * 10, 0) == "frame header incomplete"


def test_segment_header_round_trip_and_damage(tmp_path):
    header = encode_segment_header(42)
    assert len(header) == SEGMENT_HEADER.size
    decode_segment_header(header, tmp_path / segment_name(42), 42)
    with pytest.raises(WalCorrupt, match="names first lsn"):
        decode_segment_header(header, tmp_path / "x", 43)
    with pytest.raises(WalCorrupt, match="magic"):
        decode_segment_header(b"X" + header[1:], tmp_path / "x", 42)
    damaged = bytearray(header)
    damaged[13] ^= 1
    with pytest.raises(WalCorrupt, match="checksum"):
        decode_segment_header(bytes(damaged), tmp_path / "x", 42)


def test_segment_name_is_twenty_digits():
    assert segment_name(1) == "wal-00000000000000000001.log"


@given(st.binary(max_size=64), st.integers(0, 3 * ZERO_SCAN_CHUNK), st.integers(0, 3 * ZERO_SCAN_CHUNK))
def test_zero_tail_start_is_where_the_trailing_zeros_begin(head: bytes, gap: int, zeros: int) -> None:
    """Across chunk boundaries: frames, zeros inside them, then the zero tail."""
    data = head + b"\0" * gap + b"\x01" + b"\0" * zeros
    assert zero_tail_start(data) == len(data.rstrip(b"\0")) == len(head) + gap + 1
    assert zero_tail_start(bytes(zeros)) == 0
    assert zero_tail_start(bytearray(head + b"\x02")) == len(head) + 1
