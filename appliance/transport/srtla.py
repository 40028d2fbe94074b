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


def keepalive(timestamp_ms: int | None = None, rtt_s: float | None = None) -> bytes:
    """Keepalive; with our timestamp appended the receiver's echo gives the link RTT.
    With the RTT the sender last measured (4 more bytes, microseconds: our extension,
    which a receiver that does not know it echoes whole and ignores), the relay can
    show each link's RTT."""
    if timestamp_ms is None:
        return short(KEEPALIVE)
    d = short(KEEPALIVE) + struct.pack(">Q", timestamp_ms & 0xFFFFFFFFFFFFFFFF)
    return d if rtt_s is None else d + struct.pack(">I", min(0xFFFFFFFF, max(0, int(rtt_s * 1e6))))


def keepalive_timestamp(d: bytes) -> int | None:
    if kind(d) != KEEPALIVE or len(d) not in (10, 14):
        return None
    return struct.unpack_from(">Q", d, 2)[0]


def keepalive_rtt_ms(d: bytes) -> float | None:
    """The sender's RTT of this link, from a keepalive that carries it."""
    if kind(d) != KEEPALIVE or len(d) != 14:
        return None
    return struct.unpack_from(">I", d, 10)[0] / 1000


HANDSHAKE, SID_EXT, CONCLUSION = 0x8000, 5, 0xFFFFFFFF


def srt_stream_id(d: bytes) -> str | None:
    """The stream id in an SRT caller's conclusion handshake (HSv5, extension SID),
    as the ingest will read it; None for any other datagram. libsrt writes the
    string in 32-bit words, each byte-swapped: swapped back here."""
    if len(d) < 64 + 4 or kind(d) != HANDSHAKE:
        return None
    version, = struct.unpack_from(">I", d, 16)
    hs_type, = struct.unpack_from(">I", d, 16 + 20)
    if version != 5 or hs_type != CONCLUSION:
        return None
    at = 64
    while at + 4 <= len(d):
        ext, words = struct.unpack_from(">HH", d, at)
        body = d[at + 4:at + 4 + 4 * words]
        if len(body) < 4 * words:
            return None
        if ext == SID_EXT:
            raw = b"".join(body[i:i + 4][::-1] for i in range(0, len(body), 4))
            return raw.rstrip(b"\0").decode("utf-8", "replace")
        at += 4 + 4 * words
    return None


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


# --- our optional shared secret: proofs inside the standard ids (docs/relay-auth.md) --------

CHALLENGE_LEN = 16
PROOF_AT, PROOF_END = 32, 32 + CHALLENGE_LEN + 32  # [challenge | HMAC] in the sender's half


def sender_id() -> bytes:
    """A random 256-byte id, as srtla_send draws it."""
    return os.urandom(ID_LEN)


def with_challenge(code: int, challenge: bytes) -> bytes:
    """REG_NGP or REG_NAK carrying the relay's challenge (a relay with a secret only)."""
    return short(code) + challenge


def challenge_of(d: bytes) -> bytes | None:
    return d[2:2 + CHALLENGE_LEN] if len(d) == 2 + CHALLENGE_LEN else None


def _mac(secret: bytes, code: int, ident: bytes, challenge: bytes) -> bytes:
    # The sender's random head and the id's far half (the sender's in REG1, the relay's
    # in a group id): what names the group, with the challenge the relay gave this address.
    return hmac.new(secret, struct.pack(">H", code) + ident[:PROOF_AT] + ident[128:] + challenge,
                    hashlib.sha256).digest()


def prove(code: int, ident: bytes, challenge: bytes, secret: bytes) -> bytes:
    """The id with [challenge | HMAC] written into bytes 32..79 (the sender's half)."""
    out = bytearray(ident)
    out[PROOF_AT:PROOF_AT + CHALLENGE_LEN] = challenge
    out[PROOF_AT + CHALLENGE_LEN:PROOF_END] = _mac(secret, code, ident, challenge)
    return bytes(out)


def proof_challenge(code: int, ident: bytes, secret: bytes) -> bytes | None:
    """The challenge a proof answers, if the HMAC in the id is right for it (else None)."""
    challenge = ident[PROOF_AT:PROOF_AT + CHALLENGE_LEN]
    if hmac.compare_digest(_mac(secret, code, ident, challenge), ident[PROOF_AT + CHALLENGE_LEN:PROOF_END]):
        return challenge
    return None
