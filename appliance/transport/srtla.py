"""SRTLA wire format (specs/srtla.md): pure functions over bytes.

Wire-compatible with BELABOX srtla_send / srtla_rec. Nothing here does I/O or
raises on foreign input: parsers return None (or an empty list) for anything
that is not what they parse, so the sender and the relay can count and drop.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

KEEPALIVE = 0x9000
ACK = 0x9100
REG1 = 0x9200
REG2 = 0x9201
REG3 = 0x9202
REG_ERR = 0x9210
REG_NGP = 0x9211
REG_NAK = 0x9212

SRT_ACK = 0x8002
SRT_NAK = 0x8003

ID_LEN = 256
REG_LEN = 2 + ID_LEN
ACK_LEN = 44
ACK_SEQS = 10
MIN_SRT = 16  # an SRT header


def kind(d: bytes) -> int | None:
    """The 16-bit type; SRT data packets (bit 15 clear) come back as 0."""
    if len(d) < 2:
        return None
    t = struct.unpack_from(">H", d)[0]
    return 0 if not t & 0x8000 else t


def is_srt_data(d: bytes) -> bool:
    return len(d) >= MIN_SRT and not d[0] & 0x80


def srt_seq(d: bytes) -> int | None:
    return struct.unpack_from(">I", d)[0] & 0x7FFFFFFF if is_srt_data(d) else None


def reg(code: int, ident: bytes) -> bytes:
    if len(ident) != ID_LEN:
        raise ValueError("SRTLA ids are 256 bytes")
    return struct.pack(">H", code) + ident


def reg_id(d: bytes, code: int) -> bytes | None:
    """The id of a REG1/REG2 datagram of exactly 258 bytes, else None."""
    if len(d) != REG_LEN or kind(d) != code:
        return None
    return d[2:]


def short(code: int) -> bytes:
    return struct.pack(">H", code)


def keepalive(timestamp_ms: int | None = None) -> bytes:
    """Keepalive; with our timestamp appended the receiver's echo gives the link RTT."""
    if timestamp_ms is None:
        return short(KEEPALIVE)
    return short(KEEPALIVE) + struct.pack(">Q", timestamp_ms & 0xFFFFFFFFFFFFFFFF)


def keepalive_timestamp(d: bytes) -> int | None:
    if kind(d) != KEEPALIVE or len(d) != 10:
        return None
    return struct.unpack_from(">Q", d, 2)[0]


def srtla_ack(seqs: list[int]) -> bytes:
    if len(seqs) != ACK_SEQS:
        raise ValueError("an SRTLA ACK carries 10 sequence numbers")
    return struct.pack(">I10I", ACK << 16, *seqs)


def parse_srtla_ack(d: bytes) -> list[int]:
    if len(d) != ACK_LEN or kind(d) != ACK:
        return []
    return list(struct.unpack_from(">10I", d, 4))


def srt_ack_number(d: bytes) -> int | None:
    """The last acknowledged sequence number of an SRT ACK (bytes 16..19)."""
    if kind(d) != SRT_ACK or len(d) < 20:
        return None
    return struct.unpack_from(">I", d, 16)[0] & 0x7FFFFFFF


def srt_nak_ranges(d: bytes) -> list[tuple[int, int]]:
    """The loss list of an SRT NAK as inclusive (first, last) ranges."""
    if kind(d) != SRT_NAK or len(d) < 20:
        return []
    words = struct.unpack_from(f">{(len(d) - 16) // 4}I", d, 16)
    out, i = [], 0
    while i < len(words):
        w = words[i]
        if w & 0x80000000:
            if i + 1 >= len(words):
                break  # a range opened and never closed: malformed tail
            out.append((w & 0x7FFFFFFF, words[i + 1] & 0x7FFFFFFF))
            i += 2
        else:
            out.append((w, w))
            i += 1
    return out


# --- our optional shared secret, inside the standard id -------------------------------------

def sender_id(secret: bytes | None = None) -> bytes:
    """A random 256-byte id. With a secret, bytes 32..63 carry an HMAC of bytes
    0..31, inside the first 128 bytes that the relay keeps in the group id: the
    wire format is unchanged, and a relay with the secret can check it."""
    ident = bytearray(os.urandom(ID_LEN))
    if secret:
        ident[32:64] = hmac.new(secret, bytes(ident[:32]), hashlib.sha256).digest()
    return bytes(ident)


def id_signed(ident: bytes, secret: bytes) -> bool:
    expected = hmac.new(secret, ident[:32], hashlib.sha256).digest()
    return hmac.compare_digest(expected, ident[32:64])
